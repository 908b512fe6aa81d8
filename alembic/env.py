"""Alembic environment: the target is nick_jobs' metadata; the URL comes from the app."""

from __future__ import annotations

import sqlalchemy as sa

from alembic import context
from nick_jobs.db import get_engine
from nick_jobs.db.meta import Base

config = context.config
target_metadata = Base.metadata


def _engine() -> sa.Engine:
    engine: sa.Engine | None = config.attributes.get("engine")
    if engine is not None:
        return engine
    url = config.get_main_option("sqlalchemy.url")
    if not url and config.config_file_name:
        # `alembic -c development.ini ...`: read the app's settings and env overrides.
        from pyramid.paster import get_appsettings

        from nick_jobs.settings import apply_environment

        url = apply_environment(get_appsettings(config.config_file_name))["sqlalchemy.url"]
    if not url:
        raise RuntimeError("no sqlalchemy.url: name the database in the ini or the environment")
    return get_engine(url)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite can't ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
