"""Entry point of a worker process started by a local pool (``hpsweep run``,
``worker --processes``, ``ensemble --workers``): the ``hpsweep`` command line, plus a
thread that stops the process when the pool's process is gone.

    python -m coordinator.child PARENT_PID GRACE_SECONDS worker --queue ...
"""

from __future__ import annotations

import os
import sys

from coordinator.lifetime import watch_parent


def main(argv: list[str]) -> None:
    parent, grace, args = int(argv[0]), float(argv[1]), argv[2:]
    if os.getppid() != parent:  # orphaned while Python started: nothing to do any more
        sys.exit(1)
    watch_parent(parent, grace)
    from coordinator.cli import main as cli

    cli(args=args, prog_name="hpsweep")


if __name__ == "__main__":
    main(sys.argv[1:])
