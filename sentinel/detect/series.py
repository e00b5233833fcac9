"""Series identity: which combination of group_by values a record belongs to, with a cardinality guard.

Codes of the process's `Vocab` are combined into one int64 per record, mapped to a dense series index
with one dictionary lookup per distinct combination in a batch (never per record). Past `max_series`
new combinations fold into the `__other__` series and are counted, so a junk type column cannot make a
rule track millions of series.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sentinel.metrics import OTHER
from sentinel.model import Batch, IntArray, Vocab

_SHIFT = np.int64(1 << 32)


class SeriesIndex:
    def __init__(self, group_by: Sequence[str], vocab: Vocab, max_series: int = 10_000) -> None:
        self.group_by = tuple(group_by)
        self.vocab = vocab
        self.max_series = max_series
        self.labels: list[dict[str, str]] = []
        self._by_values: dict[tuple[str, ...], int] = {}
        self._by_code: dict[int, int] = {}
        self.other: int | None = None
        self.folded: int = 0  # distinct combinations folded into __other__
        self.changed = False

    def __len__(self) -> int:
        return len(self.labels)

    def combined(self, types: npt.NDArray[Any], channels: npt.NDArray[Any]) -> IntArray:
        if self.group_by == ("type", "channel"):
            return types.astype(np.int64) * _SHIFT + channels.astype(np.int64)
        if self.group_by == ("channel", "type"):
            return channels.astype(np.int64) * _SHIFT + types.astype(np.int64)
        if self.group_by == ("type",):
            return types.astype(np.int64)
        if self.group_by == ("channel",):
            return channels.astype(np.int64)
        return np.zeros(len(types), dtype=np.int64)

    def _values_of_code(self, code: int) -> tuple[str, ...]:
        hi, lo = divmod(code, int(_SHIFT))
        if len(self.group_by) == 2:
            return self.vocab.decode(hi), self.vocab.decode(lo)
        if len(self.group_by) == 1:
            return (self.vocab.decode(code),)
        return ()

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

    def of_codes(self, types: npt.NDArray[Any], channels: npt.NDArray[Any]) -> IntArray:
        """Series index per record."""
        if len(types) == 0:
            return np.zeros(0, dtype=np.int64)
        codes = self.combined(types, channels)
        uniq, inverse = np.unique(codes, return_inverse=True)
        mapped = np.empty(len(uniq), dtype=np.int64)
        for i, code in enumerate(uniq.tolist()):
            idx = self._by_code.get(code)
            if idx is None:
                idx = self.admit(self._values_of_code(code))
                self._by_code[code] = idx
            mapped[i] = idx
        return mapped[inverse]

    def of_batch(self, batch: Batch) -> IntArray:
        return self.of_codes(batch.type, batch.channel)

    def snapshot(self) -> list[list[str]]:
        """Admitted series in admission order (restoring in this order folds exactly the same way)."""
        return [[lab[g] for g in self.group_by] for lab in self.labels]

    def restore(self, rows: Sequence[Sequence[str]]) -> None:
        for values in rows:
            self.admit(tuple(values))
        self.changed = False
