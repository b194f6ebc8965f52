"""Alembic environment: runs on the connection handed in by ``Catalog.migrate``."""

from __future__ import annotations

from alembic import context

from consult.catalog.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic revision --autogenerate` by hand
    from sqlalchemy import create_engine

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite://"
    connection = create_engine(url).connect()

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
