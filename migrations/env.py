"""Alembic environment of the session catalog.

Two ways in:

* programmatically (``onthefly.store.catalog.migrate``): the caller opens the
  connection and passes it as ``config.attributes["connection"]``; the
  migrations run inside the caller's transaction;
* the ``alembic`` command, pointed at a catalog either with
  ``sqlalchemy.url = sqlite:///path/to/catalog.sqlite`` in an ini file whose
  ``script_location`` is this folder, or with ``-x db=path/to/catalog.sqlite``.

``render_as_batch`` is on because SQLite alters most tables only by copying
them.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from onthefly.store.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    db = context.get_x_argument(as_dictionary=True).get("db")
    if db:
        return "sqlite:///" + db
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no catalog to migrate: pass -x db=path/to/catalog.sqlite or set sqlalchemy.url")
    return url


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, render_as_batch=True, **kwargs)


def run_offline() -> None:
    """Print the SQL of the migrations instead of running it (``alembic upgrade --sql``)."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the given connection, or on a new one to the configured file."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
