"""The columnar batch: concatenation keeps one code per customer, sorting is by (created_at, id)."""

from __future__ import annotations

import numpy as np

from sentinel.model import Batch, Vocab


def _batch(vocab: Vocab, ids: list[int], ts: list[int], customers: list[str | None]) -> Batch:
    local: dict[str, int] = {}
    codes = [-1 if c is None else local.setdefault(c, len(local)) for c in customers]
    return Batch(
        np.asarray(ids, dtype=np.int64),
        np.asarray(ts, dtype=np.int64),
        vocab.encode(["a"] * len(ids)),
        vocab.encode(["x"] * len(ids)),
        np.asarray(codes, dtype=np.int32),
        np.asarray(list(local), dtype=object),
    )


def test_concat_gives_one_code_per_customer() -> None:
    v = Vocab()
    a = _batch(v, [1, 2], [10, 20], ["c0", None])
    b = _batch(v, [3, 4, 5], [30, 40, 50], ["c1", "c0", None])
    both = Batch.concat([a, b])
    assert [both.customer_of(i) for i in range(5)] == ["c0", None, "c1", "c0", None]
    assert both.customer is not None and both.customer[0] == both.customer[3]  # the same person, one code


def test_sorted_orders_by_time_then_id() -> None:
    v = Vocab()
    b = _batch(v, [5, 3, 4, 1], [20, 10, 10, 5], ["a", "b", "c", "d"])
    s = b.sorted()
    assert s.ids.tolist() == [1, 3, 4, 5] and s.ts.tolist() == [5, 10, 10, 20]
    assert [s.customer_of(i) for i in range(4)] == ["d", "b", "c", "a"]
