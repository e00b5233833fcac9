"""Series identity: which combination of group_by values a record belongs to, with a cardinality guard.

Codes of the process's `Vocab` are combined into one int64 per record, mapped to a dense series index
with one dictionary lookup per distinct combination in a batch (never per record). Past `max_series`
new combinations fold into the `__other__` series and are counted, so a junk type column cannot make a
rule track millions of series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sentinel.model import OTHER, Batch, IntArray, Vocab


class SeriesIndex:
    def __init__(self, group_by: Sequence[str], vocab: Vocab, max_series: int = 10_000) -> None:
        self.group_by = tuple(group_by)
        self.vocab = vocab
        self.max_series = max_series
        self.labels: list[dict[str, str]] = []
        self._by_values: dict[tuple[str, ...], int] = {}
        self.other: int | None = None
        self.folded: int = 0  # distinct combinations folded into __other__
        self.changed = False
        self._luts = [np.zeros(0, dtype=np.int64) for _ in self.group_by]  # vocab code -> compact index
        self._codes_of: list[list[int]] = [[] for _ in self.group_by]  # compact index -> vocab code
        self._table = np.full(tuple(1 for _ in self.group_by), -1, dtype=np.int64)  # compact key -> series

    def __len__(self) -> int:
        return len(self.labels)

    def fork(self) -> SeriesIndex:
        """An independent copy (for the look-ahead run): admitting there leaves this one unchanged.
        Label dicts are shared: they are never changed once admitted."""
        other = SeriesIndex.__new__(SeriesIndex)
        other.group_by, other.vocab, other.max_series = self.group_by, self.vocab, self.max_series
        other.labels = list(self.labels)
        other._by_values = dict(self._by_values)
        other.other, other.folded, other.changed = self.other, self.folded, self.changed
        other._luts = [lut.copy() for lut in self._luts]
        other._codes_of = [list(c) for c in self._codes_of]
        other._table = self._table.copy()
        return other

    def admit(self, values: tuple[str, ...]) -> int:
        """Series index for these label values, creating (or folding) it."""
        idx = self._by_values.get(values)
        if idx is not None:
            return idx
        if values and all(v == OTHER for v in values):
            if self.other is None:
                self.other = self._new(values)
            return self.other
        if len(self.labels) - (1 if self.other is not None else 0) >= self.max_series:
            self.folded += 1
            if self.other is None:
                self.other = self._new(tuple(OTHER for _ in self.group_by))
            self._by_values[values] = self.other
            return self.other
        return self._new(values)

    def _new(self, values: tuple[str, ...]) -> int:
        idx = len(self.labels)
        self.labels.append(dict(zip(self.group_by, values, strict=True)))
        self._by_values[values] = idx
        self.changed = True
        return idx

    def of_codes(self, types: npt.NDArray[np.int32 | np.int64], channels: npt.NDArray[np.int32 | np.int64]) -> IntArray:
        """Series index per record: dense lookup tables keyed by vocab codes, so a batch costs a few
        numpy gathers; only combinations never seen before go through Python."""
        n = len(types)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if not self.group_by:
            return np.full(n, self.admit(()), dtype=np.int64)
        cols = [types if f == "type" else channels for f in self.group_by]
        compact = [self._compact_of(i, np.asarray(c, dtype=np.int64)) for i, c in enumerate(cols)]
        self._grow_table()
        s = self._table[tuple(compact)]
        missing = s < 0
        if missing.any():
            keys = np.stack([c[missing] for c in compact], axis=1)
            for key in np.unique(keys, axis=0).tolist():
                values = tuple(self.vocab.decode(self._codes_of[i][k]) for i, k in enumerate(key))
                idx = self.admit(values)
                self._table[tuple(key)] = idx
            s = self._table[tuple(compact)]
        return np.asarray(s, dtype=np.int64)

    def _compact_of(self, field: int, codes: IntArray) -> IntArray:
        """Compact per-field indices (0.. distinct values seen) for vocab codes."""
        lut = self._luts[field]
        top = int(codes.max()) + 1
        if top > len(lut):
            lut = self._luts[field] = np.concatenate([lut, np.full(max(top - len(lut), len(lut)), -1, np.int64)])
        idx = lut[codes]
        new = idx < 0
        if new.any():
            for code in np.unique(codes[new]).tolist():
                lut[code] = len(self._codes_of[field])
                self._codes_of[field].append(code)
            idx = lut[codes]
        return idx

    def _grow_table(self) -> None:
        shape = tuple(max(1, len(c)) for c in self._codes_of)
        if self._table.shape == shape:
            return
        if any(a < b for a, b in zip(self._table.shape, shape, strict=True)):
            new_shape = tuple(max(2 * a, b) if a < b else a for a, b in zip(self._table.shape, shape, strict=True))
            table = np.full(new_shape, -1, dtype=np.int64)
            table[tuple(slice(0, a) for a in self._table.shape)] = self._table
            self._table = table

    def of_batch(self, batch: Batch) -> IntArray:
        return self.of_codes(batch.type, batch.channel)

    def snapshot(self) -> list[list[str]]:
        """Admitted series in admission order (restoring in this order folds exactly the same way)."""
        return [[lab[g] for g in self.group_by] for lab in self.labels]

    def changes(self, force: bool = False) -> list[list[str]] | None:
        """The labels to save (`snapshot`) when series were admitted since the last call, or `force`."""
        if not (self.changed or force):
            return None
        self.changed = False
        return self.snapshot()

    def restore(self, rows: Sequence[Sequence[str]]) -> None:
        for values in rows:
            self.admit(tuple(values))
        self.changed = False
