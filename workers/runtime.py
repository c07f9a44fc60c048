"""What a worker process needs to run jobs: settings, the store, the Celery app. Made once per app and process."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from celery import Celery

from scheduler.celery_app import FarmApp
from scheduler.settings import Settings
from storage import queries
from storage.store import Store


@dataclass
class Runtime:
    settings: Settings
    store: Store
    app: Celery
    _farm_id: str | None = None

    def farm_id(self) -> str | None:
        """The store's identity, which the messages this process takes must name (read once; DatabaseUnavailable
        while the database is away)."""
        if self._farm_id is None:
            with self.store.session() as s:
                self._farm_id = queries.farm_id(s)
        return self._farm_id


_lock = threading.Lock()
_runtimes: dict[int, Runtime] = {}


def runtime_for(app: Celery) -> Runtime:
    """The runtime of ``app``: the settings of a farm's app (``scheduler.celery_app.FarmApp``), or the
    environment's for a plain Celery app."""
    with _lock:
        rt = _runtimes.get(id(app))
        if rt is None:
            settings = app.settings if isinstance(app, FarmApp) else Settings.from_env()
            rt = Runtime(settings, Store.open(settings.database_url, settings.artifact_store()), app)
            _runtimes[id(app)] = rt
        return rt
