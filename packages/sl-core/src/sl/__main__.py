"""``python -m sl``: see :mod:`sl.cli`."""

from __future__ import annotations

import sys

from sl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
