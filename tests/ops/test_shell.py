"""``pshell``: the ini's ``[pshell]`` setup (nick_jobs.ops.shell) gives a shell with the
transaction, the session, the lifecycle and ``submit`` at hand; a real ``pshell`` process
reads the commands from its standard input."""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa

from nick_jobs.db import get_engine, migrations
from tests import processes
from tests.conftest import ROOT, base_settings, write_ini

PSHELL = Path(sys.executable).with_name("pshell")


def shell_ini(tmp_path: Path) -> tuple[Path, sa.Engine]:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    engine = get_engine(url)
    migrations.upgrade(engine)
    ini = write_ini(
        tmp_path / "shell.ini",
        base_settings(
            **{
                "sqlalchemy.url": url,
                "nick_jobs.broker_url": "stub://",
                # Nobody runs the jobs: the test reads them as the shell stored them.
                "nick_jobs.embedded_worker_threads": "0",
                "nick_jobs.includes": "",
            }
        ),
    )
    with ini.open("a") as f:
        f.write("\n[pshell]\nsetup = nick_jobs.ops.shell.setup\n")
    return ini, engine


def pshell(ini: Path, commands: str) -> str:
    done = processes.run(
        [str(PSHELL), "-p", "python", str(ini)],
        input=commands,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def titles(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT title FROM jobs ORDER BY id")).scalars())


def test_a_job_submitted_in_the_shell_is_stored_when_committed(tmp_path: Path) -> None:
    ini, engine = shell_ini(tmp_path)
    out = pshell(
        ini,
        'job = submit({"action": "dummy", "steps": 1}, actor="admin", title="From the shell")\n'
        "tm.commit()\n"
        'print("STATUS", job["status"], job["actor"])\n'
        'print("SETTINGS", settings.environment, Job.__tablename__, lifecycle.CREATED)\n',
    )
    assert "STATUS created admin" in out
    assert "SETTINGS testing jobs created" in out
    assert titles(engine) == ["From the shell"]


def test_what_the_shell_leaves_uncommitted_is_not_stored(tmp_path: Path) -> None:
    ini, engine = shell_ini(tmp_path)
    out = pshell(
        ini,
        'submit({"action": "dummy"}, title="Never committed")\n'
        'print("SEEN", dbsession.execute(sa.select(sa.func.count()).select_from(Job)).scalar())\n',
    )
    assert "SEEN 1" in out  # inside the shell's transaction, the job is there
    assert titles(engine) == []


def test_a_bad_submit_in_the_shell_says_which_field(tmp_path: Path) -> None:
    ini, engine = shell_ini(tmp_path)
    out = pshell(
        ini,
        "try:\n"
        '    submit({"action": "dummy", "steps": "many"})\n'
        "except Exception as exc:\n"
        '    print("REFUSED", type(exc).__name__, exc.messages)\n'
        "\n",
    )
    assert "REFUSED ValidationError {'params': {'steps':" in out
    assert titles(engine) == []
