"""`latentfarm serve` attacked and signed into as a user's browser would: real server processes, real HTTP, and
headless Chromium (Debian's /usr/bin/chromium and chromedriver; without them these tests skip locally and fail in
CI).

Without a token: a page served by another HTTP server on another port of 127.0.0.1 (another origin, the same
site) tries to submit a batch (fetch with a text/plain body, fetch without a content type, an HTML form) and to
cancel a batch and its jobs and retry a failed one (HTML forms, fetch with mode no-cors). Chromium's network log
shows the server answered each with a 403; afterwards the server's database, read through its API, holds no new
batch and nothing cancelled or retried. A host name made to resolve to 127.0.0.1 (DNS rebinding) gets nothing.

With a token: nothing but the sign-in page and the static files answers without it; signing in sets an HttpOnly,
SameSite=Strict cookie that is not the token, and with it the dashboard's pages and their live polls work.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.browser import check_page, css, headless_chromium, wait_for
from tests.e2e.cli import clean_env
from tests.e2e.test_serve import Server, free_port, serving

pytestmark = pytest.mark.timeout(300)

TOKEN = "web-security-token-7c3e"
REBOUND = "rebind.test"  # Chromium resolves it to 127.0.0.1: a DNS-rebinding attacker's name
BROKEN_SPEC = "batch: broken\njobs:\n  - {name: broken, kind: noop, params: {fail: true}, max_attempts: 1}\n"
VICTIM_SPEC = "batch: victim\njobs:\n  - {name: gate, kind: noop, params: {seconds: 240}}\n" \
              "  - {name: after, kind: noop, needs: gate}\n"
EVIL = "batch: evil\njobs:\n  - {name: x, kind: noop}\n"


def request(url: str, method: str = "GET", body: str | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], str]:
    """One HTTP request, redirects not followed: status, headers (lower-case names), body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                     body=body.encode() if body is not None else None, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def root(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


# ---- the browser ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    """Headless Chromium that resolves REBOUND to 127.0.0.1 and keeps its network log."""
    with headless_chromium(f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1", network_log=True) as driver:
        yield driver


def answered(driver: Any) -> list[tuple[str, str, str, int | None]]:
    """(method, url, #fragment, status) of every request in the network log since it was last read; status None
    for a request that got no answer (never sent)."""
    sent: dict[str, tuple[str, str, str]] = {}
    status: dict[str, int] = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            req = params["request"]
            sent[params["requestId"]] = (req["method"], req["url"], req.get("urlFragment", ""))
        elif message["method"] == "Network.responseReceivedExtraInfo":
            status[params["requestId"]] = params["statusCode"]
    return [(*what, status.get(rid)) for rid, what in sent.items()]


# ---- the attacker's site -------------------------------------------------------------------------------------

class Site:
    """An HTTP server of its own on another port of 127.0.0.1 serving ``pages`` (path: HTML): another origin."""

    def __init__(self, pages: dict[str, str]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                body = pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attack_page(target: str, batch: int, jobs: dict[str, int]) -> str:
    """Forms (each a button a test clicks) and, on load, fetches: each labelled by its URL's #fragment."""
    api = f"{target}/api/v1"
    yaml_name = EVIL.replace("\n", "&#10;") + "#"  # a text/plain form's body is "name=value": YAML, a comment
    forms = {
        "submit-form": (f"{api}/batches", 'enctype="text/plain"', f'<input type="hidden" name="{yaml_name}" value="">'),
        "submit-form-urlencoded": (f"{api}/batches", "", f'<input type="hidden" name="spec" value="{EVIL}">'),
        "cancel-batch-form": (f"{api}/batches/{batch}/cancel", "", ""),
        "cancel-gate-form": (f"{api}/jobs/{jobs['gate']}/cancel", "", ""),
        "cancel-after-form": (f"{api}/jobs/{jobs['after']}/cancel", 'enctype="text/plain"', ""),
        "retry-form": (f"{api}/jobs/{jobs['broken']}/retry", "", ""),
    }
    html = "".join(f'<form method="post" action="{action}" {extra}>{fields}<button id="{name}">go</button></form>\n'
                   for name, (action, extra, fields) in forms.items())
    fetches = [
        (f"{api}/batches#submit-text-plain", '{method: "POST", body: spec, headers: {"Content-Type": "text/plain"}}'),
        (f"{api}/batches#submit-no-cors", '{method: "POST", mode: "no-cors", body: spec}'),
        (f"{api}/batches#submit-no-type", '{method: "POST", mode: "no-cors", body: new Blob([spec])}'),
        (f"{api}/batches#submit-yaml", '{method: "POST", body: spec, headers: {"Content-Type": "application/yaml"}}'),
        (f"{api}/batches/{batch}/cancel#cancel-batch-no-cors", '{method: "POST", mode: "no-cors"}'),
        (f"{api}/jobs/{jobs['gate']}/cancel#cancel-gate-no-cors", '{method: "POST", mode: "no-cors"}'),
        (f"{api}/jobs/{jobs['after']}/cancel#cancel-after-no-cors", '{method: "POST", mode: "no-cors"}'),
        (f"{api}/jobs/{jobs['broken']}/retry#retry-no-cors", '{method: "POST", mode: "no-cors"}'),
    ]
    calls = ",\n".join(f"  fetch({json.dumps(url)}, {init})" for url, init in fetches)
    return f"""<!doctype html><html><head><title>a page of another origin</title></head><body>
{html}<script>
const spec = {json.dumps(EVIL)};
window.settled = null;
Promise.allSettled([
{calls}
]).then(results => {{ window.settled = results.map(r => r.status); }});
</script></body></html>"""


FETCH_LABELS = ["submit-text-plain", "submit-no-cors", "submit-no-type", "cancel-batch-no-cors",
                "cancel-gate-no-cors", "cancel-after-no-cors", "retry-no-cors"]
FORMS = ["submit-form", "submit-form-urlencoded", "cancel-batch-form", "cancel-gate-form", "cancel-after-form",
         "retry-form"]


# ---- without a token ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A tokenless `latentfarm serve` with a failed job, and a batch whose first job runs for minutes and whose
    second waits for it: a cancel or a retry would show. (Its in-process worker runs one job at a time.)"""
    tmp = tmp_path_factory.mktemp("victim")
    yaml = {"Content-Type": "application/yaml"}
    with serving(tmp, clean_env()) as server:
        status, _, broken = server.call("POST", "/batches", BROKEN_SPEC, yaml)
        assert status == 201, broken
        assert server.wait_batch(broken["batch"])["status"] == "failed"
        status, _, out = server.call("POST", "/batches", VICTIM_SPEC, yaml)
        assert status == 201, out
        out["jobs"].update(broken["jobs"])
        deadline = time.monotonic() + 60
        while snapshot(server)["jobs"] != {"gate": ("running", False, 1), "after": ("pending", False, 0),
                                           "broken": ("failed", False, 1)}:
            assert time.monotonic() < deadline, snapshot(server)
            time.sleep(0.2)
        try:
            yield server, out
        finally:  # let the server stop at once: its running job sees the cancel at its next slice
            server.call("POST", f"/batches/{out['batch']}/cancel")


def snapshot(server: Server) -> dict[str, Any]:
    """What the attack would change, read through the API: the batches, and each job's status, cancel flag and
    attempts."""
    _, _, jobs = server.call("GET", "/jobs")
    _, _, batches = server.call("GET", "/batches")
    return {"batches": sorted((b["id"], b["name"]) for b in batches["items"]),
            "jobs": {j["name"]: (j["status"], j["cancel_requested"], j["attempts"]) for j in jobs["items"]}}


def test_a_page_of_another_origin_can_neither_submit_nor_cancel(victim: tuple[Server, dict[str, Any]],
                                                                chrome: Any) -> None:
    from selenium.webdriver.common.by import By

    server, out = victim
    before = snapshot(server)
    assert [name for _, name in before["batches"]] == ["broken", "victim"]
    site = Site({"/attack.html": attack_page(root(server), out["batch"], out["jobs"])})
    try:
        chrome.get_log("performance")  # from here on
        chrome.get(f"{site.url}/attack.html")
        wait_for(chrome, lambda d: d.execute_script("return window.settled"), "the page's fetches settled")
        time.sleep(0.5)  # the network log's last entries
        log = answered(chrome)
        for label in FETCH_LABELS:  # each reached the server and was refused
            got = [status for method, _, fragment, status in log if method == "POST" and fragment == f"#{label}"]
            assert got == [403], (label, got)
        # a fetch with a body other than a form's asks first, and is told no: the POST itself is never sent
        asked = {(method, status) for method, _, fragment, status in log if fragment == "#submit-yaml"}
        assert asked == {("OPTIONS", 403), ("POST", None)}, asked

        for form in FORMS:  # a user's click on each form; the browser then shows the server's answer
            chrome.get(f"{site.url}/attack.html")
            wait_for(chrome, lambda d: d.execute_script("return window.settled"), "the page loaded")
            chrome.find_element(By.ID, form).click()
            wait_for(chrome, lambda d: d.current_url.startswith(root(server)), f"{form} posted")
            answer = json.loads(chrome.find_element(By.TAG_NAME, "body").text)
            assert answer["detail"].startswith(f"cross-origin request refused: POST from '{site.url}'"), (form, answer)
    finally:
        site.close()
    assert snapshot(server) == before  # no new batch, nothing cancelled, nothing retried

    # the same requests without a browser's Origin (curl) still work: the refusals above were the origin's
    status, _, cancelled = server.call("POST", f"/jobs/{out['jobs']['after']}/cancel")
    assert status == 200 and cancelled["cancelled"] == [out["jobs"]["after"]]


def test_a_rebound_host_name_gets_nothing(victim: tuple[Server, dict[str, Any]], chrome: Any) -> None:
    from selenium.webdriver.common.by import By

    server, out = victim
    rebound = f"http://{REBOUND}:{server.port}"
    for path in ("/", f"/api/v1/batches/{out['batch']}", "/static/dashboard.js", "/openapi.json"):
        chrome.get(rebound + path)
        answer = json.loads(chrome.find_element(By.TAG_NAME, "body").text)
        assert answer == {"detail": f"host '{REBOUND}:{server.port}' is not served here: add it to "
                                    "LATENTFARM_ALLOWED_HOSTS to reach this server by that name"}, path
    chrome.get(root(server) + "/")  # the same server by its own name
    assert css(chrome, "table#batches")
    chrome.get_log("browser")


def test_every_answer_over_http_carries_the_security_headers(victim: tuple[Server, dict[str, Any]]) -> None:
    server, out = victim
    base = root(server)
    for method, path, headers, status in [
            ("GET", "/", {}, 200), ("GET", f"/jobs/{out['jobs']['gate']}", {}, 200), ("GET", "/jobs/999999", {}, 404),
            ("GET", "/static/dashboard.css", {}, 200), ("GET", "/api/v1/batches", {}, 200),
            ("GET", "/api/v1/jobs/999999", {}, 404), ("GET", "/openapi.json", {}, 200),
            ("GET", "/api/v1/batches", {"Host": "evil.example"}, 400),
            ("POST", "/api/v1/batches", {"Origin": "http://evil.example"}, 403),
            ("POST", "/api/v1/batches", {"Content-Type": "text/plain"}, 415)]:
        got, answer, _ = request(base + path, method, "x" if method == "POST" else None, headers)
        assert got == status, (method, path, got)
        assert answer["x-content-type-options"] == "nosniff" and answer["referrer-policy"] == "no-referrer", path
        assert "default-src 'self'" in answer["content-security-policy"], path
        assert "frame-ancestors 'none'" in answer["content-security-policy"], path


# ---- with a token ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("guarded")
    with serving(tmp, clean_env(LATENTFARM_API_TOKEN=TOKEN, LATENTFARM_LEASE_SECONDS="6")) as server:
        status, _, out = server.call("POST", "/batches", "batch: first\njobs:\n  - {name: a, kind: noop}\n",
                                     {"Content-Type": "application/yaml"})
        assert status == 201, out
        server.wait_batch(out["batch"])
        yield server


def test_with_a_token_only_the_sign_in_page_and_static_files_answer_without_it(guarded: Server) -> None:
    base = root(guarded)
    for path in ("/api/v1/health", "/api/v1/batches", "/api/v1/batches/1", "/api/v1/jobs?batch=1", "/api/v1/jobs/1",
                 "/api/v1/jobs/1/events", "/api/v1/artifacts?batch=1", "/api/v1/artifacts/1/content",
                 "/openapi.json", "/api/v1/nothing"):
        status, headers, body = request(base + path)
        assert status == 401 and headers["www-authenticate"] == "Bearer", (path, status)
        assert json.loads(body) == {"detail": "this needs a bearer token: send 'Authorization: Bearer "
                                              "<LATENTFARM_API_TOKEN>'"}
        assert "first" not in body
    for path in ("/", "/batches/1", "/jobs/1?tab=x", "/batches/1/compare"):
        status, headers, body = request(base + path)
        assert status == 303 and headers["location"].startswith("/login?next=%2F"), path
        assert "first" not in body
    for path in ("/login", "/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"):
        assert request(base + path)[0] == 200, path
    status, _, body = request(base + "/api/v1/batches", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["items"][0]["name"] == "first"


def test_signing_in_sets_a_cookie_that_opens_pages_and_the_api_but_is_not_the_token(guarded: Server) -> None:
    base = root(guarded)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": base}
    status, headers, body = request(base + "/login", "POST", "token=wrong&next=%2Fbatches%2F1", form)
    assert status == 401 and "wrong token" in body and "set-cookie" not in headers
    status, headers, _ = request(base + "/login", "POST", f"token={TOKEN}&next=%2Fbatches%2F1", form)
    assert status == 303 and headers["location"] == "/batches/1"
    cookie = headers["set-cookie"]
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes and "samesite=strict" in cookie.lower()
    assert "path=/" in cookie.lower() and TOKEN not in cookie
    session = cookie.split(";")[0]
    assert request(base + "/batches/1", headers={"Cookie": session})[0] == 200
    assert request(base + "/api/v1/jobs/1", headers={"Cookie": session})[0] == 200  # what the page's script polls
    assert request(base + "/openapi.json", headers={"Cookie": session})[0] == 200
    assert request(base + "/batches/1", headers={"Cookie": f"latentfarm_session={TOKEN}"})[0] == 303
    # writes with the cookie: from the dashboard's own origin only
    spec = "batch: second\njobs:\n  - {name: b, kind: noop}\n"
    yaml = {"Content-Type": "application/yaml", "Cookie": session}
    assert request(base + "/api/v1/batches", "POST", spec, {**yaml, "Origin": "http://127.0.0.1:1"})[0] == 403
    assert request(base + "/api/v1/batches", "POST", spec, yaml)[0] == 403  # no Origin: not from a page
    status, _, body = request(base + "/api/v1/batches", "POST", spec, {**yaml, "Origin": base})
    assert status == 201, body


def test_a_browser_signs_in_and_the_live_page_polls_with_its_cookie(guarded: Server, chrome: Any) -> None:
    from selenium.webdriver.common.by import By

    status, _, out = guarded.call("POST", "/batches", "batch: live\njobs:\n  - {name: nap, kind: noop, "
                                  "params: {seconds: 10}}\n", {"Content-Type": "application/yaml"})
    assert status == 201, out
    base = root(guarded)
    chrome.delete_all_cookies()
    chrome.get(f"{base}/batches/{out['batch']}")
    wait_for(chrome, lambda d: "/login?next=" in d.current_url, "the sign-in page")
    chrome.find_element(By.NAME, "token").send_keys("not the token")
    chrome.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(chrome, lambda d: css(d, "#login-error"), "the sign-in page saying the token is wrong")
    assert chrome.find_element(By.ID, "login-error").text == "wrong token"
    chrome.get_log("browser")  # the 401 of that answer is expected there
    chrome.find_element(By.NAME, "token").send_keys(TOKEN)
    chrome.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait_for(chrome, lambda d: d.current_url == f"{base}/batches/{out['batch']}", "back where the user was going")
    session = chrome.get_cookie("latentfarm_session")
    assert session is not None and session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert session["value"] != TOKEN and TOKEN not in chrome.execute_script("return document.cookie")

    summary = chrome.find_element(By.CSS_SELECTOR, "section#summary")
    bar = summary.find_element(By.CSS_SELECTOR, "progress.progress")
    drawn = float(bar.get_attribute("value"))
    wait_for(chrome, lambda d: float(bar.get_attribute("value")) > drawn, "the progress polled from the API",
             timeout=15)
    check_page(chrome)  # no refused poll, no policy violation

    chrome.find_element(By.CSS_SELECTOR, "form#logout button").click()
    wait_for(chrome, lambda d: "/login" in d.current_url, "signed out")
    chrome.get(f"{base}/batches/{out['batch']}")
    wait_for(chrome, lambda d: "/login?next=" in d.current_url, "the sign-in page again")
    guarded.call("POST", f"/batches/{out['batch']}/cancel")
    chrome.get_log("browser")

