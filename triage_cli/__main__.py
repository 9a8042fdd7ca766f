"""``python -m triage_cli``: the ``triage`` command."""

from triage_cli.commands import main

raise SystemExit(main())
