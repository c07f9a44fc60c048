"""The dashboard in a real browser: a real batch run with ``latentfarm submit``, served by ``latentfarm serve``,
browsed in headless Chromium through selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (/usr/bin/chromium, /usr/bin/chromedriver): without them the
tests skip locally and fail in CI. Selenium is given both paths, so it never downloads a browser or a driver.
The pages' screenshots (a job, the jobs table, the curves, the scatter, the parallel coordinates, the galleries, the
buttons' answers) go to $LATENTFARM_TEST_ARTIFACTS when set, else to pytest's tmp_path; each test prints where
(``pytest -s`` or ``-rA`` shows it).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import check_page, css, headless_chromium, wait_for
from tests.e2e.cli import clean_env, latentfarm_bin, run_json

pytestmark = pytest.mark.timeout(300)


# Two trainings (a z_dim sweep, for the compare view), a cluster sweep over k, and two samplers of the z_dim=4
# model (the batch page's sample grids): about 40 s on a slow 2-core machine.
SPEC = """\
batch: dashboard-e2e
defaults:
  max_attempts: 1
  params: {dataset: digits}
jobs:
  - name: train
    kind: train
    params: {model: conv_ae, epochs: 3, batch_size: 64, limit: 600}
    sweep: {z_dim: [2, 4]}
  - name: encode
    kind: encode
    needs: ["train[z_dim=4]"]
  - name: sample
    kind: sample
    needs: [encode]
    params: {n: 100, grid: 36}
    sweep: {sampler: [normal, fitted_normal]}
  - name: cluster
    kind: cluster
    params: {limit: 600, k: [4, 8, 10], n_init: 2, plot_sample: 300}
"""


@dataclass
class Server:
    url: str
    env: dict[str, str]
    batch: int
    jobs: dict[str, int]
    output: list[str]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def submit(self, spec: str) -> dict[str, Any]:
        req = urllib.request.Request(self.url + "/api/v1/batches", data=spec.encode(), method="POST",
                                     headers={"Content-Type": "application/yaml"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The batch run to its end by ``latentfarm submit``, then ``latentfarm serve`` on a free port over it."""
    tmp = tmp_path_factory.mktemp("dashboard")
    # a short lease: a running job's progress reaches the database every second, not every 5 s
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp / 'lf.db'}", LATENTFARM_ARTIFACTS=str(tmp / "artifacts"),
                    LATENTFARM_LEASE_SECONDS="6")
    (tmp / "spec.yaml").write_text(SPEC)
    submitted = run_json(["submit", "spec.yaml"], tmp, env)
    assert submitted["status"] == "succeeded", submitted
    port = _free_port()
    proc = subprocess.Popen([latentfarm_bin(), "serve", "--port", str(port)], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/api/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"latentfarm serve did not answer on {url} (exit {proc.poll()}):\n"
                                     + "".join(output))
            time.sleep(0.3)
        assert any(url in line for line in output), f"serve did not print its URL {url}:\n{''.join(output)}"
        yield Server(url, env, submitted["batch_id"], submitted["jobs"], output)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


def test_the_console_check_sees_errors(browser: Any, server: Server) -> None:
    """check_page would pass vacuously if the browser's console could not be read: an error put there is seen."""
    browser.get(server.url + "/")
    browser.execute_script("console.error('latentfarm console probe')")
    with pytest.raises(AssertionError, match="latentfarm console probe"):
        check_page(browser)
    check_page(browser)  # read once: the log is empty again


def test_pages_run_under_the_content_security_policy(browser: Any, server: Server) -> None:
    """Every page comes with a policy that allows no inline script or style and no framing, and the browser
    enforces it: what it blocks is reported in the console, which check_page reads on every page."""
    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        policy = r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    browser.get(server.url + "/")
    check_page(browser)
    browser.execute_script("const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                           "document.head.appendChild(s);")
    assert browser.execute_script("return window.__inline === undefined")
    with pytest.raises(AssertionError, match="Content Security Policy"):
        check_page(browser)


def images_loaded(driver: Any) -> list[str]:
    """Wait until every img.artifact has loaded; return their names (alt)."""
    script = "return [...document.querySelectorAll('img.artifact')].map(i => [i.alt, i.complete, i.naturalWidth, " \
             "i.naturalHeight])"
    wait_for(driver, lambda d: all(c and w > 0 and h > 0 for _, c, w, h in d.execute_script(script)),
             "every img.artifact loaded with a size")
    return [alt for alt, *_ in driver.execute_script(script)]


def screenshot_dir(tmp_path: Path) -> Path:
    where = Path(os.environ.get("LATENTFARM_TEST_ARTIFACTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def shoot(driver: Any, tmp_path: Path, name: str) -> Path:
    """A screenshot of the whole page (up to 6000 px high) as ``name``.png; its path is printed."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 120, 800), 6000))
    shot = screenshot_dir(tmp_path) / f"{name}.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    driver.set_window_size(1280, 1000)
    print(f"dashboard screenshot: {shot}")
    return shot


def drawn(driver: Any, selector: str) -> list[list[float]]:
    """The bounding box (x, y, width, height) of each SVG element the selector finds, as the browser laid it out."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll(arguments[0])].map(e => { const b = e.getBBox();"
        " return [b.x, b.y, b.width, b.height]; })", selector)


def test_from_the_batches_to_a_train_job_with_its_curves_and_images(browser: Any, server: Server,
                                                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    row = wait_for(browser, lambda d: css(d, f"table#batches tr[data-batch-id='{server.batch}']"),
                   "the batch's row")[0]
    assert "dashboard-e2e" in row.text
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "succeeded"
    assert float(row.find_element(By.CSS_SELECTOR, "progress.progress").get_attribute("value")) == 1.0
    check_page(browser)

    row.find_element(By.LINK_TEXT, "dashboard-e2e").click()
    wait_for(browser, lambda d: d.current_url.endswith(f"/batches/{server.batch}"), "the batch page")
    jobs = css(browser, "table#jobs tr[data-job-id]")
    assert len(jobs) == len(server.jobs)
    assert all(j.find_element(By.CSS_SELECTOR, ".status").text == "succeeded" for j in jobs)
    check_page(browser)

    browser.find_element(By.LINK_TEXT, "train[z_dim=2]").click()
    job_id = server.jobs["train[z_dim=2]"]
    wait_for(browser, lambda d: d.current_url.endswith(f"/jobs/{job_id}"), "the train job's page")
    assert browser.find_element(By.CSS_SELECTOR, "section#job .status").text == "succeeded"
    charts = wait_for(browser, lambda d: css(d, "svg.chart"), "a metric chart")
    loss = next(c for c in charts if c.get_attribute("aria-label") == "loss per epoch")
    series = loss.find_elements(By.CSS_SELECTOR, "g.series")
    assert {s.get_attribute("data-series") for s in series} == {"loss", "val_loss"}
    for line in loss.find_elements(By.CSS_SELECTOR, "polyline"):
        assert len(line.get_attribute("points").split()) == 3  # three epochs
        box = browser.execute_script("const b = arguments[0].getBBox(); return [b.width, b.height];", line)
        assert box[0] > 0 and box[1] > 0, box
    assert loss.size["width"] > 100 and loss.size["height"] > 50
    assert "reconstructions.png" in images_loaded(browser)
    assert "test_loss" in browser.find_element(By.ID, "final-metrics").text
    assert "model.keras" in browser.find_element(By.ID, "artifacts").text
    events = browser.find_element(By.ID, "events").text
    assert "epoch 3/3" in events
    check_page(browser)

    shoot(browser, tmp_path, f"dashboard-job-{job_id}")


def test_cluster_job_draws_its_k_sweep(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/jobs/{server.jobs['cluster']}")
    labels = {c.get_attribute("aria-label"): c for c in wait_for(browser, lambda d: css(d, "svg.chart"), "charts")}
    assert {"inertia per k", "silhouette per k"} <= set(labels)
    inertia = labels["inertia per k"].find_element(By.CSS_SELECTOR, "polyline")
    assert len(inertia.get_attribute("points").split()) == 3  # k = 4, 8, 10
    assert set(images_loaded(browser)) == {"sweep.png", "clusters_2d.png"}
    check_page(browser)


def test_compare_view_from_the_batch_form(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{server.url}/batches/{server.batch}")
    form = wait_for(browser, lambda d: css(d, "form#compare-form"), "the compare form")[0]
    Select(form.find_element(By.NAME, "metric")).select_by_value("test_loss")
    Select(form.find_element(By.NAME, "by")).select_by_value("z_dim")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda d: "/compare?" in d.current_url, "the compare page")
    rows = css(browser, "table#compare tbody tr")
    assert [r.get_attribute("data-value") for r in rows] == ["2", "4"]
    assert len(css(browser, "table#compare tr.best")) == 1
    line = browser.find_element(By.CSS_SELECTOR, "svg.chart polyline")
    assert len(line.get_attribute("points").split()) == 2
    assert browser.execute_script("return arguments[0].getBBox().width", line) > 0
    check_page(browser)


def test_jobs_table_sorts_and_filters_by_clicks(browser: Any, server: Server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{server.url}/batches/{server.batch}")
    table = wait_for(browser, lambda d: css(d, "table#jobs"), "the jobs table")[0]
    heads = [h.text for h in table.find_elements(By.CSS_SELECTOR, "th.metric-col")]
    assert "test_loss" in heads and len(heads) <= 3  # a few metrics, not every one
    table.find_element(By.CSS_SELECTOR, "th a[data-sort='m:test_loss']").click()
    wait_for(browser, lambda d: "sort=m%3Atest_loss" in d.current_url, "sorted by test_loss")
    cells = [c.text for c in css(browser, "table#jobs td[data-metric='test_loss']")]
    losses = [float(c) for c in cells if c]
    assert len(losses) == 2 and losses == sorted(losses) and cells[:2] == [c for c in cells if c]
    form = browser.find_element(By.ID, "jobs-filter")
    Select(form.find_element(By.NAME, "kind")).select_by_value("sample")
    form.find_element(By.NAME, "param").send_keys("z_dim=4")  # inherited by the samplers from their training
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda d: "kind=sample" in d.current_url, "the filtered table")
    rows = css(browser, "table#jobs tr[data-job-id]")
    assert sorted(r.find_element(By.CSS_SELECTOR, "td.name").text for r in rows) == [
        "sample[sampler=fitted_normal]", "sample[sampler=normal]"]
    assert all(r.find_element(By.CSS_SELECTOR, "td[data-param='z_dim']").text == "4 ↑" for r in rows)
    check_page(browser)
    shoot(browser, tmp_path, f"dashboard-batch-{server.batch}-table")


def test_curves_scatter_and_parallel_views_draw_every_training(browser: Any, server: Server, tmp_path: Path
                                                               ) -> None:
    from selenium.webdriver.common.by import By

    base = f"{server.url}/batches/{server.batch}"
    browser.get(base)
    wait_for(browser, lambda d: css(d, "nav#views a[data-view='curves']"), "the views' tabs")[0].click()
    wait_for(browser, lambda d: d.current_url.endswith("/curves"), "the curves view")
    chart = browser.find_element(By.CSS_SELECTOR, "svg.chart.curves")
    assert "val_loss per epoch" in chart.get_attribute("aria-label")
    series = chart.find_elements(By.CSS_SELECTOR, "g.series")
    assert len(series) == 2  # both trainings, coloured by z_dim
    assert {s.find_element(By.TAG_NAME, "polyline").get_attribute("stroke") for s in series} == set(
        c.get_attribute("fill") for c in chart.find_elements(By.CSS_SELECTOR, "g.legend rect.swatch"))
    for line in chart.find_elements(By.TAG_NAME, "polyline"):
        assert len(line.get_attribute("points").split()) == 3  # three epochs
    boxes = drawn(browser, "svg.curves g.series polyline")
    assert len(boxes) == 2 and all(w > 100 and h > 0 for _, _, w, h in boxes), boxes
    assert all(w > 0 for _, _, w, _ in drawn(browser, "svg.curves g.series circle"))
    check_page(browser)
    shoot(browser, tmp_path, f"dashboard-batch-{server.batch}-curves")

    browser.get(f"{base}/scatter?metric=test_loss&by=z_dim")
    points = drawn(browser, "svg.scatter circle")
    assert len(points) == 2 and all(w > 0 for _, _, w, _ in points)
    assert points[0][0] < points[1][0]  # z_dim 2 left of z_dim 4
    check_page(browser)
    shoot(browser, tmp_path, f"dashboard-batch-{server.batch}-scatter")

    browser.get(f"{base}/parallel?metric=test_loss")
    lines = browser.find_elements(By.CSS_SELECTOR, "svg.parallel g.lines polyline")
    assert len(lines) == 2 and all(len(line.get_attribute("points").split()) == 2 for line in lines)  # z_dim, loss
    assert all(w > 0 for _, _, w, _ in drawn(browser, "svg.parallel g.lines polyline"))
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, "svg.parallel text.axis-name")] == [
        "z_dim", "test_loss"]
    check_page(browser)
    shoot(browser, tmp_path, f"dashboard-batch-{server.batch}-parallel")


def test_gallery_puts_each_jobs_image_side_by_side_with_its_params_and_scores(browser: Any, server: Server,
                                                                              tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/batches/{server.batch}")
    wait_for(browser, lambda d: css(d, "nav#views a[data-view='gallery']"), "the views' tabs")[0].click()
    wait_for(browser, lambda d: d.current_url.endswith("/gallery"), "the gallery")
    assert images_loaded(browser) == ["clusters_2d.png"]  # the first kind's hinted image
    browser.get(f"{server.url}/batches/{server.batch}/gallery?kind=sample&image=samples.png&sort=nn_dist")
    assert images_loaded(browser) == ["samples.png", "samples.png"]
    sizes = browser.execute_script("return [...document.querySelectorAll('#gallery img.artifact')]"
                                   ".map(i => [i.naturalWidth, i.naturalHeight, i.width])")
    assert all(w > 100 and h > 100 and shown > 50 for w, h, shown in sizes), sizes
    captions = [f.text for f in css(browser, "#gallery figure")]
    assert any("fitted_normal" in c for c in captions) and all("nn_dist" in c and "z_dim" in c for c in captions)
    assert all(f.find_element(By.CSS_SELECTOR, "dl.params .inherited") for f in css(browser, "#gallery figure"))
    check_page(browser)
    shoot(browser, tmp_path, f"dashboard-batch-{server.batch}-gallery-samples")
    browser.get(f"{server.url}/batches/{server.batch}/gallery?kind=train&image=reconstructions.png")
    assert images_loaded(browser) == ["reconstructions.png", "reconstructions.png"]
    check_page(browser)
    shoot(browser, tmp_path, f"dashboard-batch-{server.batch}-gallery-reconstructions")


ACTIONS_SPEC = """\
batch: dashboard-actions
jobs:
  - {name: broken, kind: noop, params: {fail: true}, max_attempts: 1}
  - {name: nap, kind: noop, params: {seconds: 120}}
"""
TOKEN = "dashboard-browser-token-3b9d"


def test_a_signed_in_browser_cancels_and_retries_with_the_buttons(browser: Any, tmp_path: Path) -> None:
    """On a server with a token: the buttons' POSTs go through the API with the session cookie alone (the page's
    script never holds the token), from the page's own origin, as the guard requires."""
    from selenium.webdriver.common.by import By

    from tests.e2e.test_serve import serving

    env = clean_env(LATENTFARM_API_TOKEN=TOKEN, LATENTFARM_LEASE_SECONDS="6")
    with serving(tmp_path, env) as guarded:
        status, _, out = guarded.call("POST", "/batches", ACTIONS_SPEC, {"Content-Type": "application/yaml"})
        assert status == 201, out
        nap, broken = out["jobs"]["nap"], out["jobs"]["broken"]

        def job(i: int) -> dict[str, Any]:
            return guarded.call("GET", f"/jobs/{i}")[2]  # type: ignore[no-any-return]

        deadline = time.monotonic() + 60
        while job(broken)["status"] != "failed" or job(nap)["status"] != "running":
            assert time.monotonic() < deadline, (job(broken), job(nap))
            time.sleep(0.3)
        base = f"http://127.0.0.1:{guarded.port}"
        browser.delete_all_cookies()
        browser.get(f"{base}/batches/{out['batch']}")
        wait_for(browser, lambda d: "/login?next=" in d.current_url, "the sign-in page")
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait_for(browser, lambda d: css(d, "table#jobs"), "the batch page, signed in")
        said = browser.find_element(By.ID, "action-result")

        browser.find_element(By.CSS_SELECTOR, f"button[data-action='cancel'][data-job-id='{nap}']").click()
        wait_for(browser, lambda d: said.text, "the cancel's answer")
        assert said.text in ("1 running job asked to stop", "cancelled 1 job"), said.text
        deadline = time.monotonic() + 30
        while job(nap)["status"] != "cancelled":
            assert time.monotonic() < deadline, job(nap)
            time.sleep(0.3)

        before = said.text
        browser.find_element(By.CSS_SELECTOR, f"button[data-action='retry'][data-job-id='{broken}']").click()
        wait_for(browser, lambda d: said.text != before, "the retry's answer")
        assert said.text == f"job {broken} queued again"
        assert not browser.find_element(By.CSS_SELECTOR, f"button[data-job-id='{broken}']").is_displayed()
        deadline = time.monotonic() + 30
        while job(broken)["attempts"] != 2 or job(broken)["status"] != "failed":  # it ran again, and failed again
            assert time.monotonic() < deadline, job(broken)
            time.sleep(0.3)
        check_page(browser)
        shoot(browser, tmp_path, f"dashboard-batch-{out['batch']}-actions")
        browser.delete_all_cookies()
        browser.get("about:blank")  # before this server stops: its page's polls would fail in the next test's log
        browser.get_log("browser")


LIVE_SPEC = """\
batch: dashboard-live
jobs:
  - {name: nap, kind: noop, params: {seconds: 8}}
  - {name: after, kind: noop, params: {seconds: 4}, needs: [nap]}
"""


def test_live_progress_without_reloading(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    wait_for(browser, lambda d: css(d, "table#batches"), "the batches page")
    submitted = server.submit(LIVE_SPEC)
    batch, after = submitted["batch"], submitted["jobs"]["after"]
    wait_for(browser, lambda d: d.find_element(By.ID, "new-batches").is_displayed(), "the note of a new batch")

    browser.get(server.url + "/")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-batch-id='{batch}']")
    assert row.find_element(By.CSS_SELECTOR, ".status").text in ("pending", "running")
    browser.execute_script("window.__drawn = 'once';")  # gone if the page reloads
    bar = row.find_element(By.CSS_SELECTOR, "progress.progress")
    drawn = float(bar.get_attribute("value"))  # as the server drew it
    wait_for(browser, lambda d: float(bar.get_attribute("value")) > drawn, "the row's progress moving", timeout=12)
    shown = browser.execute_script(  # one read: the script may redraw the row between two
        "const r = arguments[0]; return [[...r.querySelectorAll('[data-count]')].map(c => Number(c.textContent)),"
        " r.querySelector('progress').value, r.querySelector('.pct').textContent];", row)
    assert sum(shown[0]) == 2, shown  # the counts were redrawn together: still both jobs
    assert shown[2] == f"{math.floor(shown[1] * 100 + 0.5)}%", shown  # as Math.round
    assert browser.execute_script("return window.__drawn") == "once"

    # 'after' waits for 'nap' (up to 8 s) and then runs 4 s: its page, opened now, must reload itself at the end
    browser.get(f"{server.url}/jobs/{after}")
    assert browser.find_element(By.CSS_SELECTOR, "section#job").get_attribute("data-status") in ("pending", "queued",
                                                                                                  "running")
    wait_for(browser, lambda d: css(d, "section#job[data-status='succeeded'] .pct"),
             "the job page reloaded with the job finished", timeout=25)
    assert browser.find_element(By.CSS_SELECTOR, "section#job .pct").text == "100%"
    assert "value" in browser.find_element(By.ID, "final-metrics").text
    assert server.get(f"/api/v1/batches/{batch}")["status"] == "succeeded"
    check_page(browser)
