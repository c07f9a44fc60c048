"""One handle on the whole store: the database engine and the artifact directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage import migrate
from storage.artifacts import ArtifactStore
from storage.db import engine_for, session_scope


@dataclass(frozen=True)
class Store:
    """The results database and the artifact store, opened from their URL and path."""

    engine: Engine
    artifacts: ArtifactStore

    @classmethod
    def open(cls, database_url: str, artifacts_dir: str | os.PathLike[str], upgrade: bool = False) -> Store:
        """Open the store; with ``upgrade`` apply pending migrations first (the embedded default does)."""
        engine = engine_for(database_url)
        if upgrade:
            if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
                Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            migrate.upgrade(engine)
        return cls(engine, ArtifactStore(artifacts_dir))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.engine) as s:
            yield s
