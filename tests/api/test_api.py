"""Every endpoint of the REST API (/api/v1) over a store made by real jobs, on SQLite and on PostgreSQL.

The store (see conftest.py) holds batches submitted through the API and run by a real worker in this process:
``api-main`` (a sweep of three noop jobs, a job that needs them, a job that fails, a cluster job on the WiFi data
with PNG artifacts and metrics per k) and two small ones. Tests that change jobs (submit, cancel, retry, corrupt a
blob) make batches of their own. Bad input is always a 4xx with a one-line ``detail``, and a rejected write leaves
the database as it was.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from httpx import Response

from scheduler.web.api_batches import MAX_BODY
from scheduler.web.app import create_app
from tests.api.conftest import API, AUTH, MAIN_SPEC, TOKEN, YAML, Farm

pytestmark = pytest.mark.timeout(300)

JSON = {"Content-Type": "application/json"}
MISSING = 999_999  # an id no test store reaches


def ok(r: Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


def problem(r: Response, status: int) -> str:
    """The ``detail`` of a refusal: the status asked for, one line of text."""
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    return detail


def get(client: TestClient, path: str, **params: Any) -> Any:
    return ok(client.get(API + path, params=params))


def job_ids(page: dict[str, Any]) -> list[int]:
    return [j["id"] for j in page["items"]]


def main_jobs(farm: Farm) -> dict[str, int]:
    return farm.ids["jobs"]  # type: ignore[no-any-return]


# ---- health, batches ---------------------------------------------------------------------------------------------

def test_health(farm: Farm) -> None:
    h = get(farm.client, "/health")
    assert h == {"status": "ok", "version": version("latentfarm"), "embedded": True,
                 "database": farm.backend, "writes_need_token": True}
    assert farm.backend in ("sqlite", "postgresql")


def test_batches_list_has_counts_status_and_progress(farm: Farm) -> None:
    page = get(farm.client, "/batches", limit=1000)
    ids = [b["id"] for b in page["items"]]
    assert ids == sorted(ids, reverse=True)  # the most recent first
    assert page["total"] == farm.counts()["batches"] == len(ids)
    by_id = {b["id"]: b for b in page["items"]}
    main = by_id[farm.ids["main"]]
    assert main["name"] == "api-main" and main["status"] == "failed"  # one job failed
    assert main["counts"] == {"succeeded": 5, "failed": 1} and main["total"] == 6
    assert main["progress"] == 1.0 and main["no_cache"] is False and main["spec_path"] == "request body"
    assert main["spec"] is None  # only GET /batches/{id} carries the spec
    one, two = (by_id[i] for i in farm.ids["others"])
    assert (one["status"], one["counts"], one["total"]) == ("succeeded", {"succeeded": 1}, 1)
    assert (two["status"], two["counts"], two["total"]) == ("succeeded", {"succeeded": 2}, 2)


def test_batches_page_with_limit_and_offset(farm: Farm) -> None:
    everything = get(farm.client, "/batches", limit=1000)
    seen: list[int] = []
    for offset in range(0, everything["total"] + 2, 2):
        page = get(farm.client, "/batches", limit=2, offset=offset)
        assert (page["limit"], page["offset"], page["total"]) == (2, offset, everything["total"])
        assert len(page["items"]) <= 2
        seen += [b["id"] for b in page["items"]]
    assert seen == [b["id"] for b in everything["items"]]
    beyond = get(farm.client, "/batches", offset=everything["total"] + 5)
    assert beyond["items"] == [] and beyond["total"] == everything["total"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "many"}, {"offset": 2**40}):
        assert problem(farm.client.get(f"{API}/batches", params=bad), 422).startswith("query parameter")


def test_batch_carries_its_spec(farm: Farm) -> None:
    b = get(farm.client, f"/batches/{farm.ids['main']}")
    assert b["spec"] == yaml.safe_load(MAIN_SPEC)
    assert b["counts"] == {"succeeded": 5, "failed": 1} and b["status"] == "failed" and b["progress"] == 1.0


# ---- submit ------------------------------------------------------------------------------------------------------

SWEEP_SPEC = """\
batch: api-submit
jobs:
  - name: grid
    kind: noop
    sweep: {value: [4, 5]}
  - name: last
    kind: noop
    needs: grid
"""


def test_submit_yaml_runs_and_a_resubmission_comes_from_the_cache(farm: Farm) -> None:
    r = farm.client.post(f"{API}/batches", content=SWEEP_SPEC, headers={**YAML, **AUTH})
    first = ok(r, 201)
    assert r.headers["location"] == first["url"] == f"{API}/batches/{first['batch']}"
    assert set(first["jobs"]) == {"grid[value=4]", "grid[value=5]", "last"}
    assert first["cached"] == [] and sorted(first["queued"]) == sorted(
        [first["jobs"]["grid[value=4]"], first["jobs"]["grid[value=5]"]])  # `last` waits for them
    assert farm.wait(first["batch"]).status == "succeeded"
    batch = get(farm.client, f"/batches/{first['batch']}")
    assert batch["counts"] == {"succeeded": 3} and batch["spec"] == yaml.safe_load(SWEEP_SPEC)

    # The same spec again: every job is a cache hit, done at once, nothing queued.
    again = ok(farm.client.post(f"{API}/batches", content=SWEEP_SPEC, headers={**YAML, **AUTH}), 201)
    assert again["batch"] != first["batch"] and set(again["jobs"]) == set(first["jobs"])
    assert sorted(again["cached"]) == sorted(again["jobs"].values()) and again["queued"] == []
    hit = get(farm.client, f"/jobs/{again['jobs']['last']}")
    assert hit["status"] == "succeeded" and hit["cached_from"] == first["jobs"]["last"]
    assert get(farm.client, f"/batches/{again['batch']}")["status"] == "succeeded"

    # no_cache: everything runs again.
    fresh = ok(farm.client.post(f"{API}/batches", params={"no_cache": "true"}, content=SWEEP_SPEC,
                                headers={**YAML, **AUTH}), 201)
    assert fresh["cached"] == [] and len(fresh["queued"]) == 2
    assert farm.wait(fresh["batch"]).status == "succeeded"
    b = get(farm.client, f"/batches/{fresh['batch']}")
    assert b["no_cache"] is True
    assert get(farm.client, f"/jobs/{fresh['jobs']['last']}")["cached_from"] is None


def test_submit_json_body(farm: Farm) -> None:
    spec = {"batch": "api-json", "jobs": [{"name": "j", "kind": "noop", "params": {"value": 11}},
                                          {"name": "k", "kind": "noop", "needs": ["j"]}]}
    r = farm.client.post(f"{API}/batches", content=json.dumps(spec), headers={**JSON, **AUTH})
    out = ok(r, 201)
    assert r.headers["location"] == out["url"]
    assert farm.wait(out["batch"]).status == "succeeded"
    assert get(farm.client, f"/batches/{out['batch']}")["spec"] == spec
    assert get(farm.client, f"/jobs/{out['jobs']['k']}")["parents"] == [out["jobs"]["j"]]


@pytest.mark.parametrize("media", ["application/yaml; charset=utf-8", "application/x-yaml", "Application/YAML",
                                   "application/json; charset=utf-8"])
def test_submit_takes_yaml_and_json_media_types(farm: Farm, media: str) -> None:
    # The spec of one of the store's batches, already run: a cache hit, nothing runs.
    text = "batch: api-other-1\njobs:\n  - {name: one, kind: noop, params: {value: 7}}\n"
    body = json.dumps(yaml.safe_load(text)) if "json" in media else text
    out = ok(farm.client.post(f"{API}/batches", content=body, headers={"Content-Type": media, **AUTH}), 201)
    assert out["cached"] == [out["jobs"]["one"]] and out["queued"] == []


def _laughs(levels: int = 9) -> str:
    """A few hundred bytes of YAML whose aliases expand to 10**levels values."""
    parts = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "batch: x\njobs:\n  - {name: a, kind: noop, params: {value: [" + ", ".join(parts) + "]}}\n"


BAD_SUBMITS: dict[str, tuple[bytes | str, str, int, str]] = {
    # name: (body, content type, status, what the detail says)
    "malformed-yaml": ("batch: x\njobs: [\n", "application/yaml", 422, "request body: malformed YAML at line"),
    "malformed-json": ('{"batch": "x", "jobs": [', "application/json", 422, "request body: malformed JSON"),
    "not-a-mapping": ("- just\n- a list\n", "application/yaml", 422, "a spec must be a mapping"),
    "negative-seconds": ("batch: x\njobs:\n  - {name: a, kind: noop, params: {seconds: -1}}\n", "application/yaml",
                         422, "request body: job 'a': field 'params.seconds': must be >= 0, got -1"),
    "unknown-kind": ("batch: x\njobs:\n  - {name: a, kind: paint}\n", "application/yaml", 422,
                     "field 'kind': unknown kind 'paint'"),
    "unknown-field": ('{"batch": "x", "jobs": [{"name": "a", "kind": "noop", "colour": "red"}]}',
                      "application/json", 422, "field 'colour': unknown field"),
    "missing-dependency": ("batch: x\njobs:\n  - {name: a, kind: noop, needs: z}\n", "application/yaml", 422,
                           "needs unknown job 'z'"),
    "cycle": ("batch: x\njobs:\n  - {name: a, kind: noop, needs: b}\n  - {name: b, kind: noop, needs: a}\n",
              "application/yaml", 422, "dependency cycle"),
    "unknown-dataset-file": ("batch: x\njobs:\n  - {name: a, kind: cluster, params: {dataset: wifi, data_path: "
                             "nope.txt}}\n", "application/yaml", 422, "field 'params.data_path'"),
    "empty": ("", "application/yaml", 422, "request body: empty"),
    "blank": ("  \n\t\n", "application/json", 422, "request body: empty"),
    "not-utf8": (b"batch: caf\xe9\njobs: []\n", "application/yaml", 422, "request body: not UTF-8 text (byte 10)"),
    "impossible-date": ("batch: x\njobs:\n  - {name: a, kind: noop, timeout: 2020-02-30}\n", "application/yaml",
                        422, "request body: malformed YAML: day is out of range for month"),
    "huge-integer": ("batch: x\njobs:\n  - {name: a, kind: noop, params: {value: " + "9" * 5000 + "}}\n",
                     "application/yaml", 422, "request body: malformed YAML: Exceeds the limit"),
    "deep-json": ("[" * 100_000 + "]" * 100_000, "application/json", 422, "request body: malformed JSON"),
    "deep-yaml": ("batch: x\njobs: " + "[" * 5000 + "]" * 5000, "application/yaml", 422, "request body:"),
    "nested-too-deep": ('{"batch": "x", "jobs": [{"name": "a", "kind": "noop", "params": {"value": '
                        + "[" * 100 + "]" * 100 + "}}]}", "application/json", 422, "nested deeper than 64"),
    "alias-bomb": (_laughs(), "application/yaml", 422, "more than 100000 values (YAML aliases expanded)"),
    "nan": ("batch: x\njobs:\n  - {name: a, kind: noop, params: {value: .nan}}\n", "application/yaml", 422,
            "nan is not a finite number"),
    "json-infinity": ('{"batch": "x", "jobs": [{"name": "a", "kind": "noop", "params": {"value": 1e999}}]}',
                      "application/json", 422, "inf is not a finite number"),
    "html": ("<html></html>", "text/html", 415, "send the spec as application/json or application/yaml"),
    # what a page of another site can send without asking first (a form, fetch with a string body)
    "text-plain": ("batch: x\njobs:\n  - {name: a, kind: noop}\n", "text/plain", 415, "not text/plain"),
    "text-plain-utf8": ("batch: x\njobs:\n  - {name: a, kind: noop}\n", "text/plain;charset=UTF-8", 415,
                        "not text/plain"),
    "text-yaml": ("batch: x\njobs:\n  - {name: a, kind: noop}\n", "text/yaml", 415, "not text/yaml"),
    "multipart": ("--x\r\n\r\nbatch: x\r\n--x--\r\n", "multipart/form-data; boundary=x", 415,
                  "not multipart/form-data"),
    "form": ("batch=x", "application/x-www-form-urlencoded", 415, "not application/x-www-form-urlencoded"),
    "xml": ("<batch/>", "application/xml", 415, "not application/xml"),
    "too-large": ("#" * (MAX_BODY + 1), "application/yaml", 413, f"over {MAX_BODY} bytes, the most accepted"),
    "ten-megabytes": ("#" * (10 << 20), "application/yaml", 413, f"over {MAX_BODY} bytes, the most accepted"),
}


@pytest.mark.parametrize("case", list(BAD_SUBMITS))
def test_a_rejected_submit_is_a_clear_4xx_and_writes_nothing(farm: Farm, case: str) -> None:
    body, media, status, says = BAD_SUBMITS[case]
    before = farm.counts()
    detail = problem(farm.client.post(f"{API}/batches", content=body, headers={"Content-Type": media, **AUTH}),
                     status)
    assert says in detail
    assert len(detail) < 1000
    assert farm.counts() == before


def test_a_submit_without_a_content_type_is_a_415(farm: Farm) -> None:
    before = farm.counts()
    r = farm.client.post(f"{API}/batches", content=b"batch: x\njobs:\n  - {name: a, kind: noop}\n", headers=AUTH)
    assert "content-type" not in r.request.headers
    assert problem(r, 415) == "send the spec as application/json or application/yaml, not without a Content-Type"
    assert farm.counts() == before


def test_the_body_limit_is_a_mebibyte_and_a_spec_at_it_is_taken(farm: Farm) -> None:
    assert MAX_BODY == 1 << 20
    spec = "batch: api-at-the-limit\njobs:\n  - {name: a, kind: noop, params: {value: 3}}\n"
    body = spec + "#" * (MAX_BODY - len(spec) - 1) + "\n"
    assert len(body.encode()) == MAX_BODY
    out = ok(farm.client.post(f"{API}/batches", content=body, headers=YAML), 201)
    assert farm.wait(out["batch"]).status == "succeeded"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_data_file_that_cannot_be_read_is_a_422(farm: Farm) -> None:
    before = farm.counts()
    spec = "batch: x\njobs:\n  - {name: a, kind: cluster, params: {dataset: wifi, data_path: mem.txt}}\n"
    detail = problem(farm.client.post(f"{API}/batches", content=spec, headers={**YAML, **AUTH}), 422)
    assert detail.startswith("request body: cannot read a file it names: [Errno")
    assert farm.counts() == before


def test_submit_query_is_checked(farm: Farm) -> None:
    before = farm.counts()
    r = farm.client.post(f"{API}/batches", params={"nocache": "1"}, content=SWEEP_SPEC, headers={**YAML, **AUTH})
    assert "'nocache'" in problem(r, 400) and "no_cache" in r.json()["detail"]
    r = farm.client.post(f"{API}/batches", params={"no_cache": "maybe"}, content=SWEEP_SPEC, headers={**YAML, **AUTH})
    assert problem(r, 422).startswith("query parameter no_cache")
    assert farm.counts() == before


# ---- compare -----------------------------------------------------------------------------------------------------

def test_compare_a_sweep(farm: Farm) -> None:
    main, jobs = farm.ids["main"], main_jobs(farm)
    c = get(farm.client, f"/batches/{main}/compare", metric="value", by="value")
    assert (c["batch"], c["metric"], c["by"], c["higher_is_better"]) == (main, "value", "value", False)
    # `bad` (value 1, failed) has no metric: the row for 1 has one job
    assert [(r["value"], r["jobs"], r["best"], r["best_job"]) for r in c["rows"]] == [
        (1.0, 1, 1.0, jobs["sweep[value=1]"]), (2.0, 1, 2.0, jobs["sweep[value=2]"]),
        (3.0, 1, 3.0, jobs["sweep[value=3]"]), (10.0, 1, 10.0, jobs["report"])]
    assert c["best"] == 0 and c["rows"][0]["best_name"] == "sweep[value=1]"
    high = get(farm.client, f"/batches/{main}/compare", metric="value", by="fail", higher_is_better="true")
    assert high["rows"] == [{"value": False, "jobs": 4, "best": 10.0, "mean": 4.0, "worst": 1.0,
                             "best_job": jobs["report"], "best_name": "report", "inherited": False}] \
        and high["best"] == 0 and high["kind"] == "noop"
    assert "has the metric 'val_loss'" in problem(
        farm.client.get(f"{API}/batches/{main}/compare", params={"metric": "val_loss", "by": "value"}), 400)
    assert "no job of batch" in problem(
        farm.client.get(f"{API}/batches/{main}/compare", params={"metric": "value", "by": "z_dim"}), 400)
    assert problem(farm.client.get(f"{API}/batches/{main}/compare", params={"metric": "value"}), 422) == \
        "query parameter by: Field required"


# ---- jobs --------------------------------------------------------------------------------------------------------

def test_jobs_of_a_batch(farm: Farm) -> None:
    page = get(farm.client, "/jobs", batch=farm.ids["main"])
    assert page["total"] == 6 and job_ids(page) == sorted(main_jobs(farm).values())
    assert {j["name"]: j["status"] for j in page["items"]} == {
        "sweep[value=1]": "succeeded", "sweep[value=2]": "succeeded", "sweep[value=3]": "succeeded",
        "report": "succeeded", "bad": "failed", "clusters": "succeeded"}
    assert all(j["metrics"] == {} for j in page["items"])  # no metric filtered or sorted on
    assert get(farm.client, "/jobs", batch=farm.ids["others"][1])["total"] == 2
    everything = get(farm.client, "/jobs", limit=1000)
    assert everything["total"] == farm.counts()["jobs"]


@pytest.mark.parametrize(("query", "names"), [
    ({"kind": "cluster"}, ["clusters"]),
    ({"kind": "noop", "status": "failed"}, ["bad"]),
    ({"status": "succeeded", "kind": "noop"}, ["sweep[value=1]", "sweep[value=2]", "sweep[value=3]", "report"]),
    ({"kind": "train"}, []),
    ({"param": "value=2"}, ["sweep[value=2]"]),
    ({"param": "value=2.0"}, ["sweep[value=2]"]),
    ({"param": "fail=true"}, ["bad"]),
    ({"param": ["value=1", "fail=false"]}, ["sweep[value=1]"]),
    ({"param": "dataset=wifi"}, ["clusters"]),
    ({"param": "z_dim=2"}, []),
    ({"where": "value>1.5"}, ["sweep[value=2]", "sweep[value=3]", "report"]),
    ({"where": ["value>1.5", "value<=3"]}, ["sweep[value=2]", "sweep[value=3]"]),
    ({"where": "best_k>=2"}, ["clusters"]),
    ({"where": "value>1.5", "sort": "value", "desc": "true"}, ["report", "sweep[value=3]", "sweep[value=2]"]),
    # jobs without the metric sorted on come last, in id order
    ({"sort": "value"}, ["sweep[value=1]", "sweep[value=2]", "sweep[value=3]", "report", "bad", "clusters"]),
    ({"sort": "value", "desc": "true"},
     ["report", "sweep[value=3]", "sweep[value=2]", "sweep[value=1]", "bad", "clusters"]),
    ({"since": "1h"}, ["sweep[value=1]", "sweep[value=2]", "sweep[value=3]", "bad", "clusters", "report"]),
    ({"since": "2000-01-01"}, ["sweep[value=1]", "sweep[value=2]", "sweep[value=3]", "bad", "clusters", "report"]),
    ({"since": "2999-01-01T00:00:00+02:00"}, []),
])
def test_jobs_filtered(farm: Farm, query: dict[str, Any], names: list[str]) -> None:
    page = get(farm.client, "/jobs", batch=farm.ids["main"], **query)
    got = [j["name"] for j in page["items"]]
    if "sort" in query:
        assert got == names
    else:
        assert sorted(got) == sorted(names) and job_ids(page) == sorted(job_ids(page))
    assert page["total"] == len(names)
    wheres = [query["where"]] if isinstance(query.get("where"), str) else query.get("where", [])
    keys = {w.split("<")[0].split(">")[0] for w in wheres} | ({query["sort"]} if "sort" in query else set())
    finals = {"value": lambda j: {"value": j["params"]["value"]}, "best_k": lambda j: {"best_k": 4.0}}
    for j in page["items"]:  # the final values of the metrics filtered or sorted on come along, no others
        expected: dict[str, float] = {}
        for k in keys:
            if j["name"] in (["clusters"] if k == "best_k" else ["report", *(f"sweep[value={v}]" for v in (1, 2, 3))]):
                expected.update(finals[k](j))
        assert j["metrics"] == expected, j["name"]


def test_jobs_since_a_recent_time(farm: Farm) -> None:
    later = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()
    assert get(farm.client, "/jobs", since=later)["total"] == 0
    assert get(farm.client, "/jobs", since="5000d")["total"] == farm.counts()["jobs"]


def test_jobs_page_with_limit_and_offset(farm: Farm) -> None:
    everything = job_ids(get(farm.client, "/jobs", batch=farm.ids["main"], sort="value"))
    pages = [get(farm.client, "/jobs", batch=farm.ids["main"], sort="value", limit=4, offset=o) for o in (0, 4, 8)]
    assert [p["total"] for p in pages] == [6, 6, 6] and [len(p["items"]) for p in pages] == [4, 2, 0]
    assert [i for p in pages for i in job_ids(p)] == everything


@pytest.mark.parametrize(("query", "says"), [
    ({"where": "value<<1"}, "where 'value<<1': '<1' is not a number"),
    ({"where": "value"}, "where: expected METRIC OP NUMBER"),
    ({"where": "value<abc"}, "where 'value<abc': 'abc' is not a number"),
    ({"where": ""}, "where: expected METRIC OP NUMBER"),
    ({"param": "novalue"}, "param: expected NAME=VALUE"),
    ({"param": "=3"}, "param: expected NAME=VALUE"),
    ({"since": "yesterday"}, "since: expected e.g. 30m, 2h, 1d or an ISO date, got 'yesterday'"),
    ({"since": "99999999999999d"}, "since: expected e.g. 30m"),
    ({"since": ""}, "since: expected e.g. 30m"),
    ({"since": "\x00"}, "since: expected e.g. 30m"),
    ({"bacth": "1"}, "unknown query parameter 'bacth': this endpoint takes batch, desc, finals, inherited, kind, "
                     "limit, offset, param, since, sort, status, where"),
])
def test_a_malformed_job_query_is_a_400(farm: Farm, query: dict[str, str], says: str) -> None:
    detail = problem(farm.client.get(f"{API}/jobs", params=query), 400)
    assert detail.startswith(says), detail


@pytest.mark.parametrize("query", [{"status": "sleeping"}, {"kind": "no-such kind"}, {"batch": "0"},
                                   {"batch": str(2**40)}, {"limit": "0"}, {"desc": "perhaps"}])
def test_an_out_of_range_job_query_is_a_422(farm: Farm, query: dict[str, str]) -> None:
    assert problem(farm.client.get(f"{API}/jobs", params=query), 422).startswith(f"query parameter {[*query][0]}")


def test_job_with_parents_error_and_traceback(farm: Farm) -> None:
    jobs = main_jobs(farm)
    report = get(farm.client, f"/jobs/{jobs['report']}")
    assert report["parents"] == sorted(jobs[f"sweep[value={v}]"] for v in (1, 2, 3))
    assert (report["name"], report["kind"], report["batch_id"]) == ("report", "noop", farm.ids["main"])
    assert report["params"]["value"] == 10.0 and report["status"] == "succeeded" and report["progress"] == 1.0
    assert report["attempts"] == 1 and report["worker"] and report["host"] and report["error"] is None
    assert report["started_at"] <= report["finished_at"] and len(report["fingerprint"]) == 64
    bad = get(farm.client, f"/jobs/{jobs['bad']}")
    assert bad["status"] == "failed" and bad["parents"] == []
    assert bad["error"] == "RuntimeError: job 'bad' was asked to fail (fail: true)"
    assert "Traceback (most recent call last)" in bad["traceback"]


def test_job_events(farm: Farm) -> None:
    jid = main_jobs(farm)["sweep[value=1]"]
    page = get(farm.client, f"/jobs/{jid}/events")
    assert [e["status"] for e in page["items"] if e["kind"] == "status"] == ["pending", "queued", "running",
                                                                             "succeeded"]
    assert page["total"] == len(page["items"]) and all(e["job_id"] == jid for e in page["items"])
    times = [e["time"] for e in page["items"]]
    assert times == sorted(times)  # oldest first
    part = get(farm.client, f"/jobs/{jid}/events", limit=2, offset=1)
    assert part["items"] == page["items"][1:3] and part["total"] == page["total"]


def test_job_metrics(farm: Farm) -> None:
    jid = main_jobs(farm)["clusters"]
    page = get(farm.client, f"/jobs/{jid}/metrics")
    keys = {(m["key"], m["step"]) for m in page["items"]}
    assert {("inertia", 2), ("inertia", 3), ("inertia", 4), ("best_k", 0), ("silhouette_k", 0)} <= keys
    assert page["total"] == len(page["items"])
    inertia = get(farm.client, f"/jobs/{jid}/metrics", key="inertia")
    assert [m["step"] for m in inertia["items"]] == [2, 3, 4] and inertia["total"] == 3
    values = [m["value"] for m in inertia["items"]]
    assert values == sorted(values, reverse=True)  # inertia falls as k grows
    part = get(farm.client, f"/jobs/{jid}/metrics", key="inertia", limit=1, offset=1)
    assert part["items"] == inertia["items"][1:2] and part["total"] == 3
    assert get(farm.client, f"/jobs/{jid}/metrics", key="nope") == {"items": [], "total": 0, "limit": 1000,
                                                                   "offset": 0}
    assert problem(farm.client.get(f"{API}/jobs/{jid}/metrics", params={"key": ""}), 422).startswith(
        "query parameter key")


def test_metrics_of_several_jobs_and_of_a_batch(farm: Farm) -> None:
    jobs = main_jobs(farm)
    two = get(farm.client, "/metrics", job=[jobs["sweep[value=2]"], jobs["report"]])
    assert [(m["job_id"], m["key"], m["value"]) for m in two["items"] if m["key"] == "value"] == [
        (jobs["sweep[value=2]"], "value", 2.0), (jobs["report"], "value", 10.0)]
    assert {m["key"] for m in two["items"]} == {"value", "wall_seconds", "cpu_seconds", "peak_rss"}  # + resources
    values = get(farm.client, "/metrics", batch=farm.ids["main"], key="value")
    assert sorted(m["value"] for m in values["items"]) == [1.0, 2.0, 3.0, 10.0] and values["total"] == 4
    both = get(farm.client, "/metrics", batch=farm.ids["others"][1], job=jobs["report"], key="value")
    assert sorted(m["value"] for m in both["items"]) == [8.0, 9.0, 10.0]
    every = get(farm.client, "/metrics", batch=farm.ids["main"])
    pages = [get(farm.client, "/metrics", batch=farm.ids["main"], limit=5, offset=o)
             for o in range(0, every["total"], 5)]
    assert [m for p in pages for m in p["items"]] == every["items"]
    assert "name one or more jobs" in problem(farm.client.get(f"{API}/metrics"), 400)
    assert problem(farm.client.get(f"{API}/metrics", params={"job": [jobs["report"], MISSING]}), 404) == \
        f"no job {MISSING}"
    assert problem(farm.client.get(f"{API}/metrics", params={"job": 2**40}), 404) == f"no job {2**40}"
    assert problem(farm.client.get(f"{API}/metrics", params={"batch": MISSING}), 404) == f"no batch {MISSING}"


# ---- artifacts ---------------------------------------------------------------------------------------------------

CLUSTER_ARTIFACTS = {"sweep.png": "image/png", "clusters_2d.png": "image/png", "confusion.json": "application/json",
                     "clusters_train.npy": "application/x-npy"}


def test_job_artifacts_filtered_and_paged(farm: Farm) -> None:
    jid = main_jobs(farm)["clusters"]
    page = get(farm.client, f"/jobs/{jid}/artifacts")
    assert {a["name"]: a["media_type"] for a in page["items"]} == CLUSTER_ARTIFACTS and page["total"] == 4
    for a in page["items"]:
        assert a["job_id"] == jid and a["url"] == f"{API}/artifacts/{a['id']}/content" and len(a["sha256"]) == 64
        assert a["bytes"] > 0 and a["uri"] == f"sha256/{a['sha256'][:2]}/{a['sha256']}"
    assert [a["name"] for a in get(farm.client, f"/jobs/{jid}/artifacts", name="sweep.png")["items"]] == [
        "sweep.png"]
    pngs = get(farm.client, f"/jobs/{jid}/artifacts", type="image/png")
    assert sorted(a["name"] for a in pngs["items"]) == ["clusters_2d.png", "sweep.png"] and pngs["total"] == 2
    assert get(farm.client, f"/jobs/{jid}/artifacts", name="sweep.png", type="application/json")["total"] == 0
    part = get(farm.client, f"/jobs/{jid}/artifacts", limit=3, offset=2)
    assert part["items"] == page["items"][2:] and part["total"] == 4 and part["limit"] == 3


def test_artifacts_of_several_jobs_and_of_a_batch(farm: Farm) -> None:
    jobs = main_jobs(farm)
    every = get(farm.client, "/artifacts", batch=farm.ids["main"])
    # out.json of the four noop jobs that succeeded, four of the cluster job
    assert every["total"] == 8 and sorted(a["name"] for a in every["items"]).count("out.json") == 4
    jsons = get(farm.client, "/artifacts", batch=farm.ids["main"], type="application/json")
    assert sorted(a["name"] for a in jsons["items"]) == ["confusion.json"] + ["out.json"] * 4
    two = get(farm.client, "/artifacts", job=[jobs["report"], jobs["sweep[value=3]"]], name="out.json")
    assert sorted(a["job_id"] for a in two["items"]) == sorted([jobs["report"], jobs["sweep[value=3]"]])
    pages = [get(farm.client, "/artifacts", batch=farm.ids["main"], limit=3, offset=o) for o in (0, 3, 6)]
    assert [a for p in pages for a in p["items"]] == every["items"]
    assert "name one or more jobs" in problem(farm.client.get(f"{API}/artifacts"), 400)
    assert problem(farm.client.get(f"{API}/artifacts", params={"job": MISSING}), 404) == f"no job {MISSING}"


def test_artifact_metadata(farm: Farm) -> None:
    listed = get(farm.client, f"/jobs/{main_jobs(farm)['clusters']}/artifacts")["items"]
    for a in listed:
        assert get(farm.client, f"/artifacts/{a['id']}") == a


def _cluster_artifact(farm: Farm, name: str) -> dict[str, Any]:
    found = get(farm.client, f"/jobs/{main_jobs(farm)['clusters']}/artifacts", name=name)["items"]
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(CLUSTER_ARTIFACTS))
def test_artifact_download(farm: Farm, name: str) -> None:
    a = _cluster_artifact(farm, name)
    r = farm.client.get(a["url"])
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == a["media_type"]
    assert r.content == farm.cp.store.artifacts.path_of(a["uri"]).read_bytes()
    assert hashlib.sha256(r.content).hexdigest() == a["sha256"] and len(r.content) == a["bytes"]
    assert r.headers["etag"] == f'"{a["sha256"]}"'
    assert r.headers["accept-ranges"] == "bytes" and int(r.headers["content-length"]) == a["bytes"]
    assert r.headers["content-disposition"] == f'inline; filename="{name}"'
    if name.endswith(".png"):
        assert r.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_artifact_byte_ranges(farm: Farm) -> None:
    a = _cluster_artifact(farm, "clusters_2d.png")
    size, whole = a["bytes"], farm.cp.store.artifacts.path_of(a["uri"]).read_bytes()
    assert size > 50_000

    def part(spec: str) -> Response:
        return farm.client.get(a["url"], headers={"Range": f"bytes={spec}"})

    r = part("0-99")
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-99/{size}" and r.content == whole[:100]
    assert r.headers["content-type"] == "image/png" and r.headers["etag"] == f'"{a["sha256"]}"'
    r = part("-50")
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes {size - 50}-{size - 1}/{size}"
    assert r.content == whole[-50:]
    r = part(f"{size - 10}-")
    assert r.status_code == 206 and r.content == whole[-10:]
    r = part(f"100-{size * 2}")  # an end past the last byte is clamped to it
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 100-{size - 1}/{size}"

    # Fetched in ranges and put back together: the stored sha256.
    step, chunks = 16_384, []
    for start in range(0, size, step):
        r = part(f"{start}-{min(start + step, size) - 1}")
        assert r.status_code == 206 and r.headers["content-range"] == (
            f"bytes {start}-{min(start + step, size) - 1}/{size}")
        chunks.append(r.content)
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == a["sha256"]

    for unsatisfiable in (f"{size}-", f"{size + 100}-{size + 200}", "-0"):
        r = part(unsatisfiable)
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}", unsatisfiable
        assert r.content != whole


def test_a_corrupted_or_missing_blob_is_not_served(farm: Farm) -> None:
    # Blobs are shared by content: this job's out.json is its own (its value appears nowhere else).
    out = farm.submit("batch: api-blobs\njobs:\n  - {name: served, kind: noop, params: {value: 4242}}\n"
                      "  - {name: never, kind: noop, params: {value: 4343}}\n")
    assert farm.wait(out["batch"]).status == "succeeded"
    served, never = (get(farm.client, f"/jobs/{out['jobs'][n]}/artifacts")["items"][0] for n in ("served", "never"))
    assert farm.client.get(served["url"]).status_code == 200

    def corrupt(a: dict[str, Any]) -> bytes:
        path = farm.cp.store.artifacts.path_of(a["uri"])
        good = path.read_bytes()
        path.write_bytes(good.replace(b"42", b"24").replace(b"43", b"34"))  # same size, other bytes
        assert path.stat().st_size == len(good)
        return good

    corrupt(never)  # never served before
    time.sleep(0.05)  # file times tick coarsely: the replacement gets a newer one than the blob checked above
    corrupt(served)  # served (and checked) before
    for a in (never, served):
        for headers in ({}, {"Range": "bytes=0-9"}):
            r = farm.client.get(a["url"], headers=headers)
            detail = problem(r, 500)
            assert detail == (f"artifact {a['id']} ({a['name']} of job {a['job_id']}): its blob no longer matches "
                              f"its sha256 {a['sha256']}")
        assert get(farm.client, f"/artifacts/{a['id']}") == a  # its record is still there

    farm.cp.store.artifacts.path_of(served["uri"]).unlink()
    assert "its blob is missing from the artifact store" in problem(farm.client.get(served["url"]), 404)


# ---- cancel and retry --------------------------------------------------------------------------------------------

LONG_SPEC = """\
batch: {name}
jobs:
  - {{name: long, kind: noop, params: {{seconds: 60, value: {value}}}}}
  - {{name: after, kind: noop, needs: long}}
"""


def _running(farm: Farm, name: str, value: int) -> dict[str, Any]:
    out = farm.submit(LONG_SPEC.format(name=name, value=value))
    long_id = out["jobs"]["long"]
    farm.wait_for(lambda: farm.job(long_id).status.value == "running", what=f"job {long_id} running")
    return out


def test_cancel_a_job(farm: Farm) -> None:
    out = _running(farm, "api-cancel-job", 101)
    long_id, after_id = out["jobs"]["long"], out["jobs"]["after"]
    # a running job's own progress counts in its batch's
    farm.wait_for(lambda: get(farm.client, f"/batches/{out['batch']}")["progress"] > 0, what="progress reported")
    batch = get(farm.client, f"/batches/{out['batch']}")
    assert batch["status"] == "running" and batch["counts"] == {"running": 1, "pending": 1}
    assert 0 < batch["progress"] < 0.5
    assert 0 < get(farm.client, f"/jobs/{long_id}")["progress"] < 1
    # a pending job is cancelled at once; its running parent goes on
    assert ok(farm.client.post(f"{API}/jobs/{after_id}/cancel", headers=AUTH)) == {"cancelled": [after_id],
                                                                                  "flagged": []}
    assert get(farm.client, f"/jobs/{long_id}")["status"] == "running"
    # a running job stops at its next check
    t0 = time.monotonic()
    assert ok(farm.client.post(f"{API}/jobs/{long_id}/cancel", headers=AUTH)) == {"cancelled": [],
                                                                                 "flagged": [long_id]}
    assert get(farm.client, f"/jobs/{long_id}")["cancel_requested"] is True
    summary = farm.wait(out["batch"], timeout=30)
    assert time.monotonic() - t0 < 20 and summary.counts == {"cancelled": 2}
    assert get(farm.client, f"/batches/{out['batch']}")["status"] == "cancelled"
    # nothing left to cancel
    assert ok(farm.client.post(f"{API}/jobs/{long_id}/cancel", headers=AUTH)) == {"cancelled": [], "flagged": []}


def test_cancel_a_batch(farm: Farm) -> None:
    out = _running(farm, "api-cancel-batch", 102)
    r = ok(farm.client.post(f"{API}/batches/{out['batch']}/cancel", headers=AUTH))
    assert r == {"cancelled": [out["jobs"]["after"]], "flagged": [out["jobs"]["long"]]}
    assert farm.wait(out["batch"], timeout=30).counts == {"cancelled": 2}
    # a finished batch: nothing changes
    done = farm.ids["others"][0]
    assert ok(farm.client.post(f"{API}/batches/{done}/cancel", headers=AUTH)) == {"cancelled": [], "flagged": []}
    assert get(farm.client, f"/batches/{done}")["status"] == "succeeded"


def test_retry(farm: Farm) -> None:
    jobs = main_jobs(farm)
    assert problem(farm.client.post(f"{API}/jobs/{jobs['report']}/retry", headers=AUTH), 409) == (
        f"job {jobs['report']} is succeeded: only failed, cancelled or queued jobs can be retried")
    # The first attempt fails with a transient error and has no attempt left; the second succeeds.
    out = farm.submit("batch: api-retry\njobs:\n"
                      "  - {name: flaky, kind: noop, max_attempts: 1, params: {transient_failures: 1, value: 5}}\n"
                      "  - {name: child, kind: noop, needs: flaky, params: {value: 6}}\n")
    flaky = out["jobs"]["flaky"]
    assert farm.wait(out["batch"]).counts == {"failed": 1, "cancelled": 1}
    assert get(farm.client, f"/jobs/{flaky}")["error"].startswith("ConnectionError")

    assert ok(farm.client.post(f"{API}/jobs/{flaky}/retry", headers=AUTH)) == {"job": flaky, "queued": [flaky]}
    assert farm.wait(out["batch"]).counts == {"succeeded": 2}  # its cancelled child ran after it
    job = get(farm.client, f"/jobs/{flaky}")
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["error"] is None
    events = get(farm.client, f"/jobs/{flaky}/events")["items"]
    assert "retry requested" in [e["message"] for e in events]
    assert [e["status"] for e in events if e["kind"] == "status"][-3:] == ["queued", "running", "succeeded"]
    assert get(farm.client, "/metrics", job=flaky, key="value")["items"][0]["value"] == 5.0
    assert problem(farm.client.post(f"{API}/jobs/{flaky}/retry", headers=AUTH), 409).endswith(
        "only failed, cancelled or queued jobs can be retried")


# ---- missing and out-of-range ids --------------------------------------------------------------------------------

ID_ROUTES = [("get", "/batches/{id}", "batch"), ("get", "/batches/{id}/compare?metric=value&by=value", "batch"),
             ("post", "/batches/{id}/cancel", "batch"), ("get", "/jobs/{id}", "job"),
             ("get", "/jobs/{id}/events", "job"), ("get", "/jobs/{id}/metrics", "job"),
             ("get", "/jobs/{id}/artifacts", "job"), ("post", "/jobs/{id}/cancel", "job"),
             ("post", "/jobs/{id}/retry", "job"), ("get", "/artifacts/{id}", "artifact"),
             ("get", "/artifacts/{id}/content", "artifact"),
             ("get", "/jobs?batch={id}", "batch"), ("get", "/metrics?batch={id}", "batch"),
             ("get", "/artifacts?batch={id}", "batch")]


@pytest.mark.parametrize(("method", "route", "what"), ID_ROUTES)
def test_a_missing_id_is_a_404(farm: Farm, method: str, route: str, what: str) -> None:
    before = farm.counts()
    r = getattr(farm.client, method)(API + route.format(id=MISSING), headers=AUTH)
    assert problem(r, 404) == f"no {what} {MISSING}"
    assert farm.counts() == before


@pytest.mark.parametrize(("method", "route", "what"), ID_ROUTES)
@pytest.mark.parametrize("bad", ["0", "-1", str(2**31), str(2**40), str(2**70), "abc", "1.5"])
def test_an_id_out_of_range_is_a_422(farm: Farm, method: str, route: str, what: str, bad: str) -> None:
    r = getattr(farm.client, method)(API + route.format(id=bad), headers=AUTH)
    detail = problem(r, 422)
    assert detail.startswith(("path parameter", "query parameter")) and ("_id" in detail or "batch" in detail)


@pytest.mark.parametrize("path", ["/health", "/batches", f"/jobs/{MISSING}/events", "/metrics", "/artifacts/1"])
def test_an_unknown_query_parameter_is_a_400(farm: Farm, path: str) -> None:
    detail = problem(farm.client.get(API + path, params={"colour": "red"}), 400)
    assert detail.startswith("unknown query parameter 'colour': this endpoint takes ")


# ---- auth --------------------------------------------------------------------------------------------------------

def _writes(farm: Farm, failed_job: int) -> list[tuple[str, dict[str, Any], int]]:
    """Every write, with what it answers given the token."""
    cached = "batch: api-other-1\njobs:\n  - {name: one, kind: noop, params: {value: 7}}\n"  # a cache hit
    done = farm.ids["others"][0]
    return [(f"{API}/batches", {"content": cached, "headers": YAML}, 201),
            (f"{API}/batches/{done}/cancel", {}, 200),
            (f"{API}/jobs/{farm.ids['other_jobs']['one']}/cancel", {}, 200),
            (f"{API}/jobs/{failed_job}/retry", {}, 200)]


def test_every_route_needs_the_token(farm: Farm) -> None:
    out = farm.submit("batch: api-auth\njobs:\n  - {name: doomed, kind: noop, params: {fail: true, value: 31}}\n")
    failed = out["jobs"]["doomed"]
    farm.wait(out["batch"])
    before = farm.counts()
    reads = ["/health", "/batches", f"/batches/{farm.ids['main']}", "/jobs", f"/jobs/{failed}",
             f"/jobs/{failed}/events", f"/jobs/{failed}/metrics", f"/metrics?batch={farm.ids['main']}",
             f"/artifacts?batch={farm.ids['main']}", "/artifacts/1", "/artifacts/1/content",
             f"/batches/{farm.ids['main']}/compare?metric=value&by=value", "/no-such-route"]
    refusals = [({}, "this needs a bearer token: send 'Authorization: Bearer <LATENTFARM_API_TOKEN>'"),
                ({"Authorization": "Bearer wrong"}, "wrong bearer token"),
                ({"Authorization": f"Bearer {TOKEN}x"}, "wrong bearer token"),
                ({"Authorization": f"Basic {TOKEN}"}, "this needs a bearer token"),
                ({"Authorization": TOKEN}, "this needs a bearer token"),
                ({"Cookie": f"latentfarm_session={TOKEN}"}, "this needs a bearer token")]  # the raw token is no cookie
    for url, kw, _ in _writes(farm, failed):
        headers = kw.get("headers", {})
        for auth, says in refusals:
            r = farm.anon.post(url, content=kw.get("content"), headers={**headers, **auth})
            assert problem(r, 401).startswith(says), (url, auth)
            assert r.headers["www-authenticate"] == "Bearer"
        # refused before the body is read: a bad body without the token is still a 401
        assert farm.anon.post(url, content="[", headers=YAML).status_code == 401
    for path in reads:
        for auth, says in refusals:
            r = farm.anon.get(API + path, headers=auth)
            assert problem(r, 401).startswith(says), (path, auth)
    for auth, says in refusals:  # the schema tells what exists: it needs the token too
        assert problem(farm.anon.get("/openapi.json", headers=auth), 401).startswith(says)
    assert farm.counts() == before
    assert get(farm.client, f"/jobs/{failed}")["status"] == "failed"

    for url, kw, status in _writes(farm, failed):
        assert farm.anon.post(url, content=kw.get("content"), headers={**kw.get("headers", {}), **AUTH}
                              ).status_code == status, url
    farm.wait(out["batch"])  # the retried job ran (and failed) again
    assert get(farm.client, f"/jobs/{failed}")["attempts"] == 2
    for path in reads[:-1]:
        assert farm.anon.get(API + path, headers=AUTH).status_code in (200, 206), path
    assert farm.anon.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "latentfarm"
    # every operation of the schema says it needs the bearer token, and that it may answer 401
    spec = farm.anon.get("/openapi.json", headers=AUTH).json()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert op.get("security") == [{"HTTPBearer": []}] and "401" in op["responses"], (method, path)


def test_without_a_token_writes_are_open(farm: Farm) -> None:
    # what `latentfarm serve` runs on 127.0.0.1 without a token
    local = TestClient(create_app(farm.cp, None), base_url="http://127.0.0.1:8080")
    assert ok(local.get(f"{API}/health"))["writes_need_token"] is False
    text = "batch: api-other-2\njobs:\n  - {name: two, kind: noop, params: {value: 8}}\n" \
           "  - {name: three, kind: noop, params: {value: 9}, needs: two}\n"
    out = ok(local.post(f"{API}/batches", content=text, headers=YAML), 201)
    assert sorted(out["cached"]) == sorted(out["jobs"].values())
    done = farm.ids["others"][1]
    assert ok(local.post(f"{API}/batches/{done}/cancel")) == {"cancelled": [], "flagged": []}
    assert ok(local.post(f"{API}/batches/{done}/cancel", headers={"Authorization": "Bearer anything"})) == {
        "cancelled": [], "flagged": []}
    assert ok(local.get(f"{API}/batches/{done}"))["id"] == done  # reads too
    local.app.state.parser.close()  # type: ignore[attr-defined]
    local.close()
