"""One handle on the whole store: the database engine and the artifact store (a directory or a bucket)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage import migrate
from storage.artifacts import ArtifactStore, open_artifacts
from storage.db import engine_for, session_scope


@dataclass(frozen=True)
class Store:
    """The results database and the artifact store, opened from their URL and location."""

    engine: Engine
    artifacts: ArtifactStore

    @classmethod
    def open(cls, database_url: str, artifacts: str | os.PathLike[str] | ArtifactStore,
             upgrade: bool = False) -> Store:
        """Open the store; with ``upgrade`` apply pending migrations first (the embedded default does).
        ``artifacts``: an artifact store, or its location (a directory, or ``s3://bucket/prefix`` with the AWS
        defaults: ``Settings.artifact_store`` adds the farm's endpoint and cache)."""
        engine = engine_for(database_url)
        if upgrade:
            if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
                Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            migrate.upgrade(engine)
        return cls(engine, artifacts if isinstance(artifacts, ArtifactStore) else open_artifacts(artifacts))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.engine) as s:
            yield s
