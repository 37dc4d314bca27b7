"""``python -m trio_session``: the terminal chat (see ``trio_session._cli``)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
