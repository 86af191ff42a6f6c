"""Writing vectors as they come: ``.npy``, ``.jsonl``, ``.parquet`` files, or JSONL to stdout.

A file output is written to ``<out>.partial`` (a folder of parts for Parquet) and renamed to
``<out>`` only when the last row is in, so a partial file is never mistaken for a finished one.
After each window a writer *commits*: its bytes reach the disk (fsync) and it reports the state
that a resume needs to cut the partial output back to that point (see :mod:`.resume`).

- ``.npy``: float32 ``(rows, dim)``. Rows are appended with plain writes behind a fixed-size header
  that is rewritten with the row count at every commit, so the partial file is itself a valid
  ``.npy`` of the committed rows. Not a memory map: mapped pages that were written count in the
  process's RSS, which would grow with the output instead of staying flat.
- ``.jsonl``: one ``{"id", "text", "embedding"}`` object per line (``text`` unless ``--no-text``).
- ``.parquet``: columns ``id`` (int64), ``text`` (unless ``--no-text``) and ``embedding``
  (``fixed_size_list<float32>[dim]``), one row group per window. A Parquet file cannot be
  appended to nor read before its footer is written, so each window is a complete part file in
  ``<out>.partial/``; finishing copies the parts, a row group each, into ``<out>``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .inputs import PYARROW_HINT, CorpusError

#: Output formats by file extension (compared case-insensitively).
OUTPUT_FORMATS = {".jsonl": "jsonl", ".npy": "npy", ".parquet": "parquet"}


def output_format(path: str | None) -> str:
    """The format of an output path, from its extension; JSONL for stdout (None)."""
    if path is None:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise CorpusError(
            f"cannot tell the output format of {path}: {suffix or 'no extension'} is not one of {known}"
        )
    return OUTPUT_FORMATS[suffix]


def check_output(path: str) -> None:
    """Refuse an output that cannot be written, before any model is loaded or text read."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CorpusError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CorpusError(f"cannot write {path}: folder {folder} is not writable")
    if target.is_dir():
        raise CorpusError(f"cannot write {path}: it is a directory")
    if output_format(path) == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CorpusError(f"writing {path} needs pyarrow: {PYARROW_HINT}") from None


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an output grows until it is finished."""
    return Path(f"{os.fspath(path)}.partial")


class Writer(ABC):
    """Rows in, a finished file out. Subclasses write one format."""

    def __init__(self, path: str | None, dim: int, with_text: bool) -> None:
        self.path = path
        self.dim = dim
        self.with_text = with_text

    @abstractmethod
    def open(self, resume: dict[str, Any] | None) -> None:
        """Start a new partial output, or continue one from its last commit's state."""

    @abstractmethod
    def write(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        """Append one window: ids ``first_id ...``, its texts and its float32 ``(n, dim)`` vectors."""

    @abstractmethod
    def commit(self, rows: int) -> dict[str, Any]:
        """Make the ``rows`` rows written so far durable; return what a resume needs."""

    @abstractmethod
    def finish(self, rows: int) -> None:
        """Complete the output (``rows`` rows in all) and move it to its final path."""

    @abstractmethod
    def close(self) -> None:
        """Release open files, leaving the partial output as it is (after an error or Ctrl-C)."""


class NpyWriter(Writer):
    # Header bytes before the data: magic (6) + version (2) + length (2) + the dict, space-padded.
    # 128 leaves room for any row count and keeps the data 64-byte aligned as numpy wants.
    HEADER_BYTES = 128

    def open(self, resume: dict[str, Any] | None) -> None:
        assert self.path is not None
        partial = partial_path(self.path)
        if resume is None:
            self._file: BinaryIO = open(partial, "wb")  # noqa: SIM115 - closed by finish/close
            self._file.write(self._header(0))
        else:
            self._file = open(partial, "r+b")  # noqa: SIM115
            self._file.truncate(resume["bytes"])  # rows written after the last commit are dropped
            self._file.seek(0, os.SEEK_END)

    def _header(self, rows: int) -> bytes:
        fields = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {self.dim}), }}"
        size = self.HEADER_BYTES - 10
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", size) + fields.ljust(size - 1).encode() + b"\n"

    def write(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(vectors, dtype="<f4").data)

    def commit(self, rows: int) -> dict[str, Any]:
        end = self._file.tell()
        self._file.seek(0)
        self._file.write(self._header(rows))  # the partial file reads as the rows committed so far
        self._file.seek(end)
        _sync(self._file)
        return {"bytes": end}

    def finish(self, rows: int) -> None:
        assert self.path is not None
        self.commit(rows)
        self._file.close()
        os.replace(partial_path(self.path), self.path)

    def close(self) -> None:
        if hasattr(self, "_file"):
            self._file.close()


class JsonlWriter(Writer):
    def open(self, resume: dict[str, Any] | None) -> None:
        if self.path is None:
            sys.stdout.flush()
            self._file: BinaryIO = sys.stdout.buffer
            return
        partial = partial_path(self.path)
        if resume is None:
            self._file = open(partial, "wb")  # noqa: SIM115 - closed by finish/close
        else:
            self._file = open(partial, "r+b")  # noqa: SIM115
            self._file.truncate(resume["bytes"])  # lines written after the last commit are dropped
            self._file.seek(0, os.SEEK_END)

    def write(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        lines = []
        for i, (text, vector) in enumerate(zip(texts, vectors.tolist(), strict=True)):
            record: dict[str, Any] = {"id": first_id + i}
            if self.with_text:
                record["text"] = text
            record["embedding"] = vector
            lines.append(json.dumps(record) + "\n")
        self._file.write("".join(lines).encode("utf-8"))

    def commit(self, rows: int) -> dict[str, Any]:
        self._file.flush()
        if self.path is None:
            return {}
        _sync(self._file)
        return {"bytes": self._file.tell()}

    def finish(self, rows: int) -> None:
        self.commit(rows)
        if self.path is None:
            return
        self._file.close()
        os.replace(partial_path(self.path), self.path)

    def close(self) -> None:
        if hasattr(self, "_file") and self._file is not sys.stdout.buffer:
            self._file.close()


class ParquetWriter(Writer):
    def open(self, resume: dict[str, Any] | None) -> None:
        import pyarrow as pa

        assert self.path is not None
        self._dir = partial_path(self.path)
        fields = [pa.field("id", pa.int64(), nullable=False)]
        if self.with_text:
            fields.append(pa.field("text", pa.string(), nullable=False))
        fields.append(pa.field("embedding", pa.list_(pa.float32(), self.dim), nullable=False))
        self._schema = pa.schema(fields)
        if resume is None:
            self._dir.mkdir()
            self._parts = 0
            return
        self._parts = resume["parts"]
        for part in self._dir.glob("part-*.parquet"):  # written after the last commit
            if int(part.stem.split("-")[1]) >= self._parts:
                part.unlink()

    def _part(self, index: int) -> Path:
        return self._dir / f"part-{index:06d}.parquet"

    def write(self, first_id: int, texts: list[str], vectors: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        columns = [pa.array(np.arange(first_id, first_id + len(vectors), dtype=np.int64))]
        if self.with_text:
            columns.append(pa.array(texts, pa.string()))
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim))
        table = pa.Table.from_arrays(columns, schema=self._schema)
        staging = self._dir / f".part-{self._parts:06d}.tmp"
        pq.write_table(table, staging, row_group_size=len(vectors))
        with open(staging, "rb") as written:
            os.fsync(written.fileno())
        os.replace(staging, self._part(self._parts))  # a part is whole or absent
        self._parts += 1

    def commit(self, rows: int) -> dict[str, Any]:
        _sync_dir(self._dir)
        return {"parts": self._parts}

    def finish(self, rows: int) -> None:
        import pyarrow.parquet as pq

        assert self.path is not None
        merged = self._dir / ".merged.tmp"
        with pq.ParquetWriter(merged, self._schema) as writer:
            for index in range(self._parts):  # one part in memory at a time
                writer.write_table(pq.read_table(self._part(index), schema=self._schema))
        with open(merged, "rb") as written:
            os.fsync(written.fileno())
        os.replace(merged, self.path)
        shutil.rmtree(self._dir)

    def close(self) -> None:
        """Nothing stays open between windows: each part file is written whole."""


WRITERS: dict[str, type[Writer]] = {"npy": NpyWriter, "jsonl": JsonlWriter, "parquet": ParquetWriter}


def _sync(stream: BinaryIO) -> None:
    stream.flush()
    os.fsync(stream.fileno())


def _sync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
