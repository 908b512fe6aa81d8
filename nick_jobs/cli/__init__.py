"""The server's commands of ``nick-jobs`` (``admin``). The command itself, and its client
commands, are the client's: :mod:`nick_jobs_client.cli`."""
