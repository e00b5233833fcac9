"""Sources read complaints; they know nothing of watermarks, dedup or rules.

A source answers one question: "give me up to `limit` rows after this point, in (created_at, id)
order". Ingest (`sentinel.ingest`) owns the watermark, the look-back and the dedup; the SQL and file
sources below only translate that question into their medium.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sentinel.sources.rows import RawRow

Cursor = tuple[object, object]
"""Where a page ended: the raw (created_at, id) of its last row, as the source returned them. Ingest never
looks inside; it hands `Page.next` back to the same source, which reads strictly after that key."""


@dataclass(slots=True)
class Page:
    """Rows in (created_at, id) order, as the source returned them (not yet validated).

    `next` is the cursor for the following page (opaque to ingest), or None when the source had no more rows.
    """

    rows: list[RawRow] = field(default_factory=list)
    next: Cursor | None = None


class SourceUnavailable(Exception):
    """The source cannot be reached or answered with an error; ingest retries with backoff.

    The message never contains credentials.
    """


class Source(Protocol):
    def read(self, since_us: int, cursor: Cursor | None, limit: int) -> Page:
        """Rows with created_at > since_us (cursor None), or strictly after `cursor`."""
        ...

    def first_record_time(self) -> int | None:
        """created_at (µs) of the oldest row, or None for an empty source."""
        ...

    def check(self) -> list[str]:
        """Start-up warnings, e.g. a missing (created_at, id) index; raises SourceUnavailable."""
        ...

    def describe(self) -> str:
        """A one-line description without secrets, for logs and the status page."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Reconcilable(Protocol):
    """A source that can count and re-read by time range, so ingest can find rows a watermark read cannot
    see (committed later than `lateness`, or ordered by the database unlike their parsed time). SQL sources
    implement it; a source that does not is never reconciled."""

    def count_range(self, bounds: Sequence[int]) -> list[int]:
        """Rows with created_at in each [bounds[i], bounds[i+1])."""
        ...

    def read_range(self, start_us: int, end_us: int, cursor: Cursor | None, limit: int) -> Page:
        """Rows with start_us <= created_at < end_us, in (created_at, id) order, paged like `read`."""
        ...

    def read_strays(self, limit: int = ...) -> Page:
        """Rows whose created_at no `read` can return (NULL, empty, before 1970-01-02)."""
        ...
