"""A tiny sd_notify(3) client: tells systemd that the daemon is ready, alive, reloading or stopping.

It speaks the datagram protocol systemd documents in sd_notify(3): newline-separated `KEY=VALUE`
assignments sent to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a filesystem path, or an abstract
socket written with a leading `@`). Without that variable — run by hand, in a container, under tests —
every call does nothing at all and returns False. A failed send is logged at debug level and never
raised into the caller: telling systemd is a courtesy that must not stop a poll cycle. (When the
watchdog is on, a lost ping ends in a restart by systemd, which is the right outcome anyway.)

How the daemon uses it (`sentinel.service` is `Type=notify`, `NotifyAccess=main`, `WatchdogSec=`):

    notifier = Notifier.from_env()
    ...                                   # open the store, backfill, start the HTTP server
    notifier.ready("watching complaints")  # READY=1: `systemctl start` returns now
    interval = watchdog_interval()        # seconds, or None when the watchdog is off
    # the scheduler heartbeat calls notifier.watchdog() every interval / 2 while cycles run
    notifier.reloading()                  # on SIGHUP; then notifier.ready() once the new config is live
    notifier.stopping()                   # on SIGTERM, before the last cycle and the outbox flush

Only the main process may notify (`NotifyAccess=main`); threads of it are fine.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0  # seconds; systemd reads its socket at once, a full queue must not hang a cycle


def _socket_address(value: str | None) -> str | None:
    """The address to send to, from the value of $NOTIFY_SOCKET, or None when it is unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace (Linux)
    if value.startswith("/"):
        return value
    # systemd >= 254 may also hand out `vsock:` addresses (for VMs); Sentinel does not run there.
    log.debug("sd_notify: unsupported NOTIFY_SOCKET %r, notifications are off", value)
    return None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds, or None when it is off.

    Like sd_watchdog_enabled(3): reads `$WATCHDOG_USEC`, and `$WATCHDOG_PID` when it is set (the
    watchdog is then meant for that process only). Ping at least every half of this interval.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        log.debug("sd_notify: ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    if value <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.debug("sd_notify: ignoring malformed WATCHDOG_PID=%r", pid)
            return None
    return value / 1_000_000


def _one_line(text: str) -> str:
    """A STATUS= value must stay on one line: a newline would start another assignment."""
    return " ".join(text.split())


class Notifier:
    """Sends notifications to one notify socket; a Notifier without a socket does nothing."""

    def __init__(self, address: str | None) -> None:
        """`address` is a socket path, an abstract name starting with `@`, or None (disabled)."""
        self._address = _socket_address(address)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through `$NOTIFY_SOCKET` (disabled when it is not set)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments in one datagram. True when it was sent, False otherwise."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(payload, self._address)
        except OSError as exc:
            log.debug("sd_notify: could not send %r: %s", assignments[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.notify("READY=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload begins; call `ready()` when the new configuration is live.

        MONOTONIC_USEC is what `Type=notify-reload` (systemd >= 253) requires; older systemd ignores it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown begins (the last cycle and the outbox flush follow)."""
        return self.notify("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        """The daemon is alive: one keep-alive ping for `WatchdogSec=`."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by `systemctl status` (newlines are folded into spaces)."""
        return self.notify(f"STATUS={_one_line(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start-up or stop timeout fires (EXTEND_TIMEOUT_USEC).

        Useful while a long first-start backfill runs, before READY=1.
        """
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)
