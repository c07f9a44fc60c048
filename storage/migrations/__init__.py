"""Alembic migrations of the results schema. Run them with ``latentfarm db upgrade``."""
