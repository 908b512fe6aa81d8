"""``nick-jobs consume ACTION... --exec COMMAND``: run remote actions' jobs with a shell
command, in any language.

For each job it claims, a :class:`~nick_jobs_client.consumer.Consumer` runs ``COMMAND``
through the shell: the job's params (without ``action``) as JSON on its stdin, and
``NICK_JOBS_JOB_UUID`` and ``NICK_JOBS_ATTEMPT`` in its environment. What it writes on
stdout, a JSON object (nothing: ``{}``), is the job's result; each line it writes on
stderr is a line of the job's log. An exit status other than 0 fails the job, with the
last line of stderr as the message. A job aborted meanwhile has its command terminated.

The command runs in a process group of its own: a Ctrl-C at the terminal reaches the
consumer, which stops claiming and gives the running commands ``--grace`` seconds, and
not the commands themselves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any

from nick_jobs_client.consumer import MAX_TEXT, Consumer, JobAborted, JobContext, JobFailed

__all__ = ["CommandFailed", "InvalidOutput", "consume", "exec_handler", "key_values"]


class CommandFailed(JobFailed):
    """The command exited with a status other than 0."""


class InvalidOutput(JobFailed):
    """The command's stdout is not a JSON object."""


def key_values(pairs: list[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; ``ValueError`` for a word without ``=``."""
    found: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} takes key=value, not {pair!r}")
        found[key] = value
    return found


def exec_handler(command: str) -> Callable[[JobContext], dict[str, Any]]:
    """The handler that runs ``command`` through the shell for a job (see the module)."""

    def handle(context: JobContext) -> dict[str, Any]:
        env = {
            **os.environ,
            "NICK_JOBS_JOB_UUID": context.uuid,
            "NICK_JOBS_ATTEMPT": str(context.attempt),
        }
        # The shell is the point: the command is the user's, as they would type it.
        process = subprocess.Popen(  # noqa: S602
            command,
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        context.on_abort(lambda: _terminate(process))
        out: list[bytes] = []
        last_error: list[str] = []
        readers = [
            threading.Thread(target=_read_all, args=(process.stdout, out), daemon=True),
            threading.Thread(
                target=_log_lines, args=(process.stderr, context, last_error), daemon=True
            ),
        ]
        for reader in readers:
            reader.start()
        _write_params(process.stdin, context.params)
        code = process.wait()
        for reader in readers:
            reader.join()
        if context.aborted:
            raise JobAborted(f"job {context.uuid} ended before its command")
        if code != 0:
            why = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
            raise CommandFailed(last_error[0] if last_error else f"the command ended with {why}")
        text = b"".join(out).decode("utf-8", "replace").strip()
        if not text:
            return {}
        try:
            result = json.loads(text)
        except ValueError as exc:
            raise InvalidOutput(f"the command's output is not JSON: {exc}") from None
        if not isinstance(result, dict):
            kind = type(result).__name__
            raise InvalidOutput(f"the command's output is a JSON {kind}, not an object")
        return result

    return handle


def _write_params(stdin: IO[bytes] | None, params: Mapping[str, Any]) -> None:
    if stdin is None:
        return
    try:
        stdin.write(json.dumps(params).encode())
        stdin.close()
    except (BrokenPipeError, OSError):
        pass  # a command that reads no input may have ended already


def _read_all(stream: IO[bytes] | None, into: list[bytes]) -> None:
    if stream is not None:
        into.append(stream.read())
        stream.close()


def _log_lines(stream: IO[bytes] | None, context: JobContext, last: list[str]) -> None:
    if stream is None:
        return
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.strip():
            context.log(line[:MAX_TEXT])
            last[:] = [line[:MAX_TEXT]]
    stream.close()


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's process group: a shell's children end with it."""
    if process.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    except ProcessLookupError:
        pass


def consume(args: argparse.Namespace, client: Any) -> None:
    """Run the consumer ``args`` describe with ``client`` until a signal stops it."""
    labels = key_values(args.labels, "--labels")
    claims = key_values(args.claims, "--claims")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("nick-jobs: %(message)s"))
    logger = logging.getLogger("nick_jobs_client")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    printing = threading.Lock()

    def on_end(job: dict[str, Any], outcome: str, message: str | None) -> None:
        if args.quiet:
            return
        line = f"{outcome} {job['uuid']}"
        if outcome == "failed" and message:
            line += ": " + " ".join(message.split())
        with printing:
            print(line, flush=True)

    consumer = Consumer(
        client,
        args.actions,
        exec_handler(args.exec_command),
        concurrency=args.concurrency,
        labels=labels,
        claims=claims,
        grace=args.grace,
        wait=args.wait,
        on_end=on_end,
    )
    try:
        consumer.run(handle_signals=True)
    finally:
        logger.removeHandler(handler)
