"""The client's backend on a farm's REST API (``latentfarm.connect(url=..., token=...)``): a notebook on a laptop
reads and submits to a farm that ``latentfarm serve`` publishes, over HTTP with httpx.

Every error answer (``{"detail": "<one line>"}``) becomes the exception of ``scheduler.errors`` that the server's
status stands for (``ERRORS``), so code that catches ``NotFound`` or ``SpecError`` works on either backend. A spec
sent from a file is sent as YAML; the server takes the relative paths in it from its data directory.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from scheduler.client.backend import POLL_EVERY, SPEC_LABEL, BatchState, SpecSource, Submission, spec_dict
from scheduler.errors import (
    ArtifactCorrupt,
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    LatentfarmError,
    NotFound,
    SpecError,
    TransientError,
    UserError,
    mask_secrets,
)

API = "/api/v1"
PAGE = 1000  # items per page: the API's largest
SERVER_SPEC = "request body"  # how the server names a submitted spec in its errors
TIMEOUT = 60.0  # seconds for one request (a submit validates and plans the whole batch)

# An error answer's status -> the exception it stands for (the server's table, scheduler.errors, read backwards).
ERRORS: dict[int, type[LatentfarmError]] = {400: UserError, 401: UserError, 403: UserError, 404: NotFound,
                                            409: Conflict, 413: UserError, 415: UserError, 422: UserError,
                                            500: LatentfarmError, 503: TransientError}


class RemoteBackend:
    """The farm served at ``url`` (``http://host:8080``), with ``token`` when it needs one."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        base = url.rstrip("/")
        if base.endswith(API):
            base = base[: -len(API)]
        if not base.startswith(("http://", "https://")):
            raise UserError(f"url: expected http://host:port or https://..., got {url!r}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.where = mask_secrets(base)
        self.http = httpx.Client(base_url=base + API, headers=headers, timeout=timeout)
        try:  # a wrong URL or token is told now, not at the first read
            self.health = self._call("GET", "/health")
        except LatentfarmError:
            self.http.close()
            raise

    # -- HTTP --

    def _request(self, method: str, path: str, params: Any = None, label: str = SPEC_LABEL,
                 **kwargs: Any) -> httpx.Response:
        """The answer to one request; an error answer raised as its exception (``error_for``)."""
        try:
            response = self.http.request(method, path, params=params, **kwargs)
        except httpx.TransportError as e:
            raise TransientError(f"cannot reach the farm at {self.where}: {e or type(e).__name__}") from e
        if response.status_code >= 400:
            raise error_for(response, self.where, label)
        return response

    def _call(self, method: str, path: str, params: Any = None, label: str = SPEC_LABEL, **kwargs: Any) -> Any:
        """The JSON answer to one request."""
        return self._request(method, path, params, label, **kwargs).json()

    def _items(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a paged list, a page (PAGE items) at a time."""
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", path, {**params, "limit": PAGE, "offset": len(items)})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    # -- the Backend protocol --

    def submit(self, spec: SpecSource, no_cache: bool) -> Submission:
        kwargs: dict[str, Any]
        if isinstance(spec, Mapping):
            label, kwargs = SPEC_LABEL, {"json": spec_dict(spec)}
        else:
            label = str(spec)
            try:
                text = Path(spec).read_text(encoding="utf-8")
            except OSError as e:
                raise SpecError(label, f"cannot read spec: {e.strerror or e}") from e
            except UnicodeDecodeError as e:
                raise SpecError(label, f"not a UTF-8 text file (byte {e.start})") from e
            kwargs = {"content": text.encode(), "headers": {"Content-Type": "application/yaml"}}
        out = self._call("POST", "/batches", {"no_cache": "true"} if no_cache else None, label, **kwargs)
        return Submission(out["batch"], out["jobs"], out["cached"], out["queued"])

    def batch(self, batch_id: int) -> BatchState:
        return _state(self._call("GET", f"/batches/{batch_id}"))

    def batches(self, limit: int) -> list[BatchState]:
        return [_state(b) for b in self._call("GET", "/batches", {"limit": min(limit, PAGE)})["items"]]

    def follow(self, batch_id: int) -> Iterator[BatchState]:
        while True:
            state = self.batch(batch_id)
            yield state
            if state.settled:
                return
            time.sleep(POLL_EVERY)

    def jobs(self, batch: int | None, kind: str | None, status: str | None, params: list[str],
             inherited: bool) -> list[dict[str, Any]]:
        query = {"batch": batch, "kind": kind, "status": status, "param": params, "finals": "true",
                 "inherited": "true" if inherited else "false"}
        return self._items("/jobs", {k: v for k, v in query.items() if v is not None and v != []})

    def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/jobs/{job_id}")  # with ``inherited``
        job["metrics"] = final_values(self._items(f"/jobs/{job_id}/metrics", {}))
        return job

    def metrics(self, job_ids: list[int], batch: int | None, key: str | None) -> list[dict[str, Any]]:
        query = {"job": job_ids, "batch": batch, "key": key}
        return self._items("/metrics", {k: v for k, v in query.items() if v is not None and v != []})

    def artifacts(self, job_id: int) -> list[dict[str, Any]]:
        return self._items(f"/jobs/{job_id}/artifacts", {})

    def content(self, artifact: Mapping[str, Any]) -> bytes:
        data = self._request("GET", f"/artifacts/{artifact['id']}/content").content
        if hashlib.sha256(data).hexdigest() != artifact["sha256"]:
            raise ArtifactCorrupt(f"artifact {artifact['id']} ({artifact['name']} of job {artifact['job_id']}) "
                                  f"arrived from {self.where} with bytes that do not match its sha256")
        return data

    def compare(self, batch: int, metric: str, by: str, higher_is_better: bool, kind: str | None) -> dict[str, Any]:
        query = {"metric": metric, "by": by, "higher_is_better": "true" if higher_is_better else "false"}
        return self._call("GET", f"/batches/{batch}/compare", {**query, **({"kind": kind} if kind else {})})  # type: ignore[no-any-return]

    def search(self, batch: int, name: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{batch}/search/{name}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


def error_for(response: httpx.Response, where: str, label: str) -> LatentfarmError:
    """The exception an error answer stands for, with the server's one-line ``detail``. A spec the server refused
    names the spec as the caller gave it (its path, or ``<spec>``) instead of the server's "request body"."""
    try:
        detail = str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        detail = f"{response.status_code} {response.reason_phrase}"
    status = response.status_code
    if status == 422 and detail.startswith(SERVER_SPEC):
        return SpecError(label, detail[len(SERVER_SPEC):].lstrip(": ").replace(f"\n{SERVER_SPEC}", f"\n{label}"))
    if status in (401, 403):
        return UserError(f"{where} refused the request: {detail} (pass token= to connect(), or set "
                         "LATENTFARM_API_TOKEN)")
    if status == 503:
        lowered = detail.lower()
        cls: type[LatentfarmError] = DatabaseUnavailable if "database" in lowered else \
            BrokerUnavailable if "broker" in lowered else TransientError
        return cls(detail)
    if status == 500 and "sha256" in detail:
        return ArtifactCorrupt(detail)
    return ERRORS.get(status, UserError if status < 500 else LatentfarmError)(detail)


def final_values(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Each metric's value at its last step (``scheduler.filters.final_metrics``, on the API's answers)."""
    steps: dict[str, int] = {}
    out: dict[str, float] = {}
    for m in metrics:
        if steps.get(m["key"], -1) <= m["step"]:
            steps[m["key"]], out[m["key"]] = m["step"], m["value"]
    return out


def _state(b: Mapping[str, Any]) -> BatchState:
    return BatchState(b["id"], b["name"], b["status"], dict(b["counts"]), b["total"], b["progress"],
                      None, tuple(b.get("warnings") or ()))
