"""The ``nick-jobs`` command: its server-side commands (``admin``) and its client
commands (``client_commands``)."""
