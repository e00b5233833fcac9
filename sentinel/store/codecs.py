"""How values are written into the store's text columns: compact JSON, and batches with their strings.

Codes of a `Vocab` never leave the process (a restarted daemon interns strings in another order), so a
batch is stored with its types and channels spelled out and coded again when it is read.
"""

from __future__ import annotations

import json

import numpy as np

from sentinel.model import Batch, JsonObject, Vocab, json_list, json_str


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
    ids = json_list(data["ids"])
    id_arr = (
        np.asarray(ids, dtype=np.int64)
        if all(isinstance(i, int) for i in ids)
        else np.asarray([str(i) for i in ids], dtype=object)
    )
    customer = None
    values = None
    if "customer" in data:
        local: dict[str, int] = {}
        codes = [-1 if c is None else local.setdefault(json_str(c), len(local)) for c in json_list(data["customer"])]
        customer = np.asarray(codes, dtype=np.int32)
        values = np.asarray(list(local), dtype=object)
    return Batch(
        id_arr,
        np.asarray(data["ts"], dtype=np.int64),
        vocab.encode([json_str(t) for t in json_list(data["type"])]),
        vocab.encode([json_str(c) for c in json_list(data["channel"])]),
        customer,
        values,
    )


def dumps(obj: object) -> str:
    """Compact JSON that keeps Chinese text readable in the store."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
