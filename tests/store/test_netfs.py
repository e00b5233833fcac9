"""An SQLite store stays single-instance: one on a network filesystem is refused with one clear line, from the
mount table the kernel gives (a copy of it here, naming the test's folder as an NFS mount)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.store import StoreError, netfs, open_store


def mounts(tmp_path: Path, point: Path, kind: str) -> Path:
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"server:/export {str(point).replace(' ', chr(92) + '040')} {kind} rw,vers=4.2 0 0\n"
        "tmpfs /run tmpfs rw 0 0\n",
        encoding="utf-8",
    )
    return table


@pytest.mark.parametrize("kind", ["nfs4", "cifs", "fuse.sshfs"])
def test_an_sqlite_store_on_a_network_filesystem_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    shared = tmp_path / "shared dir"
    shared.mkdir()
    monkeypatch.setattr(netfs, "MOUNTS", mounts(tmp_path, shared, kind))
    with pytest.raises(StoreError) as refused:
        open_store(f"sqlite:///{shared}/state.db", lock=True)
    message = str(refused.value)
    assert f"is on a network filesystem ({kind} at {shared})" in message
    assert "PostgreSQL state store" in message and "\n" not in message
    assert not (shared / "state.db.lock").exists()


def test_an_sqlite_store_on_a_local_disk_beside_a_network_mount_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, shared = tmp_path / "local", tmp_path / "local-nfs"  # a mount whose name only begins like ours
    local.mkdir()
    shared.mkdir()
    monkeypatch.setattr(netfs, "MOUNTS", mounts(tmp_path, shared, "nfs"))
    assert netfs.filesystem_of(local / "state.db") == ("/", "ext4")
    store = open_store(f"sqlite:///{local}/state.db", lock=True)
    store.close()
