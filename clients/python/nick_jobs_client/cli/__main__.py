"""``python -m nick_jobs_client.cli``: the ``nick-jobs`` command."""

from nick_jobs_client.cli import main

raise SystemExit(main())
