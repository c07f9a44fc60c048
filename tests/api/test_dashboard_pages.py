"""The dashboard's pages over HTTP, on the farm the API tests populate with real jobs (``tests/api/conftest.py``):
what each page shows, that its live-update URLs answer in the shape the page's script reads, that nothing is
loaded from another origin, and that bad input is a 404 or 400 page, never a 500."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler.web import dashboard, views
from storage import batches, transitions
from storage.records import NewJob
from storage.status import JobStatus
from tests.api.conftest import Farm

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# ---- a small HTML tree, enough to find elements by tag, id, class and attribute -------------------------------

@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def walk(self) -> Iterator[Node]:
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.walk()

    def all(self, tag: str | None = None, cls: str | None = None, **attrs: str | bool) -> list[Node]:
        """Descendants with this tag and class whose attributes (``data_x`` for ``data-x``) have these values
        (True: present)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.walk()
                if (tag is None or n.tag == tag) and (cls is None or cls in n.attrs.get("class", "").split())
                and all((k in n.attrs) if v is True else n.attrs.get(k) == v for k, v in want.items())]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str | bool) -> Node:
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} class={cls} {attrs}>"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def page(client: TestClient, url: str, status: int = 200) -> Node:
    r = client.get(url)
    assert r.status_code == status, f"GET {url}: {r.status_code}\n{r.text[:2000]}"
    assert r.headers["content-type"].startswith("text/html")
    builder = _TreeBuilder()
    builder.feed(r.text)
    assert_same_origin(builder.root, url)
    return builder.root


def assert_same_origin(doc: Node, url: str) -> None:
    """Every script, style sheet, image, link and form of a page stays on this server."""
    for node in doc.walk():
        for name in ("src", "href", "action"):
            target = node.attrs.get(name)
            if target is not None and node.tag not in ("svg",):
                assert target.startswith(("/", "#", "?")) and not target.startswith("//"), \
                    f"{url}: <{node.tag} {name}={target!r}> leaves the server"


def words(node: Node) -> str:
    return " ".join(node.text.split())


# ---- data beyond the farm's: a batch with a running job and names that need escaping ---------------------------

NASTY = '<script>alert("x")</script>&amp;'


@pytest.fixture(scope="module")
def live(farm: Farm) -> dict[str, int]:
    """A batch written straight into the store (no worker will take it: no message was sent): one job running at
    40 %, one pending after it, names and params with markup in them."""
    with farm.cp.store.session() as s:
        batch_id, ids = batches.create_batch(
            s, f"live {NASTY}", {}, [NewJob(f"runner {NASTY}", "noop", {"note": NASTY}, "fp-live-1", "cpu"),
                                     NewJob("waiter", "noop", {}, "fp-live-2", "cpu")],
            [(f"runner {NASTY}", "waiter")])
    runner = ids[f"runner {NASTY}"]
    with farm.cp.store.session() as s:
        assert transitions.transition(s, runner, JobStatus.PENDING, JobStatus.QUEUED)
    with farm.cp.store.session() as s:
        assert transitions.claim(s, runner, "page-test-worker", 600, gpu="GPU-0", host="page-host") is not None
    with farm.cp.store.session() as s:
        assert transitions.heartbeat(s, runner, 1, 600, progress=0.4) is False
    return {"batch": batch_id, "runner": runner, "waiter": ids["waiter"]}


# ---- pages -------------------------------------------------------------------------------------------------------

def test_batches_page_lists_every_batch_newest_first_with_counts_and_progress(farm: Farm, client: TestClient,
                                                                               live: dict[str, int]) -> None:
    doc = page(client, "/")
    table = doc.one("table", id="batches")
    rows = table.all("tr", data_batch_id=True)
    ids = [int(r.attrs["data-batch-id"]) for r in rows]
    assert ids == sorted(ids, reverse=True)
    assert set(ids) >= {farm.ids["main"], *farm.ids["others"], live["batch"]}
    main = table.one("tr", data_batch_id=str(farm.ids["main"]))
    assert "api-main" in words(main)
    assert words(main.one(cls="status")) == "failed"  # its job 'bad' failed
    counts = {c.attrs["data-count"]: int(c.text) for c in main.all("td", data_count=True)}
    assert counts == {"pending": 0, "queued": 0, "running": 0, "succeeded": 5, "failed": 1, "cancelled": 0, "pruned": 0}
    assert float(main.one("progress", cls="progress").attrs["value"]) == 1.0
    assert {a.attrs["href"] for a in main.all("a")} == {f"/batches/{farm.ids['main']}"}
    running = table.one("tr", data_batch_id=str(live["batch"]))
    assert words(running.one(cls="status")) == "running"
    assert float(running.one("progress").attrs["value"]) == pytest.approx(0.2)  # 0.4 of one job of two
    assert NASTY in running.text  # shown as text, not markup
    assert doc.all("script", src=True) == [doc.one("script", src="/static/dashboard.js")]


def test_batches_page_pages(farm: Farm, client: TestClient, monkeypatch: pytest.MonkeyPatch,
                            live: dict[str, int]) -> None:
    monkeypatch.setattr(dashboard, "BATCHES_PER_PAGE", 2)
    total = len(page(client, "/").one("table", id="batches").all("tr", data_batch_id=True))
    assert total == 2
    first = page(client, "/")
    second = page(client, "/?page=2")
    seen = [r.attrs["data-batch-id"] for d in (first, second) for r in d.all("tr", data_batch_id=True)]
    assert len(seen) == len(set(seen)) == 4
    assert second.one("a", rel="prev").attrs["href"] == "/?page=1"
    assert first.one("a", rel="next").attrs["href"] == "/?page=2"
    assert "offset=2" in second.one("table", id="batches").attrs["data-poll"]
    beyond = page(client, "/?page=99")
    assert beyond.one("table", id="batches").all("tr", data_batch_id=True) == []
    assert "No batches" in words(beyond)


def test_batch_page_shows_its_jobs_metrics_and_a_compare_form(farm: Farm, client: TestClient) -> None:
    batch, jobs = farm.ids["main"], farm.ids["jobs"]
    doc = page(client, f"/batches/{batch}")
    summary = doc.one("section", id="summary")
    assert summary.attrs["data-status"] == "failed"
    assert {c.attrs["data-count"]: int(c.text) for c in summary.all("dd", data_count=True)}["succeeded"] == 5
    table = doc.one("table", id="jobs")
    rows = {int(r.attrs["data-job-id"]): r for r in table.all("tr", data_job_id=True)}
    assert set(rows) == set(jobs.values())
    sweep1 = rows[jobs["sweep[value=1]"]]
    assert {a.attrs["href"] for a in sweep1.all("a")} == {f"/jobs/{jobs['sweep[value=1]']}"}
    assert "noop" in words(sweep1) and "succeeded" in words(sweep1)
    assert words(sweep1.one("td", data_metric="value")) == "1"  # the default column: the job's own metric
    assert words(rows[jobs["report"]].one("td", data_metric="value")) == "10"
    assert words(sweep1.one("td", data_param="value")) == "1.0"  # a swept param: a column of its own
    assert [a.attrs["data-view"] for a in doc.one("nav", id="views").all("a")] == [
        "jobs", "curves", "scatter", "parallel", "gallery", "compare"]
    assert "cluster: clusters_2d.png (1 job)" in words(doc.one("ul", id="images-list"))
    assert words(rows[jobs["bad"]].one(cls="status")) == "failed"
    form = doc.one("form", id="compare-form")
    assert form.attrs["action"] == f"/batches/{batch}/compare"
    metrics = [o.attrs["value"] for o in form.one("select", name="metric").all("option")]
    assert {"value", "inertia", "silhouette"} <= set(metrics)
    swept = form.one("select", name="by").one("optgroup", label="swept")
    assert "value" in [o.attrs["value"] for o in swept.all("option")]


def test_batch_page_pages_its_jobs(farm: Farm, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "JOBS_PER_PAGE", 4)
    batch = farm.ids["main"]
    first, second = page(client, f"/batches/{batch}"), page(client, f"/batches/{batch}?page=2")
    ids = [[int(r.attrs["data-job-id"]) for r in d.one("table", id="jobs").all("tr", data_job_id=True)]
           for d in (first, second)]
    assert ids == [sorted(farm.ids["jobs"].values())[:4], sorted(farm.ids["jobs"].values())[4:]]
    assert first.one("a", rel="next").attrs["href"] == f"/batches/{batch}?page=2"
    assert "offset=4" in second.one("table", id="jobs").attrs["data-poll"]
    assert "jobs 5–6 of 6" in words(second.one("nav", cls="pager"))


def test_job_page_draws_metric_curves_and_shows_images_and_artifacts(farm: Farm, client: TestClient) -> None:
    job_id = farm.ids["jobs"]["clusters"]
    doc = page(client, f"/jobs/{job_id}")
    assert doc.one("section", id="job").attrs["data-status"] == "succeeded"
    assert "wifi" in words(doc.one("table", id="params"))
    charts = {c.attrs["aria-label"]: c for c in doc.all("svg", cls="chart")}
    assert {"inertia per k", "silhouette per k"} <= set(charts)
    inertia = charts["inertia per k"].one("polyline").attrs["points"].split()
    assert len(inertia) == 3  # k = 2, 3, 4
    accuracy = [t for t in charts if t.startswith("accuracy")]
    assert accuracy and {g.attrs["data-series"] for g in charts[accuracy[0]].all("g", cls="series")} \
        >= {"test_accuracy", "train_accuracy"}  # per-k accuracies on one chart
    finals = words(doc.one("table", id="final-metrics"))
    assert "best_k" in finals
    images = {i.attrs["alt"]: i.attrs["src"] for i in doc.all("img", cls="artifact")}
    assert set(images) == {"sweep.png", "clusters_2d.png"}
    for src in images.values():
        assert re.fullmatch(r"/api/v1/artifacts/\d+/content", src)
        r = client.get(src)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    others = {a.text: a.attrs["href"] for a in doc.one("table", id="artifacts").all("a")}
    assert {"confusion.json", "clusters_train.npy"} <= set(others)
    assert client.get(others["confusion.json"]).status_code == 200
    events = words(doc.one("table", id="events"))
    assert "submitted" in events and "succeeded" in events


def test_job_page_and_api_show_the_resources_a_job_used_apart_from_its_metrics(farm: Farm, client: TestClient
                                                                              ) -> None:
    jobs = farm.ids["jobs"]
    doc = page(client, f"/jobs/{jobs['sweep[value=2]']}")
    used = {r.attrs["data-metric"]: words(r.one("td")) for r in doc.one("table", id="resources").all("tr")}
    assert {"wall_seconds", "cpu_seconds", "peak_rss"} <= set(used)
    assert re.fullmatch(r"\d+(\.\d+)? (MiB|GiB)", used["peak_rss"])
    assert re.fullmatch(r"[\d.]+ m?s", used["wall_seconds"])
    assert "peak RSS" in words(doc.one("table", id="resources"))
    finals = words(doc.one("table", id="final-metrics"))
    assert "value" in finals and "peak_rss" not in finals and "wall_seconds" not in finals
    job = client.get(f"/api/v1/jobs/{jobs['sweep[value=2]']}").json()
    assert {"wall_seconds", "cpu_seconds", "peak_rss"} <= set(job["resources"])
    assert job["resources"]["peak_rss"] > 1 << 20
    assert client.get(f"/api/v1/jobs/{jobs['bad']}").json()["resources"] is None  # a failed job records none
    assert page(client, f"/jobs/{jobs['bad']}").all("table", id="resources") == []
    batch = page(client, f"/batches/{farm.ids['main']}")  # listed with the job's own metrics: no; compared: yes
    assert "peak_rss" not in [c.attrs["data-metric"] for c in batch.all("td", data_metric=True)]
    assert "peak_rss" in [o.attrs["value"] for o in batch.one("select", name="metric").all("option")]
    assert views.default_metric(["cpu_seconds", "peak_rss", "seconds"]) == "seconds"  # the job's own, by default


def test_job_page_of_a_failed_job_shows_its_error_and_a_collapsed_traceback(farm: Farm, client: TestClient) -> None:
    doc = page(client, f"/jobs/{farm.ids['jobs']['bad']}")
    error = doc.one(id="job-error")
    assert "asked to fail" in words(error.one("p", cls="message"))
    details = error.one("details")
    assert "open" not in details.attrs
    assert "Traceback" in details.one("pre").text


def test_job_page_of_a_job_with_parents_links_them(farm: Farm, client: TestClient) -> None:
    jobs = farm.ids["jobs"]
    doc = page(client, f"/jobs/{jobs['report']}")
    hrefs = {a.attrs["href"] for a in doc.one("ul", id="parents").all("a")}
    assert hrefs == {f"/jobs/{jobs[f'sweep[value={v}]']}" for v in (1, 2, 3)}
    assert doc.all("svg", cls="chart") == []  # a final metric only: nothing to draw
    assert "10" in words(doc.one("table", id="final-metrics"))


def test_compare_page_marks_the_best_row_and_draws_the_sweep(farm: Farm, client: TestClient) -> None:
    batch = farm.ids["main"]
    doc = page(client, f"/batches/{batch}/compare?metric=value&by=value")
    rows = doc.one("table", id="compare").all("tr", data_value=True)
    assert [float(r.attrs["data-value"]) for r in rows] == [1, 2, 3, 10]  # in numeric order
    (best,) = [r for r in rows if "best" in r.attrs.get("class", "")]
    assert float(best.attrs["data-value"]) == 1  # lower is better by default
    chart = doc.one("svg", cls="chart")
    assert len(chart.one("polyline").attrs["points"].split()) == 4
    higher = page(client, f"/batches/{batch}/compare?metric=value&by=value&higher_is_better=1")
    (best,) = [r for r in higher.one("table", id="compare").all("tr", data_value=True) if r.attrs.get("class")]
    assert float(best.attrs["data-value"]) == 10
    assert higher.one("input", name="higher_is_better").attrs.get("checked") is not None


def test_compare_page_without_a_choice_shows_the_form_and_with_a_wrong_one_says_why(farm: Farm,
                                                                                    client: TestClient) -> None:
    batch = farm.ids["main"]
    doc = page(client, f"/batches/{batch}/compare")
    assert doc.all("table", id="compare") == []
    assert doc.one("form", id="compare-form")
    wrong = page(client, f"/batches/{batch}/compare?metric=no_such_metric&by=value", status=400)
    assert "no_such_metric" in words(wrong.one(id="compare-error"))
    assert wrong.one("form", id="compare-form")
    assert "nope" in words(page(client, f"/batches/{batch}/compare?metric=value&by=nope", status=400))


def test_a_running_job_and_its_batch_are_drawn_live_and_escaped(client: TestClient, live: dict[str, int]) -> None:
    doc = page(client, f"/jobs/{live['runner']}")
    section = doc.one("section", id="job")
    assert section.attrs["data-status"] == "running"
    assert float(section.one("progress").attrs["value"]) == pytest.approx(0.4)
    assert NASTY in doc.one("h1").text
    assert NASTY in doc.one("table", id="params").text
    run = words(doc.one("table", id="run"))
    assert "page-test-worker" in run and "page-host" in run and "GPU-0" in run
    batch = page(client, f"/batches/{live['batch']}")
    assert batch.one("section", id="summary").attrs["data-status"] == "running"
    rows = {int(r.attrs["data-job-id"]): r for r in batch.one("table", id="jobs").all("tr", data_job_id=True)}
    assert words(rows[live["waiter"]].one(cls="status")) == "pending"
    raw = client.get(f"/batches/{live['batch']}").text + client.get(f"/jobs/{live['runner']}").text
    assert "<script>alert" not in raw


def test_live_urls_answer_in_the_shape_the_script_reads(farm: Farm, client: TestClient,
                                                        live: dict[str, int]) -> None:
    listed = client.get(page(client, "/").one("table", id="batches").attrs["data-poll"]).json()
    item = next(i for i in listed["items"] if i["id"] == live["batch"])
    assert item["status"] == "running" and item["counts"] == {"running": 1, "pending": 1}
    assert item["progress"] == pytest.approx(0.2) and item["total"] == 2
    batch_doc = page(client, f"/batches/{live['batch']}")
    one = client.get(batch_doc.one("section", id="summary").attrs["data-poll"]).json()
    assert {k: one[k] for k in ("id", "status", "total")} == {"id": live["batch"], "status": "running", "total": 2}
    jobs = client.get(batch_doc.one("table", id="jobs").attrs["data-poll"]).json()
    by_id = {j["id"]: j for j in jobs["items"]}
    assert by_id[live["runner"]]["status"] == "running" and by_id[live["runner"]]["progress"] == pytest.approx(0.4)
    assert {"attempts", "max_attempts", "worker"} <= set(by_id[live["runner"]])
    job = client.get(page(client, f"/jobs/{live['runner']}").one("section", id="job").attrs["data-poll"]).json()
    assert job["status"] == "running" and job["progress"] == pytest.approx(0.4)


def test_static_files_are_served_and_reach_for_nothing_outside(client: TestClient) -> None:
    for name, media in [("dashboard.js", "javascript"), ("dashboard.css", "text/css"),
                        ("favicon.svg", "image/svg+xml")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and media in r.headers["content-type"]
        if name != "favicon.svg":
            assert not re.search(r"https?://|//[a-z]", r.text.replace("http://www.w3.org", "")), name
            assert "@import" not in r.text


@pytest.mark.parametrize("url, status, says", [
    ("/batches/999999", 404, "no batch 999999"),
    ("/jobs/999999", 404, "no job 999999"),
    ("/jobs/abc", 404, "no job 'abc'"),
    ("/jobs/0", 404, "no job"),
    ("/jobs/99999999999999999999", 404, "no job"),
    ("/batches/-1", 404, "no batch"),
    ("/batches/999999/compare?metric=value&by=value", 404, "no batch 999999"),
    ("/?page=0", 400, "page"),
    ("/?page=abc", 400, "page"),
    ("/?page=99999999999999", 400, "page"),
    ("/batches/1?page=-3", 400, "page"),
    ("/batches/1/compare?metric=value&by=value&higher_is_better=perhaps", 400, "higher_is_better"),
    ("/batches/999999/curves", 404, "no batch 999999"),
    ("/batches/999999/scatter", 404, "no batch 999999"),
    ("/batches/999999/parallel", 404, "no batch 999999"),
    ("/batches/999999/gallery", 404, "no batch 999999"),
    ("/batches/1/curves?page=0", 400, "page"),
    ("/batches/1/gallery?page=-1", 400, "page"),
    ("/batches/1?status=lost", 400, "status"),
    ("/batches/1?kind=no%20kind", 400, "kind"),
])
def test_bad_requests_are_clear_pages_not_crashes(client: TestClient, url: str, status: int, says: str) -> None:
    doc = page(client, url, status)
    section = doc.one("section", id="error")
    assert section.attrs["data-status"] == str(status)
    assert says in words(section)


def test_odd_input_never_makes_a_500(farm: Farm, client: TestClient) -> None:
    batch = farm.ids["main"]
    odd = ["%00", "%3Cscript%3E", "x" * 300, "%F0%9F%92%A5", "1e9", "' OR 1=1 --", "\\u0000"]
    for text in odd:
        for url in (f"/batches/{batch}/compare?metric={text}&by=value",
                    f"/batches/{batch}/compare?metric=value&by={text}", f"/jobs/{text}", f"/batches/{text}",
                    f"/?page={text}", f"/batches/{batch}?sort={text}", f"/batches/{batch}?sort=m:{text}",
                    f"/batches/{batch}?sort=p:{text}", f"/batches/{batch}?param={text}",
                    f"/batches/{batch}?param=value={text}", f"/batches/{batch}?where={text}",
                    f"/batches/{batch}?metric={text}", f"/batches/{batch}?kind={text}&status={text}",
                    f"/batches/{batch}/curves?metric={text}", f"/batches/{batch}/curves?colour={text}&page={text}",
                    f"/batches/{batch}/scatter?metric={text}", f"/batches/{batch}/scatter?by={text}&colour={text}",
                    f"/batches/{batch}/parallel?metric={text}&kind={text}", f"/batches/{batch}/gallery?image={text}",
                    f"/batches/{batch}/gallery?sort={text}&kind=cluster", f"/batches/{text}/gallery"):
            r = client.get(url)
            assert r.status_code < 500, f"GET {url}: {r.status_code}\n{r.text[:500]}"
            assert r.headers["content-type"].startswith("text/html"), url
            assert "<script>" not in r.text.replace('<script src="/static/dashboard.js" defer></script>', "")


def test_pages_are_left_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if not p.startswith("/api/v1")]


def test_every_page_shape_is_typed_for_the_script(farm: Farm, client: TestClient, live: dict[str, int]) -> None:
    """The ids and classes dashboard.js looks up exist on the pages it runs on."""
    script = client.get("/static/dashboard.js").text
    for name in ("batches", "new-batches", "jobs"):
        assert f'"{name}"' in script
    assert page(client, "/").all(id="new-batches")
    for url in (f"/batches/{live['batch']}", f"/jobs/{live['runner']}", "/"):
        doc = page(client, url)
        assert doc.all("progress", cls="progress") and doc.all("span", cls="pct") and doc.all(cls="status")


# ---- a sweep's views ---------------------------------------------------------------------------------------------

Z_DIMS, LRS = (2, 4, 8), (0.001, 0.01)
EPOCHS = 5


def _png(width: int, height: int, shade: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 80, 160)).save(out, "PNG")
    return out.getvalue()


def _test_loss(z: int, lr: float) -> float:
    return round(0.05 * z + lr, 4)


@pytest.fixture(scope="module")
def sweep(farm: Farm) -> dict[str, Any]:
    """A z_dim × lr sweep of six trainings and a sampler below each, written straight into the store with what
    their workers would have recorded: each training loss and val_loss per epoch, test_loss and
    reconstructions.png; each sampler fid and samples.png. The training z_dim=8, lr=0.01 failed (no results) and
    its sampler waits, pending."""
    trains = {(z, lr): f"train[z_dim={z},lr={lr}]" for z in Z_DIMS for lr in LRS}
    samples = {k: f"sample[z_dim={k[0]},lr={k[1]}]" for k in trains}
    planned = [NewJob(n, "train", {"z_dim": z, "lr": lr, "dataset": "digits", "epochs": EPOCHS}, f"fp-sweep-{n}",
                      "gpu") for (z, lr), n in trains.items()]
    planned += [NewJob(n, "sample", {"sampler": "normal", "n": 100}, f"fp-sweep-{n}", "gpu")
                for n in samples.values()]
    with farm.cp.store.session() as s:
        batch_id, ids = batches.create_batch(s, "sweep-views", {}, planned,
                                             [(trains[k], samples[k]) for k in trains])
    failed = (8, 0.01)
    store = farm.cp.store.artifacts

    def run(job_id: int, results: transitions.Results | None) -> None:
        with farm.cp.store.session() as s:
            assert transitions.transition(s, job_id, JobStatus.PENDING, JobStatus.QUEUED)
            assert transitions.claim(s, job_id, "page-test-worker", 600) is not None
            if results is None:
                assert transitions.transition(s, job_id, JobStatus.RUNNING, JobStatus.FAILED, message="diverged")
            else:
                assert transitions.succeed(s, job_id, "page-test-worker", results=results) is not None

    for i, ((z, lr), name) in enumerate(trains.items()):
        if (z, lr) == failed:
            run(ids[name], None)
            continue
        loss = _test_loss(z, lr)
        metrics = {("test_loss", 0): loss}
        for e in range(1, EPOCHS + 1):
            metrics[("loss", e)] = loss + 1 / e
            metrics[("val_loss", e)] = loss + 1.2 / e
        blob = store.put_bytes(_png(40 + 4 * i, 30, 20 * i))
        run(ids[name], transitions.Results(metrics, {"reconstructions.png": (
            blob.uri, blob.sha256, blob.bytes, "image/png", {})}))
        blob = store.put_bytes(_png(36, 36, 200 - 20 * i))
        run(ids[samples[(z, lr)]], transitions.Results({("fid", 0): 10 * z + 1000 * lr}, {"samples.png": (
            blob.uri, blob.sha256, blob.bytes, "image/png", {})}))
    return {"batch": batch_id, "ids": ids, "trains": trains, "samples": samples, "failed": failed}


def terms(dl: Node) -> dict[str, str]:
    """A description list's terms and their descriptions."""
    return dict(zip([words(t) for t in dl.all("dt")], [words(d) for d in dl.all("dd")], strict=True))


def _rows(doc: Node) -> list[Node]:
    return doc.one("table", id="jobs").all("tr", data_job_id=True)


def _names(doc: Node) -> list[str]:
    return [words(r.one("td", cls="name")) for r in _rows(doc)]


def test_jobs_table_shows_chosen_metrics_and_swept_params_with_inherited_ones_marked(
        client: TestClient, sweep: dict[str, Any]) -> None:
    batch = sweep["batch"]
    doc = page(client, f"/batches/{batch}")
    header = [words(th) for th in doc.one("table", id="jobs").one("thead").all("th")]
    assert header[:6] == ["id ▲", "name", "kind", "status", "lr", "z_dim"]  # the swept params, sortable
    metrics = [th for th in doc.one("table", id="jobs").all("th", cls="metric-col")]
    assert [words(th) for th in metrics] == ["test_loss", "fid", "loss"]  # three, not every metric as text
    row = {words(r.one("td", cls="name")): r for r in _rows(doc)}
    train = row["train[z_dim=4,lr=0.01]"]
    assert words(train.one("td", data_metric="test_loss")) == "0.21"
    assert words(train.one("td", data_metric="loss")) == "0.41"  # its last epoch
    assert words(train.one("td", data_param="z_dim")) == "4"
    sample = row["sample[z_dim=4,lr=0.01]"]
    assert words(sample.one("td", data_param="z_dim")) == "4 ↑"  # inherited from its training, and marked
    assert sample.one("td", data_param="z_dim").one("span", cls="inherited")
    assert words(sample.one("td", data_metric="fid")) == "50"
    assert words(sample.one("td", data_metric="test_loss")) == ""
    chosen = page(client, f"/batches/{batch}?metric=val_loss&metric=fid")
    assert [words(th) for th in chosen.one("table", id="jobs").all("th", cls="metric-col")] == ["val_loss", "fid"]
    boxes = {i.attrs["value"]: "checked" in i.attrs for i in chosen.one("form", id="jobs-filter").all("input",
                                                                                                      type="checkbox")}
    assert boxes["val_loss"] and boxes["fid"] and not boxes["loss"]


def test_jobs_table_sorts_by_a_column_a_final_metric_or_a_param(client: TestClient, sweep: dict[str, Any]) -> None:
    batch = sweep["batch"]
    by_loss = _names(page(client, f"/batches/{batch}?kind=train&sort=m:test_loss"))
    expected = sorted((n for k, n in sweep["trains"].items() if k != sweep["failed"]),
                      key=lambda n: _test_loss(*next(k for k, v in sweep["trains"].items() if v == n)))
    assert by_loss == [*expected, sweep["trains"][sweep["failed"]]]  # without the metric: last
    worst_first = _names(page(client, f"/batches/{batch}?kind=train&sort=m:test_loss&desc=1"))
    assert worst_first == [*expected[::-1], sweep["trains"][sweep["failed"]]]  # still last
    # the same order from the Python path (a param filter that keeps every training) as from SQL
    assert _names(page(client, f"/batches/{batch}?kind=train&sort=m:test_loss&param=dataset=digits")) == by_loss
    by_name = _names(page(client, f"/batches/{batch}?sort=name"))  # as the database collates them
    assert _names(page(client, f"/batches/{batch}?sort=name&desc=1")) == by_name[::-1] and len(set(by_name)) == 12
    by_z = page(client, f"/batches/{batch}?sort=p:z_dim")
    zs = [words(r.one("td", data_param="z_dim")).split()[0] for r in _rows(by_z)]
    assert zs == sorted(zs, key=int) and zs.count("8") == 4  # samples sorted by the z_dim they inherit
    head = by_z.one("th", aria_sort="ascending")
    assert words(head) == "z_dim ▲" and "desc=1" in head.one("a").attrs["href"]  # a second click: descending


def test_jobs_table_filters_by_status_kind_param_and_metric(client: TestClient, sweep: dict[str, Any]) -> None:
    batch = sweep["batch"]
    failed = page(client, f"/batches/{batch}?status=failed")
    assert _names(failed) == [sweep["trains"][sweep["failed"]]]
    assert "1 of 12 jobs pass the filters" in words(failed)
    assert len(_rows(page(client, f"/batches/{batch}?kind=sample"))) == 6
    z4 = _names(page(client, f"/batches/{batch}?param=z_dim=4"))  # the lineage: the samplers below z_dim=4 too
    assert sorted(z4) == sorted([sweep["trains"][(4, lr)] for lr in LRS] + [sweep["samples"][(4, lr)] for lr in LRS])
    good = _names(page(client, f"/batches/{batch}?where=test_loss<0.2"))
    assert sorted(good) == sorted(sweep["trains"][(2, lr)] for lr in LRS)
    both = page(client, f"/batches/{batch}?kind=sample&status=succeeded&param=lr=0.001&where=fid>30")
    assert _names(both) == [sweep["samples"][(4, 0.001)], sweep["samples"][(8, 0.001)]]
    form = both.one("form", id="jobs-filter")
    assert form.one("input", name="param").attrs["value"] == "lr=0.001"
    assert form.one("select", name="kind").one("option", selected=True).attrs["value"] == "sample"
    none = page(client, f"/batches/{batch}?where=test_loss<0")
    assert _rows(none) == [] and "No job passes these filters." in words(none)


def test_jobs_table_pages_keep_the_order_and_filters(client: TestClient, sweep: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "JOBS_PER_PAGE", 4)
    batch = sweep["batch"]
    first = page(client, f"/batches/{batch}?sort=m:fid&desc=1")
    following = first.one("a", rel="next").attrs["href"]
    assert "sort=m%3Afid" in following and "desc=1" in following and "page=2" in following
    second = page(client, following)
    third = page(client, second.one("a", rel="next").attrs["href"])
    fids = [words(r.one("td", data_metric="fid")) for d in (first, second, third) for r in _rows(d)]
    shown = [float(f) for f in fids if f]
    assert shown == sorted(shown, reverse=True) and len(shown) == 5 and len(fids) == 12


@pytest.mark.parametrize("query, says", [
    ("sort=bogus", "sort: expected one of"), ("param=zz", "param: expected NAME=VALUE"),
    ("where=test_loss", "where: expected METRIC OP NUMBER"), ("where=test_loss<abc", "is not a number"),
])
def test_a_bad_table_filter_is_a_400_with_the_form_and_the_reason(client: TestClient, sweep: dict[str, Any],
                                                                  query: str, says: str) -> None:
    doc = page(client, f"/batches/{sweep['batch']}?{query}", 400)
    assert says in words(doc.one("p", id="table-error"))
    assert doc.one("form", id="jobs-filter") and doc.one("section", id="summary")


def test_curves_overlay_every_training_coloured_by_a_param(client: TestClient, sweep: dict[str, Any]) -> None:
    doc = page(client, f"/batches/{sweep['batch']}/curves?metric=loss&colour=z_dim")
    chart = doc.one("svg", cls="curves")
    series = chart.all("g", cls="series")
    assert len(series) == 5 and chart.attrs["data-count"] == "5"  # the failed training recorded nothing
    for g in series:
        assert len(g.one("polyline").attrs["points"].split()) == EPOCHS
        assert len(g.all("circle")) == 1  # its last value
    by_job = {int(g.attrs["data-job-id"]): g.one("polyline").attrs["stroke"] for g in series}
    colour = {z: {by_job[sweep["ids"][sweep["trains"][(z, lr)]]] for lr in LRS
                  if (z, lr) != sweep["failed"]} for z in Z_DIMS}
    assert all(len(c) == 1 for c in colour.values()) and len(set.union(*colour.values())) == 3  # a colour per z_dim
    assert [words(t) for t in chart.one("g", cls="legend").all("text")] == ["z_dim", "2", "4", "8"]
    assert "epoch" in words(chart.one("text", cls="x-label"))
    ranked = [int(r.attrs["data-job-id"]) for r in doc.one("table", id="ranked").all("tr", data_job_id=True)]
    assert ranked[0] == sweep["ids"][sweep["trains"][(2, 0.001)]]  # lowest last loss first
    default = page(client, f"/batches/{sweep['batch']}/curves")  # by default: val_loss, coloured by a swept param
    assert default.one("select", name="metric").one("option", selected=True).attrs["value"] == "val_loss"
    assert len(default.one("svg", cls="curves").all("g", cls="series")) == 5


def test_curves_draw_a_page_of_the_best_at_a_time_and_say_so(client: TestClient, sweep: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.web import sweep as sweep_view

    monkeypatch.setattr(sweep_view, "CURVES_PER_PAGE", 2)
    url = f"/batches/{sweep['batch']}/curves?metric=loss&higher_is_better=1"
    first = page(client, url)
    assert len(first.one("svg", cls="curves").all("g", cls="series")) == 2
    note = words(first.one("p", id="curves-note"))
    assert "5 jobs recorded loss" in note and "drawn 2 at a time, highest last value first" in note
    third = page(client, first.one("a", rel="next").attrs["href"].replace("page=2", "page=3"))
    assert len(third.one("svg", cls="curves").all("g", cls="series")) == 1
    assert [int(r.attrs["data-job-id"]) for r in third.one("table", id="ranked").all("tr", data_job_id=True)] == [
        sweep["ids"][sweep["trains"][(2, 0.001)]]]  # the lowest, last


def test_scatter_draws_a_point_per_job_against_its_own_or_inherited_param(client: TestClient,
                                                                          sweep: dict[str, Any]) -> None:
    batch = sweep["batch"]
    doc = page(client, f"/batches/{batch}/scatter?metric=test_loss&by=z_dim")
    chart = doc.one("svg", cls="scatter")
    points = chart.all("circle")
    assert len(points) == 5 and chart.attrs["data-count"] == "5"
    links = {a.attrs["href"] for a in chart.all("a")}
    assert links == {f"/jobs/{sweep['ids'][n]}" for k, n in sweep["trains"].items() if k != sweep["failed"]}
    assert [words(t) for t in chart.all("text", cls="tick")][-3:] == ["2", "4", "8"]  # the swept values on x
    samples = page(client, f"/batches/{batch}/scatter?metric=fid&by=z_dim&colour=lr")  # z_dim: inherited
    chart = samples.one("svg", cls="scatter")
    assert len(chart.all("circle")) == 5 and len({c.attrs["fill"] for c in chart.all("circle")}) == 2
    assert "z_dim=8, lr=0.001 → fid 81" in " ".join(words(t) for t in chart.all("title"))
    wrong = page(client, f"/batches/{batch}/scatter?metric=fid&by=nope", 400)
    assert "has a parameter 'nope'" in words(wrong.one("p", id="view-error"))


def test_parallel_coordinates_draw_a_line_per_job_across_its_swept_params(client: TestClient,
                                                                          sweep: dict[str, Any]) -> None:
    doc = page(client, f"/batches/{sweep['batch']}/parallel?metric=test_loss")
    chart = doc.one("svg", cls="parallel")
    lines = chart.all("polyline")
    assert len(lines) == 5 and all(len(line.attrs["points"].split()) == 3 for line in lines)
    assert [words(t) for t in chart.all("text", cls="axis-name")] == ["lr", "z_dim", "test_loss"]
    best = lines[-1]  # drawn last, on top: the best
    assert best.one("title").text.endswith("test_loss 0.101")
    assert best.attrs["points"].split()[-1].endswith(f",{chart_top(chart):.1f}")  # the best value at the top
    assert len({line.attrs["stroke"] for line in lines}) == 5  # coloured by the value


def chart_top(chart: Node) -> float:
    """The y of a parallel chart's axes' top end."""
    return min(float(line.attrs["y1"]) for line in chart.all("line", cls="axis"))


def test_gallery_shows_every_job_with_the_image_its_params_and_scores_a_page_at_a_time(
        client: TestClient, sweep: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.web import sweep as sweep_view

    batch = sweep["batch"]
    doc = page(client, f"/batches/{batch}/gallery?kind=train&image=reconstructions.png&sort=test_loss")
    figures = doc.one("div", id="gallery").all("figure", data_job_id=True)
    assert len(figures) == 5
    losses = [float(terms(f.one("dl", cls="scores"))["test_loss"]) for f in figures]
    assert losses == sorted(losses) and len(losses) == 5
    assert terms(figures[0].one("dl", cls="params")) == {"lr": "0.001", "z_dim": "2"}
    assert set(terms(figures[0].one("dl", cls="scores"))) == {"loss", "val_loss", "test_loss"}
    for img in doc.all("img", cls="artifact"):
        r = client.get(img.attrs["src"])
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG" and img.attrs["alt"] == "reconstructions.png"
    samples = page(client, f"/batches/{batch}/gallery?kind=sample&image=samples.png")
    params = terms(samples.one("div", id="gallery").all("figure")[0].one("dl", cls="params"))
    assert params == {"lr": "0.001 ↑", "z_dim": "2 ↑"}  # inherited, marked
    monkeypatch.setattr(sweep_view, "GALLERY_PER_PAGE", 2)
    pages = [page(client, f"/batches/{batch}/gallery?kind=train&image=reconstructions.png&page={n}")
             for n in (1, 2, 3)]
    ids = [f.attrs["data-job-id"] for d in pages for f in d.one("div", id="gallery").all("figure")]
    assert len(ids) == len(set(ids)) == 5  # none left out, none twice
    assert "jobs 5–5 of 5" in words(pages[2].one("nav", cls="pager"))
    wrong = page(client, f"/batches/{batch}/gallery?image=nothing.png", 400)
    assert "nothing.png" in words(wrong.one("p", id="view-error"))


def test_views_of_a_batch_with_nothing_to_draw_say_so(client: TestClient, live: dict[str, int]) -> None:
    for view, says in [("curves", "No job of this batch has recorded a metric per step"),
                       ("scatter", "Nothing to draw yet"), ("parallel", "Nothing to draw yet"),
                       ("gallery", "No job of this batch has an image yet")]:
        doc = page(client, f"/batches/{live['batch']}/{view}")
        assert says in words(doc) and doc.all("svg", cls="chart") == []
        assert doc.one("nav", id="views").one("a", aria_current="page").attrs["data-view"] == view


def test_cancel_and_retry_buttons_for_who_may_write_through_the_api_as_the_guard_allows(
        farm: Farm, sweep: dict[str, Any]) -> None:
    from tests.api.conftest import TOKEN

    batch = sweep["batch"]
    bearer = page(farm.client, f"/batches/{batch}")
    retry = bearer.one("button", data_action="retry")
    assert retry.attrs["data-job-id"] == str(sweep["ids"][sweep["trains"][sweep["failed"]]])
    assert bearer.one("button", data_action="cancel").attrs["data-job-id"] == str(
        sweep["ids"][sweep["samples"][sweep["failed"]]])  # the pending sampler below it
    assert bearer.one("button", data_action="cancel-batch")
    browser = TestClient(farm.app)  # a browser: no token, then signed in with it
    assert browser.get(f"/batches/{batch}", follow_redirects=False).status_code == 303
    r = browser.post("/login", data={"token": TOKEN, "next": f"/batches/{batch}"},
                     headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert r.status_code == 303 and browser.cookies.get("latentfarm_session")
    assert page(browser, f"/batches/{batch}").one("button", data_action="retry")
    out = farm.submit("batch: buttons\njobs:\n  - {name: nap, kind: noop, params: {seconds: 60}}\n")
    nap = out["jobs"]["nap"]
    cancel = f"/api/v1/jobs/{nap}/cancel"
    refused = browser.post(cancel)  # the cookie alone, from no page: refused
    assert refused.status_code == 403 and "must come from its pages" in refused.json()["detail"]
    assert browser.post(cancel, headers={"Origin": "http://evil.test"}).status_code == 403
    assert farm.job(nap).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    done = browser.post(cancel, headers={"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"})
    assert done.status_code == 200 and (done.json()["cancelled"] or done.json()["flagged"]) == [nap]
    farm.wait(out["batch"])
    assert farm.job(nap).status is JobStatus.CANCELLED
    row = page(browser, f"/batches/{out['batch']}").one("tr", data_job_id=str(nap))
    assert row.one("button", data_action="retry")  # what the page offers now
    again = browser.post(f"/api/v1/jobs/{nap}/retry", headers={"Sec-Fetch-Site": "same-origin"})
    assert again.status_code == 200 and again.json()["job"] == nap
    assert farm.job(nap).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    farm.client.post(f"/api/v1/batches/{out['batch']}/cancel")
    farm.wait(out["batch"])
    anon = TestClient(farm.app)
    assert anon.post(f"/api/v1/jobs/{nap}/retry", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 401


def test_a_view_drawn_again_sees_what_was_recorded_since(farm: Farm, client: TestClient) -> None:
    """The choices a batch's views offer are kept between requests, but never past a new metric or artifact."""
    from storage import results

    out = farm.submit("batch: growing\njobs:\n  - {name: quick, kind: noop, params: {value: 3}}\n")
    farm.wait(out["batch"])
    quick = out["jobs"]["quick"]
    before = page(client, f"/batches/{out['batch']}/curves")
    assert before.all("select", name="metric") == []  # nothing recorded per step yet
    with farm.cp.store.session() as s:
        results.put_metrics(s, quick, {"accuracy": 0.5}, step=1)
        results.put_metrics(s, quick, {"accuracy": 0.7}, step=2)
    after = page(client, f"/batches/{out['batch']}/curves")
    assert [o.attrs["value"] for o in after.one("select", name="metric").all("option")] == ["accuracy"]
    assert len(after.one("svg", cls="curves").one("polyline").attrs["points"].split()) == 2
    table = page(client, f"/batches/{out['batch']}?metric=accuracy")
    assert words(table.one("td", data_metric="accuracy")) == "0.7"


# ---- the sweep's charts, alone -------------------------------------------------------------------------------

def test_colour_keys_give_a_colour_per_value_or_a_gradient_for_many_numbers() -> None:
    from scheduler.web import sweep_charts as sc

    few = sc.colour_key("z_dim", [8, 2, 4, 2, None])
    assert [text for text, _ in few.categories.values()] == ["2", "4", "8"]  # in numeric order, none left out
    assert len({few.colour(v) for v in (2, 4, 8)}) == 3 and few.colour(None) == sc.NONE_COLOUR
    assert few.colour(2.0) == sc.NONE_COLOUR  # 2.0 is not the spec's 2: a value is matched with its type
    many = sc.colour_key("lr", [10.0 ** -e for e in range(10)])
    assert many.gradient and many.log and many.colour(1e-9) == sc.GRADIENT[0] and many.colour(1.0) == sc.GRADIENT[-1]
    assert sc.colour_key("lr", [float(v) for v in range(20)]).log is False  # from 0: linear
    words_ = sc.colour_key("sampler", ["normal", "fitted", "kde"])
    assert [t for t, _ in words_.categories.values()] == ["fitted", "kde", "normal"]
    best_dark = sc.colour_key("accuracy", [0.1, 0.5, 0.9], most=0, reverse=True)
    assert best_dark.colour(0.9) == sc.GRADIENT[0]


def test_sweep_charts_escape_text_and_say_when_there_is_nothing_to_draw() -> None:
    from scheduler.web import sweep_charts as sc

    evil = '<script>"x"</script>'
    curve = sc.curves_chart([sc.Curve([(1, 1.0), (2, 0.5)], "#000000", evil, f"/jobs/1?{evil}", 1)], evil, evil,
                            evil, sc.colour_key(evil, [evil]))
    assert "<script>" not in curve and "&lt;script&gt;" in curve
    point = sc.scatter_chart([sc.Point(evil, 1.0, "#000000", evil, "/jobs/1", 1)], evil, "y", evil,
                             categories=[evil])
    assert "<script>" not in point and point.count("<circle") == 1
    assert ">no data</text>" in sc.curves_chart([], "x", "y", "t")
    assert ">no data</text>" in sc.scatter_chart([sc.Point(0.0, 1.0, "#000", "", "/", 1)], "x", "y", "t", log_x=True)
    axes = [sc.axis("k", [1, 2, 3]), sc.axis("m", [0.5, 0.25])]
    lines = [sc.Line([2, 0.25], "#000", "a", "/jobs/1", 1), sc.Line(["x", 0.5], "#000", "b", "/jobs/2", 2)]
    chart = sc.parallel_chart(axes, lines, "t")
    assert chart.count("<polyline") == 1 and 'data-count="1"' in chart  # a value off its axis: left out
    assert axes[0].position(2) == 0.5 and sc.axis("m", [1, 2], flip=True).position(2) == 0.0


def test_categories_spread_their_points_the_same_way_every_time() -> None:
    from scheduler.web import sweep_charts as sc

    points = [sc.Point("a", 1.0, "#000", "", f"/jobs/{i}", i) for i in range(50)]
    first = sc.scatter_chart(points, "x", "y", "t", categories=["a", "b"])
    assert first == sc.scatter_chart(points, "x", "y", "t", categories=["a", "b"])
    xs = {float(x) for x in re.findall(r'<circle cx="([\d.]+)"', first)}
    assert len(xs) > 40 and max(xs) - min(xs) < (880 - 80) / 2 * 0.7  # spread, within the first category's slot
