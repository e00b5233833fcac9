"""An SQLite store stays single-instance: refuse one that lives on a network filesystem.

SQLite's WAL mode needs shared memory between the processes using the file, so it does not work across
hosts at all, and the file lock that keeps a second daemon out is local to one host on most network
filesystems (NFS without a lock manager, SMB, sshfs, ...). Two hosts pointed at one file over such a mount
would both think they are alone and damage the store; Sentinel refuses to start instead, naming the
mount, and points to the PostgreSQL store, which is how several instances share state.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentinel.store.db import StoreError

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "ocfs2",
        "gfs2",
        "beegfs",
        "davfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "fuse.cephfs",
    }
)
MOUNTS = Path("/proc/self/mounts")


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_of(path: Path, mounts: Path | None = None) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount holding `path`: the longest mount point that is a
    prefix of its real directory. None where the mount table cannot be read (not Linux)."""
    try:
        table = (mounts or MOUNTS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    target = os.path.realpath(path.parent)
    best: tuple[str, str] | None = None
    for line in table.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point, kind = _unescape(parts[1]), parts[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, kind)
    return best


def refuse_network_filesystem(db: Path, mounts: Path | None = None) -> None:
    """Raise `StoreError` when the SQLite store `db` is on a network filesystem (see the module docstring)."""
    found = filesystem_of(db, mounts)
    if found is None or found[1].lower() not in NETWORK_FILESYSTEMS:
        return
    point, kind = found
    raise StoreError(
        f"state_url: the SQLite state store {db} is on a network filesystem ({kind} at {point}); "
        "SQLite's locking and WAL do not work across hosts there, so two instances would damage it. "
        "Keep an SQLite store on a local disk of one host; to run several instances, give them one "
        "PostgreSQL state store (README: Running two instances)"
    )
