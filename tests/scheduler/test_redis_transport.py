"""What the Redis transport takes for a message envelope (anything else on a queue is dropped, not fatal)."""

from __future__ import annotations

import json

import pytest

from scheduler.redis_transport import envelope

GOOD = {"body": "e30=", "content-type": "application/json", "content-encoding": "utf-8", "headers": {},
        "properties": {"delivery_tag": "t", "delivery_info": {"exchange": "", "routing_key": "cpu"}}}


def test_a_message_envelope_is_read() -> None:
    assert envelope(json.dumps(GOOD).encode()) == GOOD


@pytest.mark.parametrize("item", [b"not json", b"123", b"[1, 2]", b'{"a": 1}', b"\xff\xfe",
                                  json.dumps({**GOOD, "properties": 7}).encode(),
                                  json.dumps({**GOOD, "headers": []}).encode(),
                                  json.dumps({k: v for k, v in GOOD.items() if k != "body"}).encode()])
def test_anything_else_is_not(item: bytes) -> None:
    assert envelope(item) is None
