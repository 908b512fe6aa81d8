"""``python -m nick_jobs.cli``: the ``nick-jobs`` command."""

from nick_jobs.cli.admin import main

raise SystemExit(main())
