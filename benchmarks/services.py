"""What the benchmarks share: a PostgreSQL store in a throwaway schema (as the tests' ``postgres_schema``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_URL = os.environ.get("LATENTFARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_schema() -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    import sqlalchemy as sa

    schema = "lf_bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    finally:
        from storage.db import dispose_engines

        dispose_engines()
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
