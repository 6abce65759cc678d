"""``python -m hamfast``: the ``hamfast`` command."""
from hamfast.cli import main

raise SystemExit(main())
