"""The dashboard's pages over HTTP, on the farm the API tests populate with real jobs (``tests/api/conftest.py``):
what each page shows, that its live-update URLs answer in the shape the page's script reads, that nothing is
loaded from another origin, and that bad input is a 404 or 400 page, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from scheduler.web import dashboard
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
    assert counts == {"pending": 0, "queued": 0, "running": 0, "succeeded": 5, "failed": 1, "cancelled": 0}
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
    assert "value 1" in words(sweep1.one(cls="metrics"))
    assert "value 10" in words(rows[jobs["report"]].one(cls="metrics"))
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
                    f"/?page={text}"):
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
