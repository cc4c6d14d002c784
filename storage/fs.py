"""Which filesystem holds a path: SQLite's locks are not safe on network filesystems.

Standard library only, so that the looking commands' fast path (``storage.plain``)
applies the same refusal without importing SQLAlchemy.
"""

from __future__ import annotations

from pathlib import Path

NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb", "smbfs", "smb3", "fuse.sshfs", "9p", "afs")


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The mount type holding ``path`` (longest matching mount point), or None.

    ``mounts`` is the text of /proc/mounts (read when not given).
    """
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    best, kind = "", None
    target = str(path.resolve())
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3 or len(parts[1]) <= len(best):
            continue
        if target == parts[1] or target.startswith(parts[1].rstrip("/") + "/"):
            best, kind = parts[1], parts[2]
    return kind
