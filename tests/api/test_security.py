"""What every request to ``latentfarm serve`` passes first (``scheduler.web.guard``), in process over ASGI: the host
names answered (DNS rebinding), the origin of writes (cross-site requests), the token on every route, the
security headers on every answer and credentials masked in every error. The same, over real HTTP and in a real
browser, is in ``tests/e2e/test_web_security.py``; the bounds on parsing a spec are in ``test_spec_parsing.py``.

The farm is this module's own (``tests/api/conftest.py``); the jobs the refused writes aim at are written
straight into its store and never sent to its worker, so only an accepted write can change them.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import update

from scheduler.errors import DatabaseUnavailable
from scheduler.web import guard
from scheduler.web.app import create_app
from scheduler.web.login import safe_next
from storage import batches, queries
from storage.models import JobRow
from storage.records import NewJob
from tests.api.conftest import API, AUTH, TOKEN, YAML, Farm

pytestmark = pytest.mark.timeout(300)

LOCAL = "http://127.0.0.1:8080"
SPEC = "batch: guarded\njobs:\n  - {name: a, kind: noop, params: {value: 41}}\n"
SECRET = "s3cret-pw-0d1e"


def one_line(r: Response, status: int) -> str:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail  # type: ignore[no-any-return]


def assert_guarded(r: Response) -> None:
    """The security headers every answer carries."""
    where = f"{r.request.method} {r.request.url} ({r.status_code})"
    assert r.headers.get("x-content-type-options") == "nosniff", where
    assert r.headers.get("referrer-policy") == "no-referrer", where
    csp = r.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and ("default-src 'self'" in csp or "default-src 'none'" in csp), where


@pytest.fixture(scope="module")
def local(farm: Farm) -> Iterator[TestClient]:
    """The app as `latentfarm serve` runs it without a token, reached as http://127.0.0.1:8080."""
    app = create_app(farm.cp, None)
    with TestClient(app, base_url=LOCAL) as client:
        yield client


@pytest.fixture
def targets(farm: Farm) -> dict[str, int]:
    """A batch of two pending jobs and a failed one, written into the store: what a refused write must leave."""
    with farm.cp.store.session() as s:
        batch_id, ids = batches.create_batch(s, "targets", {}, [
            NewJob("first", "noop", {}, f"fp-guard-{time.monotonic_ns()}-1", "cpu"),
            NewJob("second", "noop", {}, f"fp-guard-{time.monotonic_ns()}-2", "cpu"),
            NewJob("broken", "noop", {}, f"fp-guard-{time.monotonic_ns()}-3", "cpu")], [("first", "second")])
        s.execute(update(JobRow).where(JobRow.id == ids["broken"]).values(status="failed", error="it broke"))
    return {"batch": batch_id, **ids}


def state(farm: Farm, targets: dict[str, int]) -> dict[str, Any]:
    """What a write could change: every table's row count, the targets' statuses and cancel flags."""
    with farm.cp.store.session() as s:
        jobs = {name: queries.require_job(s, targets[name]) for name in ("first", "second", "broken")}
    return {"counts": farm.counts(),
            "jobs": {n: (j.status.value, j.cancel_requested, j.attempts) for n, j in jobs.items()}}


def writes(targets: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{API}/batches", {"content": SPEC, "headers": YAML}),
            (f"{API}/batches/{targets['batch']}/cancel", {}),
            (f"{API}/jobs/{targets['first']}/cancel", {}),
            (f"{API}/jobs/{targets['broken']}/retry", {})]


# ---- hosts -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:9", "[::1]", "[::1]:8080"])
def test_without_a_token_loopback_names_are_answered(local: TestClient, host: str) -> None:
    r = local.get(f"{API}/health", headers={"Host": host})
    assert r.status_code == 200 and r.json()["writes_need_token"] is False
    assert_guarded(r)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io:8080", "localhost.evil",
                                  "testserver", "[::2]:8080", "0.0.0.0:8080", ""])
def test_without_a_token_other_host_names_are_refused(local: TestClient, host: str) -> None:
    """A page of evil.example whose name was made to resolve to 127.0.0.1 (DNS rebinding) reaches the server
    with its own name as Host: refused, for pages, the API and static files alike, writes included."""
    for method, url in [("GET", f"{API}/batches"), ("GET", "/"), ("GET", "/static/dashboard.js"),
                        ("POST", f"{API}/batches/1/cancel")]:
        r = local.request(method, url, headers={"Host": host})
        assert one_line(r, 400).startswith(f"host {host!r} is not served here"), (method, url)
        assert_guarded(r)


def test_configured_host_names_replace_the_default(farm: Farm) -> None:
    def client(hosts: tuple[str, ...] | None, token: str | None) -> TestClient:
        cp = dataclasses.replace(farm.cp, settings=dataclasses.replace(farm.cp.settings, allowed_hosts=hosts))
        return TestClient(create_app(cp, token), headers=AUTH if token else None)

    named = client(("farm.example", "[::1]"), None)
    assert named.get(f"{API}/health", headers={"Host": "farm.example:8080"}).status_code == 200
    assert named.get(f"{API}/health", headers={"Host": "[::1]:80"}).status_code == 200
    assert named.get(f"{API}/health", headers={"Host": "127.0.0.1"}).status_code == 400  # no longer a default
    assert client(("*",), None).get(f"{API}/health", headers={"Host": "any.example"}).status_code == 200
    assert client(None, TOKEN).get(f"{API}/health", headers={"Host": "any.example"}).status_code == 200
    assert client(("farm.example",), TOKEN).get(f"{API}/health", headers={"Host": "any.example"}).status_code == 400


# ---- origin ------------------------------------------------------------------------------------------------------

CROSS = [{"Origin": "http://127.0.0.1:9999"}, {"Origin": "http://evil.example"}, {"Origin": "null"},
         {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
         {"Origin": "http://evil.example", "Sec-Fetch-Site": "none"},
         {"Origin": "http://127.0.0.1:8080.evil.example"}, {"Origin": "http://127.0.0.1"},
         {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
         {"Origin": LOCAL, "Sec-Fetch-Site": "same-site"}]


def test_writes_from_another_origin_are_refused_and_change_nothing(farm: Farm, local: TestClient,
                                                                   targets: dict[str, int]) -> None:
    before = state(farm, targets)
    for url, kw in writes(targets):
        for headers in CROSS:
            r = local.post(url, content=kw.get("content"), headers={**kw.get("headers", {}), **headers})
            assert one_line(r, 403).startswith("cross-origin request refused: POST from "), (url, headers)
            assert_guarded(r)
        r = local.options(url, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert one_line(r, 403).startswith("cross-origin request refused")  # a preflight gets no CORS grant
        assert "access-control-allow-origin" not in r.headers
    assert state(farm, targets) == before


def test_writes_from_this_origin_or_without_one_go_on(farm: Farm, local: TestClient,
                                                      targets: dict[str, int]) -> None:
    same = {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}
    submitted = local.post(f"{API}/batches", content=SPEC, headers={**YAML, **same})
    assert submitted.status_code == 201
    out = local.post(f"{API}/jobs/{targets['second']}/cancel", headers=same).json()
    assert out == {"cancelled": [targets["second"]], "flagged": []}
    # a form of this server's own pages: they say no-referrer, so the browser sends Origin: null
    out = local.post(f"{API}/jobs/{targets['broken']}/retry", headers={"Origin": "null",
                                                                       "Sec-Fetch-Site": "same-origin"}).json()
    assert out["job"] == targets["broken"]
    out = local.post(f"{API}/jobs/{targets['first']}/cancel").json()  # curl: no Origin at all
    assert out == {"cancelled": [targets["first"]], "flagged": []}
    assert state(farm, targets)["jobs"]["first"][0] == "cancelled"
    # what was queued runs in the farm's worker: let it end, so that no later test sees its rows arrive
    farm.wait(submitted.json()["batch"])
    assert farm.wait(targets["batch"]).counts == {"cancelled": 2, "succeeded": 1}  # the retried job ran


def test_a_write_with_a_form_body_is_a_415(farm: Farm, local: TestClient, targets: dict[str, int]) -> None:
    before = state(farm, targets)
    for url, _ in writes(targets)[1:]:
        for media in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
            r = local.post(url, content="a=b", headers={"Content-Type": media})
            assert one_line(r, 415).startswith("send no body, or application/json or application/yaml"), url
    assert state(farm, targets) == before
    r = local.post(f"{API}/jobs/{targets['first']}/cancel", content="{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 200


# ---- the token and the session cookie ----------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "safe"), [
    ("/jobs/3", "/jobs/3"), ("/batches/2/compare?metric=loss&by=z_dim", "/batches/2/compare?metric=loss&by=z_dim"),
    ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("https://evil.example/", "/"), ("jobs/3", "/"),
    ("", "/"), (None, "/"), ("/login", "/"), ("/login?next=/x", "/"), ("/x\nLocation: y", "/"), ("/" * 2001, "/")])
def test_after_sign_in_only_a_path_of_this_server_is_followed(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


def test_pages_send_the_browser_to_sign_in_and_the_cookie_opens_them(farm: Farm) -> None:
    browser = TestClient(farm.app, follow_redirects=False)
    r = browser.get(f"/jobs/{farm.ids['jobs']['bad']}?x=1")
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Fjobs%2F{farm.ids['jobs']['bad']}%3Fx%3D1"
    assert_guarded(r)
    assert browser.get("/static/dashboard.css").status_code == 200  # no data in the static files
    form = browser.get("/login?next=/jobs/1")
    assert form.status_code == 200 and 'name="next" value="/jobs/1"' in form.text and 'type="password"' in form.text
    wrong = browser.post("/login", data={"token": "not-it", "next": "/jobs/1"})
    assert wrong.status_code == 401 and "wrong token" in wrong.text and "set-cookie" not in wrong.headers
    right = browser.post("/login", data={"token": TOKEN, "next": "/jobs/1"})
    assert right.status_code == 303 and right.headers["location"] == "/jobs/1"
    cookie = right.headers["set-cookie"]
    value = browser.cookies[guard.SESSION_COOKIE]
    assert TOKEN not in cookie and value == guard.session_value(TOKEN) and len(value) == 64
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = browser.get(f"/jobs/{farm.ids['jobs']['bad']}")
    assert page.status_code == 200 and 'id="logout"' in page.text
    assert browser.get(f"{API}/jobs/{farm.ids['jobs']['bad']}").json()["status"] == "failed"  # the script's polls
    assert browser.get("/login?next=/batches/1").headers["location"] == "/batches/1"  # signed in already
    out = browser.post("/logout", headers={"Origin": "http://testserver"})
    assert out.status_code == 303 and browser.cookies.get(guard.SESSION_COOKIE) is None
    assert browser.get("/").status_code == 303
    browser.cookies.set(guard.SESSION_COOKIE, guard.session_value(TOKEN + "x"))  # another token's cookie
    assert browser.get("/").status_code == 303 and browser.get(f"{API}/batches").status_code == 401


def test_a_write_signed_in_by_the_cookie_must_come_from_this_origin(farm: Farm, targets: dict[str, int]) -> None:
    browser = TestClient(farm.app, cookies={guard.SESSION_COOKIE: guard.session_value(TOKEN)})
    url = f"{API}/jobs/{targets['first']}/cancel"
    before = state(farm, targets)
    assert one_line(browser.post(url), 403).startswith("a write signed in by the dashboard's cookie must come from")
    assert one_line(browser.post(url, headers={"Origin": "null"}), 403).startswith("cross-origin request refused")
    assert one_line(browser.post(url, headers={"Origin": "http://127.0.0.1:9999"}), 403).startswith("cross-origin")
    assert state(farm, targets) == before
    out = browser.post(url, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}).json()
    assert out["cancelled"] == [targets["first"], targets["second"]]


# ---- headers on every answer -------------------------------------------------------------------------------------

def test_every_answer_carries_the_security_headers(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    anon = TestClient(farm.app, follow_redirects=False)
    job = farm.ids["jobs"]["clusters"]
    artifact = farm.client.get(f"{API}/jobs/{job}/artifacts").json()["items"][0]
    answers = [farm.client.get(f"{API}/batches"), farm.client.get(f"{API}/jobs/999999"),
               farm.client.get(f"{API}/jobs/abc"), farm.client.get(f"{API}/jobs?colour=red"),
               farm.client.get("/openapi.json"), farm.client.get("/"), farm.client.get(f"/jobs/{job}"),
               farm.client.get("/jobs/999999"), farm.client.get("/no/such/page"),
               farm.client.get("/static/dashboard.js"), farm.client.get("/static/favicon.svg"),
               farm.client.get("/static/nothing.css"), anon.get("/"), anon.get(f"{API}/batches"), anon.get("/login"),
               anon.post("/login", data={"token": "x"}),
               farm.client.post(f"{API}/batches", content="[", headers=YAML), farm.client.delete(f"{API}/batches")]
    for r in answers:
        assert_guarded(r)
    download = farm.client.get(artifact["url"])
    assert download.status_code == 200
    assert_guarded(download)  # opened on its own, an artifact is an inert document
    assert download.headers["content-security-policy"].startswith("default-src 'none'")
    assert "sandbox" in download.headers["content-security-policy"]
    for url in ("/", f"/jobs/{job}", f"/batches/{farm.ids['main']}", "/login"):
        page = farm.client.get(url).text  # nothing inline that the policy would have to allow
        assert "<script>" not in page and "<style" not in page and not re.search(r" (style|on[a-z]+)=", page), url

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"a bug, with redis://:{SECRET}@broker.example in its message")

    monkeypatch.setattr(queries, "list_batches", broken)
    crashing = TestClient(farm.app, headers=AUTH, raise_server_exceptions=False)
    for url in (f"{API}/batches", "/"):
        r = crashing.get(url)
        assert one_line(r, 500) == "internal server error: see the server's log" and SECRET not in r.text
        assert_guarded(r)


# ---- credentials masked ------------------------------------------------------------------------------------------

def test_credentials_are_masked_in_every_error(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    db_url = f"postgresql+psycopg://lf:{SECRET}@db.example/lf"
    cp = dataclasses.replace(farm.cp, settings=dataclasses.replace(farm.cp.settings, database_url=db_url))
    client = TestClient(create_app(cp, TOKEN), headers=AUTH)

    def away(*args: Any, **kwargs: Any) -> Any:  # the database's own words can quote its URL and its password
        raise DatabaseUnavailable(f"database unavailable: {db_url}: password {SECRET!r} refused")

    with farm.cp.store.session() as s:
        s.execute(update(JobRow).where(JobRow.id == farm.ids["jobs"]["bad"]).values(
            error=f"cannot reach redis://:{SECRET}@broker.example:6379/0", traceback=f"...\npassword={SECRET}\n"))
    job = client.get(f"{API}/jobs/{farm.ids['jobs']['bad']}").json()
    assert SECRET not in str(job) and job["error"] == "cannot reach redis://:***@broker.example:6379/0"
    page = client.get(f"/jobs/{farm.ids['jobs']['bad']}")
    assert page.status_code == 200 and SECRET not in page.text and "redis://:***@broker.example" in page.text

    monkeypatch.setattr(queries, "list_batches", away)
    r = client.get(f"{API}/batches")
    assert one_line(r, 503) == "database unavailable: postgresql+psycopg://lf:***@db.example/lf: password '***' refused"
    assert r.headers["retry-after"] == "5"
    r = client.get("/")
    assert r.status_code == 503 and SECRET not in r.text and "lf:***@db.example" in r.text
    r = client.get(f"{API}/batches", params={"limit": f"redis://:{SECRET}@x"})  # even what the client sent
    assert one_line(r, 422) and SECRET not in r.text


def test_health_says_when_the_database_is_away(farm: Farm) -> None:
    from types import SimpleNamespace

    from sqlalchemy import create_engine

    away = create_engine(f"postgresql+psycopg://lf:{SECRET}@127.0.0.1:1/lf", connect_args={"connect_timeout": 2})
    cp = dataclasses.replace(farm.cp, store=SimpleNamespace(engine=away))
    r = TestClient(create_app(cp, TOKEN), headers=AUTH).get(f"{API}/health")
    assert one_line(r, 503).startswith("database unavailable: ") and SECRET not in r.text
    assert r.headers["retry-after"] == "5"
    assert farm.client.get(f"{API}/health").json()["status"] == "ok"


def test_a_broker_that_cannot_be_reached_is_a_503_without_its_password(farm: Farm) -> None:
    broker = f"redis://:{SECRET}@127.0.0.1:1/0"
    from scheduler.control import ControlPlane

    cp = ControlPlane.open(dataclasses.replace(farm.cp.settings, broker_url=broker))
    client = TestClient(create_app(cp, TOKEN), headers=AUTH)
    before = farm.counts()
    r = client.post(f"{API}/batches", content=SPEC, headers=YAML)
    assert one_line(r, 503).startswith("cannot reach the broker redis://:***@127.0.0.1:1/0")
    assert SECRET not in r.text and farm.counts() == before


def test_the_servers_error_log_masks_passwords_and_the_token() -> None:
    """uvicorn's error log (``latentfarm serve``'s) goes through the secrets filter, tracebacks included. The
    configuration is applied by hand: ``logging.config.dictConfig`` would close the test run's own handlers."""
    import io
    import logging

    from scheduler.web.server import log_config

    config = log_config((TOKEN,))
    assert config["handlers"]["default"]["filters"] == ["secrets"]
    assert config["loggers"]["uvicorn"]["handlers"] == ["default"]  # uvicorn.error logs through it
    spec = config["filters"]["secrets"]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(spec["()"](secrets=spec["secrets"]))
    logger = logging.getLogger("tests.uvicorn-error")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ConnectionError(f"redis://:{SECRET}@broker:6379/0 refused; token {TOKEN}")
    except ConnectionError:
        logger.exception("Exception in ASGI application")
    finally:
        logger.removeHandler(handler)
    err = out.getvalue()
    assert "Exception in ASGI application" in err and "redis://:***@broker:6379/0 refused; token ***" in err
    assert "Traceback" in err and SECRET not in err and TOKEN not in err
