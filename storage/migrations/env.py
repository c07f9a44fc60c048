"""Alembic environment: migrates the database whose engine or URL the caller put in the config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from storage.db import make_engine
from storage.models import Base

config = context.config


def run_migrations() -> None:
    engine: Engine | None = config.attributes.get("engine")
    if engine is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
