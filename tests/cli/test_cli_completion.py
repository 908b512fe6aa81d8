"""``nick-jobs completion``: the scripts it prints, the bash one run by bash itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nick_jobs.cli.admin import build_parser
from nick_jobs_client import JOB_STATUSES, LOG_LEVELS
from nick_jobs_client.cli.commands import COMMANDS, EXIT_USAGE
from nick_jobs_client.cli.completion import command_specs
from tests import processes
from tests.cli.test_client_cli import SCRIPT
from tests.conftest import ROOT

BASH = shutil.which("bash")
FISH = shutil.which("fish")
ZSH = shutil.which("zsh")


def completion(shell: str) -> subprocess.CompletedProcess:
    return processes.run(
        [str(SCRIPT), "completion", shell],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> Path:
    proc = completion("bash")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path_factory.mktemp("completion") / "nick-jobs.bash"
    path.write_text(proc.stdout)
    return path


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (``nick-jobs`` first): the completion
    function the script registered for ``nick-jobs``, called as bash's completion calls it."""
    program = (
        'source "$1"; shift\n'
        # The function bash would call, as `complete -p` reports it.
        "spec=$(complete -p nick-jobs) || exit 3\n"
        "function=${spec##*-F }; function=${function%% *}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n'
        'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        '"$function" nick-jobs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program, "bash", str(script), *words],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return sorted(line for line in proc.stdout.splitlines() if line)


def test_the_bash_script_is_valid_bash(bash_script):
    proc = subprocess.run([BASH, "-n", str(bash_script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    registered = subprocess.run(
        [BASH, "--norc", "-c", f'source "{bash_script}"; complete -p nick-jobs'],
        capture_output=True,
        text=True,
    )
    assert registered.stdout == "complete -o default -F _nick_jobs nick-jobs\n"


def test_bash_completes_the_command_names(bash_script):
    assert complete(bash_script, "nick-jobs", "lo") == ["log", "login", "logout"]
    assert complete(bash_script, "nick-jobs", "st") == ["stats", "status", "stop", "stream"]
    assert complete(bash_script, "nick-jobs", "comp") == ["completion"]
    # Every command of the parser, the server's and the client's.
    everything = complete(bash_script, "nick-jobs", "")
    assert set(COMMANDS) <= set(everything)
    assert {"serve", "migrate", "worker", "users"} <= set(everything)
    assert everything == sorted(command_specs(build_parser())[0].subcommands)


def test_bash_completes_the_subcommands_of_a_command(bash_script):
    assert complete(bash_script, "nick-jobs", "schedules", "") == sorted(
        ["list", "get", "add", "update", "remove"]
    )
    assert complete(bash_script, "nick-jobs", "schedules", "re") == ["remove"]
    assert complete(bash_script, "nick-jobs", "users", "a") == ["add"]
    # `list` is a command, but after `submit` a word is the action, not a command.
    assert complete(bash_script, "nick-jobs", "submit", "li") == []


def test_bash_completes_the_options_of_the_command_in_the_line(bash_script):
    assert complete(bash_script, "nick-jobs", "list", "--st") == ["--status"]
    assert complete(bash_script, "nick-jobs", "list", "--s") == [
        "--search",
        "--server",
        "--sort",
        "--status",
    ]
    assert complete(bash_script, "nick-jobs", "get", "--w") == ["--watch"]
    assert complete(bash_script, "nick-jobs", "schedules", "add", "--en") == ["--enabled"]
    # An option of another command is not offered.
    assert complete(bash_script, "nick-jobs", "get", "--st") == []
    assert complete(bash_script, "nick-jobs", "serve", "--re") == ["--reload"]
    # The options before the cursor, and their values, do not change the command.
    assert complete(
        bash_script, "nick-jobs", "list", "--action", "schedules", "-o", "json", "--so"
    ) == ["--sort"]


def test_bash_completes_the_choices_of_an_option_and_of_a_positional(bash_script):
    assert complete(bash_script, "nick-jobs", "list", "--status", "") == sorted(JOB_STATUSES)
    assert complete(bash_script, "nick-jobs", "list", "--status", "f") == ["failed"]
    assert complete(bash_script, "nick-jobs", "get", "ID", "-o", "") == ["json", "plain", "table"]
    assert complete(bash_script, "nick-jobs", "schedules", "list", "--output", "j") == ["json"]
    assert complete(bash_script, "nick-jobs", "log", "x", "--level", "") == sorted(LOG_LEVELS)
    assert complete(bash_script, "nick-jobs", "completion", "") == ["bash", "fish", "zsh"]
    # An option's value without choices (a URL) is left to bash's default: file names.
    assert complete(bash_script, "nick-jobs", "list", "--server", "") == []


def script_file(tmp_path: Path, shell: str) -> Path:
    proc = completion(shell)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / f"nick-jobs.{shell}"
    path.write_text(proc.stdout)
    return path


@pytest.mark.skipif(FISH is None, reason="fish is not installed")
def test_fish_completes_commands_options_and_choices(tmp_path):
    script = script_file(tmp_path, "fish")
    assert subprocess.run([FISH, "-n", str(script)], capture_output=True).returncode == 0

    def fish_complete(line: str) -> list[str]:
        # `complete -C LINE`: what fish itself offers for a command line.
        program = f'source "{script}"; complete -C "{line}"'
        proc = subprocess.run(
            [FISH, "--no-config", "-c", program], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        return sorted(proc.stdout.splitlines())

    assert fish_complete("nick-jobs lo") == ["log", "login", "logout"]
    assert fish_complete("nick-jobs schedules r") == ["remove"]
    assert fish_complete("nick-jobs list --st") == ["--status"]
    assert fish_complete("nick-jobs list --status f") == ["failed"]
    assert fish_complete("nick-jobs list --action schedules --so") == ["--sort"]
    # Where it has nothing, fish completes file names.
    (tmp_path / "production.ini").write_text("")
    assert fish_complete("nick-jobs serve prod") == ["production.ini"]


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed")
def test_zsh_registers_its_function_and_finds_the_candidates(tmp_path):
    script = script_file(tmp_path, "zsh")
    assert script.read_text().startswith("#compdef nick-jobs\n")
    # The function is run outside a completion, as zsh would run it with these `words`:
    # compadd, which only works inside one, prints what it is given instead.
    program = f"""
        autoload -U compinit && compinit -u -D
        source "{script}"
        print -r -- "registered ${{_comps[nick-jobs]}}"
        compadd() {{ shift; print -r -- "$*" }}
        _files() {{ print -r -- "(files)" }}
        for line in "nick-jobs lo" "nick-jobs schedules r" "nick-jobs list --st" \\
                "nick-jobs list --status f" "nick-jobs list --server x"; do
            words=(${{=line}}); CURRENT=${{#words}}
            _nick_jobs_zsh
        done
    """
    proc = subprocess.run([ZSH, "-f", "-c", program], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    specs = {spec.path: spec for spec in command_specs(build_parser())}
    assert lines == [
        "registered _nick_jobs_zsh",
        " ".join(specs[""].subcommands),
        " ".join(specs["schedules"].subcommands),
        " ".join(specs["list"].options),
        " ".join(JOB_STATUSES),
        "(files)",
    ]


def test_an_unknown_shell_is_bad_usage():
    proc = completion("tcsh")
    assert proc.returncode == EXIT_USAGE
    assert "invalid choice: 'tcsh'" in proc.stderr
