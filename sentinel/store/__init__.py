"""The durable state store (SQLite or PostgreSQL), its schema and migrations.

A poll cycle's writes are one transaction (`Store.transaction()`): watermark, seen ids and buckets
here, and whatever the later stages add through the daemon's cycle hooks.
"""

from __future__ import annotations

from sentinel.store.db import Store, StoreCorrupt, StoreError, StoreMissing, StoreUnreachable, open_store
from sentinel.store.lock import LockLost, StoreLocked

__all__ = [
    "LockLost",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreMissing",
    "StoreUnreachable",
    "open_store",
]
