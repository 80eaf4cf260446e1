"""`python3 -m sdmail.qmgr`: see sdmail/qmgr/__init__.py."""

import sys
from collections.abc import Sequence

from sdmail.core.skeleton import run_daemon_async
from sdmail.qmgr.service import PROGRAM, QmgrSettings, serve


def main(argv: Sequence[str] | None = None) -> int:
    return run_daemon_async(PROGRAM, argv, serve, settings=QmgrSettings)


if __name__ == "__main__":
    sys.exit(main())
