"""What a model of each kind writes per text, and how those rows become Arrow columns and JSON.

- ``dense``: one float32 vector of ``dim`` values: ``embedding``, ``fixed_size_list<float32>[dim]``.
- ``sparse`` (SPLADE): the active vocabulary entries: ``indices`` (``list<int32>``, ascending) and
  ``values`` (``list<float32>``), as fastembed's and Qdrant's sparse vectors are.
- ``multi-vector`` (ColBERT): one float32 vector of ``dim`` values per kept token: ``embedding``,
  ``list<fixed_size_list<float32>[dim]>``.
- BGE-M3 with several outputs (``bge-m3:`` and the outputs, e.g. ``bge-m3:dense,sparse,colbert``;
  ``BGEM3.embed``'s names, :func:`m3_kind`): each output's columns side by side, from one forward
  pass: ``embedding`` (dense, as above), ``indices`` and ``values`` (its lexical weights, indexed by
  token id, as above) and ``colbert`` (its ColBERT vectors, ``list<fixed_size_list<float32>[dim]>``).

A stretch of rows (:class:`Rows`) is what an encoder gives for a few thousand texts and what a
writer takes: the file writers (:mod:`.outputs`) and Ray's ``BatchEmbedder`` build their columns
here, so every output of a kind has the same columns and types. Sparse and multi-vector rows stay
the per-text arrays the model gave (views into its batches) until a row group is written: only
that row group's values are ever copied into one flat Arrow buffer.

Arrow arrays are made from their buffers, not with ``pa.array()``: that one imports pandas (when it
is installed) to check for pandas types, 55 MB of RSS for nothing here. The numpy memory is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The kinds of output, as :func:`.encoders.model_kind` tells them from a model's files.
KINDS = ("dense", "sparse", "multi-vector")

#: What each kind is, for messages.
KIND_NAMES = {
    "dense": "a dense embedding model",
    "sparse": "a sparse (SPLADE) model",
    "multi-vector": "a multi-vector (ColBERT) model",
}

#: BGE-M3's outputs, as ``BGEM3.embed`` names them, in the order their columns are written.
M3_OUTPUTS = ("dense", "sparse", "colbert")
#: The kind of rows holding several of them starts with this.
M3_KIND = "bge-m3:"


def m3_kind(outputs: Sequence[str]) -> str:
    """The kind of BGE-M3 rows holding ``outputs`` (in :data:`M3_OUTPUTS`' order)."""
    return M3_KIND + ",".join(o for o in M3_OUTPUTS if o in outputs)


def m3_outputs(kind: str) -> tuple[str, ...]:
    """The BGE-M3 outputs a kind's rows hold (none for the other kinds)."""
    return tuple(kind[len(M3_KIND) :].split(",")) if kind.startswith(M3_KIND) else ()


class Rows(ABC):
    """Consecutive output rows of one kind, one per text, in input order."""

    kind: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def slice(self, start: int, stop: int) -> Rows:
        """Rows ``start`` to ``stop`` (no copy of the values)."""

    @abstractmethod
    def row_bytes(self) -> np.ndarray:
        """Bytes of values in each row (int64), to cut row groups of a given size."""

    @abstractmethod
    def record(self, i: int) -> dict[str, Any]:
        """Row ``i`` as the JSON fields of its JSONL line (numpy arrays, which orjson writes)."""

    @abstractmethod
    def arrow_columns(self) -> list[tuple[str, Any]]:
        """(name, Arrow array) of each column, of :func:`arrow_fields`' types."""


class DenseRows(Rows):
    kind = "dense"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.vectors)

    def slice(self, start: int, stop: int) -> DenseRows:
        return DenseRows(self.vectors[start:stop])

    def row_bytes(self) -> np.ndarray:
        return np.full(len(self.vectors), self.vectors[0].nbytes if len(self.vectors) else 0, dtype=np.int64)

    def record(self, i: int) -> dict[str, Any]:
        return {"embedding": self.vectors[i]}

    def arrow_columns(self) -> list[tuple[str, Any]]:
        return [("embedding", _fixed_size_lists(self.vectors))]


class SparseRows(Rows):
    """One (indices, values) pair of 1-D arrays per text (``SparseEmbedding``s, or anything with
    ``indices`` and ``values``)."""

    kind = "sparse"

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> SparseRows:
        return SparseRows(self.items[start:stop])

    def row_bytes(self) -> np.ndarray:
        return np.fromiter((8 * len(e.indices) for e in self.items), dtype=np.int64, count=len(self.items))

    def record(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        return {
            "indices": np.ascontiguousarray(item.indices, dtype=np.int32),
            "values": np.ascontiguousarray(item.values, dtype=np.float32),
        }

    def arrow_columns(self) -> list[tuple[str, Any]]:
        offsets = _offsets([len(e.indices) for e in self.items])
        indices = _flat([e.indices for e in self.items], np.int32, (0,))
        values = _flat([e.values for e in self.items], np.float32, (0,))
        return [
            ("indices", _lists(offsets, _primitive(indices))),
            ("values", _lists(offsets, _primitive(values))),
        ]


class MultiVectorRows(Rows):
    """One float32 ``(tokens, dim)`` array per text."""

    kind = "multi-vector"

    def __init__(self, items: Sequence[np.ndarray], dim: int) -> None:
        self.items = list(items)
        self.dim = dim

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> MultiVectorRows:
        return MultiVectorRows(self.items[start:stop], self.dim)

    def row_bytes(self) -> np.ndarray:
        return np.fromiter((a.size * 4 for a in self.items), dtype=np.int64, count=len(self.items))

    def record(self, i: int) -> dict[str, Any]:
        return {"embedding": np.ascontiguousarray(self.items[i], dtype=np.float32)}

    def arrow_columns(self) -> list[tuple[str, Any]]:
        offsets = _offsets([len(a) for a in self.items])
        tokens = _flat(self.items, np.float32, (0, self.dim))
        return [("embedding", _lists(offsets, _fixed_size_lists(tokens)))]


class M3Rows(Rows):
    """BGE-M3's outputs of one forward pass side by side, one row per text: ``parts`` maps each
    output of :data:`M3_OUTPUTS` to its rows (:class:`DenseRows`, :class:`SparseRows`,
    :class:`MultiVectorRows`), whose columns are written next to each other, the ColBERT ones
    named ``colbert``."""

    def __init__(self, parts: dict[str, Rows]) -> None:
        self.parts = {name: parts[name] for name in M3_OUTPUTS if name in parts}
        self.kind = m3_kind(tuple(self.parts))

    def __len__(self) -> int:
        return len(next(iter(self.parts.values())))

    def slice(self, start: int, stop: int) -> M3Rows:
        return M3Rows({name: rows.slice(start, stop) for name, rows in self.parts.items()})

    def row_bytes(self) -> np.ndarray:
        return np.sum([rows.row_bytes() for rows in self.parts.values()], axis=0, dtype=np.int64)

    def record(self, i: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for name, rows in self.parts.items():
            fields = rows.record(i)
            record.update({"colbert": fields["embedding"]} if name == "colbert" else fields)
        return record

    def arrow_columns(self) -> list[tuple[str, Any]]:
        columns = []
        for name, rows in self.parts.items():
            for column, array in rows.arrow_columns():
                columns.append(("colbert" if name == "colbert" else column, array))
        return columns


def as_rows(rows: Rows | np.ndarray) -> Rows:
    """``rows`` as :class:`Rows`: a float32 ``(n, dim)`` array is dense rows."""
    return rows if isinstance(rows, Rows) else DenseRows(rows)


def arrow_fields(kind: str, dim: int) -> list[Any]:
    """The Arrow fields (none nullable) of a kind's columns; ``dim``: the dense or per-token width
    (both BGE-M3's, whose ColBERT vectors are as wide as its dense ones)."""
    import pyarrow as pa

    vector = pa.list_(pa.float32(), dim)
    columns = {
        "dense": [("embedding", vector)],
        "sparse": [("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))],
        "multi-vector": [("embedding", pa.list_(vector))],
        "colbert": [("colbert", pa.list_(vector))],  # BGE-M3's, beside its dense embedding
    }
    types = (
        [c for output in m3_outputs(kind) for c in columns[output]]
        if kind.startswith(M3_KIND)
        else columns[kind]
    )
    return [pa.field(name, type_, nullable=False) for name, type_ in types]


def row_groups(rows: Rows, budget: int, min_rows: int = 256) -> list[tuple[int, int]]:
    """(start, stop) of consecutive row groups of about ``budget`` bytes of values each, and at
    least ``min_rows`` rows (but the last): whole rows, so a long text's row is never split."""
    total = len(rows)
    if total == 0:
        return []
    cumulative = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(rows.row_bytes(), out=cumulative[1:])
    bounds, start = [], 0
    while start < total:
        stop = int(np.searchsorted(cumulative, cumulative[start] + budget, side="right")) - 1
        stop = min(total, max(stop, start + min_rows))
        bounds.append((start, stop))
        start = stop
    return bounds


# -- Arrow arrays from numpy buffers ---------------------------------------------------------------
def _primitive(values: np.ndarray) -> Any:
    import pyarrow as pa

    types = {
        np.dtype(np.float32): pa.float32(),
        np.dtype(np.int32): pa.int32(),
        np.dtype(np.int64): pa.int64(),
    }
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(types[values.dtype], len(values), [None, pa.py_buffer(values)])


def _fixed_size_lists(rows: np.ndarray) -> Any:
    """A ``fixed_size_list<float32>[dim]`` array of the rows of a float32 ``(n, dim)`` array."""
    import pyarrow as pa

    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(_primitive(rows.reshape(-1)), rows.shape[1])


def _lists(offsets: np.ndarray, values: Any) -> Any:
    """A ``list<...>`` array: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""
    import pyarrow as pa

    return pa.Array.from_buffers(
        pa.list_(values.type), len(offsets) - 1, [None, pa.py_buffer(offsets)], children=[values]
    )


def _offsets(lengths: list[int]) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:  # a row group is a few MB: never, but not silently wrapped either
        raise ValueError(f"{offsets[-1]} list items in one row group do not fit Arrow's 32-bit offsets")
    return offsets.astype(np.int32)


def _flat(arrays: list[np.ndarray], dtype: type, empty_shape: tuple[int, ...]) -> np.ndarray:
    """The arrays end to end, as one contiguous array of ``dtype``."""
    if not arrays:
        return np.zeros(empty_shape, dtype=dtype)
    return np.concatenate(arrays).astype(dtype, copy=False)
