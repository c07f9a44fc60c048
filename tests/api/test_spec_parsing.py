"""Submitted specs are parsed in a separate process, bounded in time and memory (``scheduler.web.spec_parser``):
past a bound the request is a 413 and nothing is written, a parser past its time is killed and replaced, and
requests beyond the queue are told to retry while reads go on. In process over ASGI, on the API tests' farm."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from scheduler.web.app import create_app
from scheduler.web.spec_parser import SpecParser
from tests.api.conftest import API, AUTH, TOKEN, YAML, Farm
from tests.api.test_security import SPEC, one_line

pytestmark = pytest.mark.timeout(300)


def accepted(farm: Farm, client: TestClient) -> None:
    """SPEC is taken; its job runs in the farm's worker, and has ended when this returns (rows are counted)."""
    r = client.post(f"{API}/batches", content=SPEC, headers=YAML)
    assert r.status_code == 201, r.text
    farm.wait(r.json()["batch"])


def ones(size: int) -> str:
    """YAML that takes PyYAML the longest per byte: ``[1,1,1,...]`` (about 2 s with libyaml, 10 s without, per MiB)."""
    head = "batch: x\njobs: ["
    return head + "1," * ((size - len(head) - 2) // 2) + "]\n"


def test_a_spec_that_parses_too_long_is_a_413_and_its_parser_is_killed(farm: Farm) -> None:
    parser = SpecParser(workers=1, seconds=0.5)
    client = TestClient(create_app(farm.cp, TOKEN, parser=parser), headers=AUTH)
    accepted(farm, client)
    first = parser.last_pid
    assert first is not None
    t = time.monotonic()
    before = farm.counts()
    r = client.post(f"{API}/batches", content=ones(1 << 20), headers=YAML)
    assert one_line(r, 413) == "request body: parsing it took over 0.5 s, the most allowed: send a smaller spec"
    assert time.monotonic() - t < 5 and farm.counts() == before
    assert gone(first)
    accepted(farm, client)  # by a new parser
    assert parser.last_pid != first
    parser.close()


def test_a_spec_that_needs_too_much_memory_to_parse_is_a_413(farm: Farm) -> None:
    parser = SpecParser(workers=1, memory=64 << 20)
    client = TestClient(create_app(farm.cp, TOKEN, parser=parser), headers=AUTH)
    before = farm.counts()
    r = client.post(f"{API}/batches", content=ones(1 << 20), headers=YAML)
    assert one_line(r, 413) == "request body: parsing it needs over 64 MiB, the most allowed: send a smaller spec"
    assert farm.counts() == before
    assert parser.last_pid is not None and gone(parser.last_pid)  # not reused
    accepted(farm, client)
    parser.close()


def test_parses_beyond_the_queue_are_told_to_retry(farm: Farm) -> None:
    parser = SpecParser(workers=1, waiting=0, seconds=1.5)  # the hog takes 2 s or more
    client = TestClient(create_app(farm.cp, TOKEN, parser=parser), headers=AUTH)
    slow: list[int] = []
    hog = threading.Thread(target=lambda: slow.append(
        client.post(f"{API}/batches", content=ones(1 << 20), headers=YAML).status_code))
    hog.start()
    deadline = time.monotonic() + 10
    while parser.last_pid is None and time.monotonic() < deadline:  # the first parse is under way
        time.sleep(0.02)
    time.sleep(0.3)
    r = client.post(f"{API}/batches", content=SPEC, headers=YAML)
    assert one_line(r, 503).endswith("try again shortly") and r.headers["retry-after"] == "5"
    assert client.get(f"{API}/health").status_code == 200  # reads go on meanwhile
    hog.join(30)
    assert slow == [413]
    parser.close()


def gone(pid: int, seconds: float = 5.0) -> bool:
    """Whether process ``pid`` has exited (or is a zombie) within ``seconds`` (Linux)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(") ", 1)[1].startswith(("Z", "X")):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_an_app_started_again_after_its_shutdown_keeps_its_parser_processes(farm: Farm) -> None:
    """The app's shutdown stops its idle parsers; started again (every ``with TestClient`` starts it), it keeps
    the processes it starts for the next parses instead of stopping each after one."""
    parser = SpecParser(workers=1)
    app = create_app(farm.cp, TOKEN, parser=parser)
    for _ in range(2):
        with TestClient(app, headers=AUTH) as client:
            accepted(farm, client)
            first = parser.last_pid
            accepted(farm, client)
            assert first is not None and parser.last_pid == first  # reused
        assert gone(first)  # stopped with the app
