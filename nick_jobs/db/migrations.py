"""Running the Alembic migrations from code (``nick-jobs migrate``, development start-up)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config

from alembic import command

# The migrations live beside the package in the source tree (the top-level alembic/).
_CANDIDATES = (Path(__file__).resolve().parents[2] / "alembic", Path.cwd() / "alembic")


def script_location() -> Path:
    """The alembic/ folder: next to the package (checkout, editable install) or here."""
    for candidate in _CANDIDATES:
        if (candidate / "env.py").is_file():
            return candidate
    searched = ", ".join(str(c) for c in _CANDIDATES)
    raise FileNotFoundError(
        f"no alembic/ migrations folder found (looked in {searched}); run from the "
        "nick-jobs checkout the package was installed from"
    )


def alembic_config(engine: sa.Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
