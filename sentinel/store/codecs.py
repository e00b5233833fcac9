"""How values are written into the store's text columns: compact JSON, and batches with their strings.

Codes of a `Vocab` never leave the process (a restarted daemon interns strings in another order), so a
batch is stored with its types and channels spelled out and coded again when it is read.
"""

from __future__ import annotations

import json

import numpy as np

from sentinel.model import Batch, JsonObject, JsonValue, Vocab


def batch_to_json(batch: Batch, vocab: Vocab) -> JsonObject:
    """A batch with its strings instead of the process's codes (`{}` when empty)."""
    if len(batch) == 0:
        return {}
    out: JsonObject = {
        "ids": [int(i) if batch.ids.dtype != object else str(i) for i in batch.ids.tolist()],
        "ts": batch.ts.tolist(),
        "type": [vocab.decode(int(c)) for c in batch.type.tolist()],
        "channel": [vocab.decode(int(c)) for c in batch.channel.tolist()],
    }
    if batch.customer is not None:
        out["customer"] = [batch.customer_of(i) for i in range(len(batch))]
    return out


def batch_from_json(data: JsonObject, vocab: Vocab) -> Batch:
    """The batch `batch_to_json` wrote, coded in this process's `vocab`."""
    if not data:
        return Batch.empty()
    ids = _list(data, "ids")
    id_arr = (
        np.asarray(ids, dtype=np.int64)
        if all(isinstance(i, int) for i in ids)
        else np.asarray([str(i) for i in ids], dtype=object)
    )
    customer = None
    values = None
    if "customer" in data:
        local: dict[str, int] = {}
        codes = [-1 if c is None else local.setdefault(_str(c), len(local)) for c in _list(data, "customer")]
        customer = np.asarray(codes, dtype=np.int32)
        values = np.asarray(list(local), dtype=object)
    return Batch(
        id_arr,
        np.asarray(data["ts"], dtype=np.int64),
        vocab.encode([_str(t) for t in _list(data, "type")]),
        vocab.encode([_str(c) for c in _list(data, "channel")]),
        customer,
        values,
    )


def _list(data: JsonObject, key: str) -> list[JsonValue]:
    value = data[key]
    if not isinstance(value, list):
        raise TypeError(f"stored batch: {key} is a {type(value).__name__}, not a list")
    return value


def _str(value: JsonValue) -> str:
    if not isinstance(value, str):
        raise TypeError(f"stored batch: {value!r} is not a string")
    return value


def dumps(obj: object) -> str:
    """Compact JSON that keeps Chinese text readable in the store."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
