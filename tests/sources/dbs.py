"""Real databases for source and ingest tests: a small helper per database kind, the complaint
table they share, and a TCP proxy that can cut a connection to PostgreSQL and restore it."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

TYPES = {
    "sqlite": {"id": "INTEGER", "sid": "TEXT", "time": "TEXT", "text": "TEXT", "big": "INTEGER"},
    "postgres": {"id": "BIGINT", "sid": "VARCHAR(64)", "time": "TIMESTAMP(6)", "text": "TEXT", "big": "BIGINT"},
    "mariadb": {"id": "BIGINT", "sid": "VARCHAR(64)", "time": "DATETIME(6)", "text": "VARCHAR(400)", "big": "BIGINT"},
}


@dataclass
class Db:
    kind: str
    url: str
    engine: sa.Engine

    def q(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote_identifier(name)

    def run(self, sql: str, params: Any = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def create(self, table: str, columns: dict[str, str], index: tuple[str, ...] | None = None) -> None:
        cols = ", ".join(f"{self.q(n)} {TYPES[self.kind].get(t, t)}" for n, t in columns.items())
        self.run(f"CREATE TABLE {self.q(table)} ({cols})")
        if index:
            self.run(f"CREATE INDEX {self.q(table + '_ix')} ON {self.q(table)} ({', '.join(self.q(c) for c in index)})")

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        names = list(rows[0])
        self.run(
            f"INSERT INTO {self.q(table)} ({', '.join(self.q(n) for n in names)}) "
            f"VALUES ({', '.join(f':p{k}' for k in range(len(names)))})",
            [{f"p{k}": r[n] for k, n in enumerate(names)} for r in rows],
        )

    def time(self, dt: datetime) -> Any:
        """A naive wall-clock time as this database's `time` column stores it."""
        return dt.isoformat(" ") if self.kind == "sqlite" else dt


def complaints_table(db: Db, index: bool = True, id_type: str = "id", time_type: str = "time") -> None:
    db.create(
        "complaints",
        {"id": id_type, "created_at": time_type, "type": "text", "channel": "text", "customer": "text"},
        ("created_at", "id") if index else None,
    )


def row(
    db: Db, i: Any, at: datetime, typ: Any = "物流配送延误", channel: Any = "电话热线", customer: Any = None
) -> dict[str, Any]:
    return {"id": i, "created_at": db.time(at), "type": typ, "channel": channel, "customer": customer}


class TcpProxy:
    """127.0.0.1:port -> the real server, with switches: stop() closes everything, start() listens again;
    pause() stalls as a hung middlebox does (bytes are acknowledged, none forwarded, no error at either end)
    until resume()."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def drop_connections(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        self.drop_connections()
