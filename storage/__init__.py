"""latentfarm storage: the SQL results store (SQLAlchemy 2.0, Alembic) and the content-addressed artifact store.

ORM rows never leave this package: repository functions take a session and return plain dataclasses.
"""
