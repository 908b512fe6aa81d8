"""Running the Alembic migrations from code (``nick-jobs migrate``, development start-up)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.config import Config

from alembic import command

# The migrations are package data, named as Alembic names a package resource: the folder
# alembic/ inside the installed nick_jobs package. A wheel carries them there; in the
# checkout (and an editable install of it) nick_jobs/alembic is the top-level alembic/
# folder. `nick-jobs migrate` and the development start-up always run these, the ones of
# the code that is installed, whatever an ini's [alembic] section says (that section is
# for the `alembic` command itself).
SCRIPT_LOCATION = "nick_jobs:alembic"


def alembic_config(engine: sa.Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
