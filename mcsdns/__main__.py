"""``python -m mcsdns``: the same entry point as the ``mcsdns`` console script."""

from __future__ import annotations

from mcsdns.cli import main

raise SystemExit(main())
