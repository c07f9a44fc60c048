"""kombu's Redis transport, with one change: an item on a queue that is not a message envelope is dropped.

Anyone who can write to the broker can push anything onto a queue's Redis list. kombu reads each item as a JSON
message envelope, and an item that is not JSON, or not an envelope (``123``), raises inside the worker's event
loop: Celery calls that unrecoverable and the worker process exits. Here such an item is dropped instead: logged
(the first in full, truncated; then a count every ``LOG_EVERY``), counted in ``dropped``, and the worker goes on.
Messages are otherwise read exactly as kombu reads them (the same keys, priorities and acknowledgements), so
Celery's own clients (Flower, ``celery inspect``) and other kombu clients interoperate unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from kombu.transport import redis
from kombu.utils.encoding import bytes_to_str

log = logging.getLogger(__name__)
LOG_EVERY = 100

_lock = threading.Lock()
dropped = 0  # items dropped by this process


def envelope(item: bytes | str) -> dict[str, Any] | None:
    """The message envelope ``item`` holds, or None for anything kombu could not deliver."""
    try:
        payload = json.loads(bytes_to_str(item))
    except (ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(payload, dict) and isinstance(payload.get("properties"), dict)
            and isinstance(payload.get("headers", {}), dict) and "body" in payload
            and isinstance(payload["properties"].get("delivery_info", {}), dict)):
        return None
    return payload


def _drop(item: bytes | str, queue: str) -> None:
    global dropped
    with _lock:
        dropped += 1
        count = dropped
    if count == 1:
        log.error("dropped an item of queue %r that is not a message (%d bytes: %.80r); further ones are counted",
                  queue, len(item), item)
    elif count % LOG_EVERY == 0:
        log.error("dropped %d items that were not messages", count)


class Channel(redis.Channel):
    """A Redis channel that drops an item that is not a message envelope rather than failing the event loop."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next iteration reconnects
                raise
            if not dest__item:
                raise redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = envelope(item)
            if payload is None:
                _drop(item, dest)
            else:
                self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.6: a pending re-auth goes out now
            if flush is not None:
                flush()

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        while True:
            with self.conn_or_acquire() as client:
                for pri in self.priority_steps:
                    item = client.rpop(self._q_for_pri(queue, pri))
                    if item:
                        self._maybe_update_queues_expire(client, queue)
                        payload = envelope(item)
                        if payload is not None:
                            return payload
                        _drop(item, queue)
                        break  # look again from the highest priority
                else:
                    self._maybe_update_queues_expire(client, queue)
                    raise redis.Empty()


class Transport(redis.Transport):
    Channel = Channel
