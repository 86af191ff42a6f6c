"""Writing vectors as they come: ``.npy``, ``.jsonl``, ``.parquet`` files, or JSONL to stdout.

A file output is written to ``<out>.partial`` (a folder of parts for Parquet) and renamed to
``<out>`` only when the last row is in, so a partial file is never mistaken for a finished one.
Rows are written as they are embedded (a sort window at a time); after each window, and every few
seconds of work within one, a writer *commits*: its bytes reach the disk (fsync) and it reports the
state that a resume needs to cut the partial output back to that point (see :mod:`.resume`).

What a row holds depends on the model's kind (:mod:`.rows`): a dense vector, a sparse vector
(indices and values), one vector per token (multi-vector), or several of BGE-M3's outputs side by
side. Every format takes dense rows; ``.jsonl`` and ``.parquet`` take the other kinds too, whose
rows differ in length.

- ``.npy``: float32 ``(rows, dim)``, dense rows only (:func:`check_kind`). Rows are appended with
  plain writes behind a fixed-size header that is rewritten with the row count at every commit, so
  the partial file is itself a valid ``.npy`` of the committed rows. Not a memory map: mapped pages
  that were written count in the process's RSS, which would grow with the output instead of
  staying flat.
- ``.jsonl``: one ``{"id", "text", "embedding"}`` object per line (``text`` unless ``--no-text``);
  a sparse row has ``"indices"`` and ``"values"`` instead of ``"embedding"``, and a multi-vector
  row's ``"embedding"`` is a list of token vectors; a BGE-M3 row has the fields of each output it
  holds (its ColBERT vectors as ``"colbert"``). Each float is written as the shortest decimal
  that reads back as the same float32 (orjson), not as the 17 digits of the float64 it would
  become in Python; serialised a few hundred lines at a time, so no window's worth of text is
  ever held.
- ``.parquet``: columns ``id`` (int64), ``text`` (unless ``--no-text``) and the kind's columns:
  ``embedding`` (``fixed_size_list<float32>[dim]``); ``indices`` (``list<int32>``) and ``values``
  (``list<float32>``); or ``embedding`` (``list<fixed_size_list<float32>[dim]>``); BGE-M3's side by
  side (``embedding``, ``indices``, ``values``, ``colbert``, as its outputs are asked); in row groups
  of about ``ROW_GROUP_BYTES`` of values (whole rows, 256 at least). A Parquet file cannot be
  appended to nor read before its footer is written, so each write is also a complete part file
  in ``<out>.partial/``, and a commit records how many there are, which is what a resume continues
  from (see :class:`ParquetWriter`). Row groups, not windows, bound what Arrow holds while encoding.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from .inputs import PYARROW_HINT, CorpusError, CorpusUsageError
from .rows import KIND_NAMES, M3_KIND, Rows, arrow_fields, as_rows, m3_outputs, row_groups

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
            raise CorpusUsageError(f"writing {path} needs pyarrow: {PYARROW_HINT}") from None


def check_kind(path: str | None, kind: str) -> None:
    """Refuse an output format that cannot hold a kind's rows (``.npy`` holds dense rows only),
    naming the model's kind and the formats that can.

    Raises:
        CorpusUsageError: ``path`` is a ``.npy`` file and ``kind`` is not "dense".
    """
    if kind == "dense" or output_format(path) != "npy":
        return
    assert path is not None
    if kind.startswith(M3_KIND):
        ragged = [o for o in m3_outputs(kind) if o != "dense"]
        what = f"{' and '.join(ragged)} output{'s give' if len(ragged) > 1 else ' gives'}"
        raise CorpusUsageError(
            f"cannot write {path}: BGE-M3's {what} each text a different number of values, which a "
            ".npy array cannot hold; write .parquet or .jsonl instead (or leave --outputs out for its "
            "dense vectors alone in .npy)"
        )
    what = "active vocabulary entries" if kind == "sparse" else "token vectors"
    columns = "indices and values columns" if kind == "sparse" else "an embedding column of token vectors"
    raise CorpusUsageError(
        f"cannot write {path}: {KIND_NAMES[kind]} gives each text a different number of {what}, "
        f"which a .npy array cannot hold; write .parquet ({columns}) or .jsonl instead"
    )


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an output grows until it is finished."""
    return Path(f"{os.fspath(path)}.partial")


class Writer(ABC):
    """Rows in, a finished file out. Subclasses write one format.

    ``dim`` is the width of a dense vector or of each token vector (a sparse row's vocabulary size
    is not needed); ``kind`` is "dense", "sparse" or "multi-vector" (:mod:`.rows`).
    """

    def __init__(self, path: str | None, dim: int, with_text: bool, kind: str = "dense") -> None:
        self.path = path
        self.dim = dim
        self.with_text = with_text
        self.kind = kind

    @abstractmethod
    def open(self, resume: dict[str, Any] | None) -> None:
        """Start a new partial output, or continue one from its last commit's state."""

    @abstractmethod
    def write(self, first_id: int, texts: list[str], vectors: Rows | np.ndarray) -> None:
        """Append rows: ids ``first_id ...``, their texts and their :class:`Rows` (a float32
        ``(n, dim)`` array for dense rows); any number of times between commits."""

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
        check_kind(self.path, self.kind)
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

    def write(self, first_id: int, texts: list[str], vectors: Rows | np.ndarray) -> None:
        rows = as_rows(vectors)
        if rows.kind != "dense":
            check_kind(self.path, rows.kind)
        self._file.write(np.ascontiguousarray(rows.vectors, dtype="<f4").data)  # type: ignore[attr-defined]

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

    #: Lines serialised per write: a few MB of text at most, whatever the window.
    LINES_PER_WRITE = 512
    #: A float32 row goes to orjson as it is (no list of Python floats): shortest round-trip digits.
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE

    def write(self, first_id: int, texts: list[str], vectors: Rows | np.ndarray) -> None:
        rows = as_rows(vectors)
        for start in range(0, len(rows), self.LINES_PER_WRITE):
            lines = []
            for i in range(start, min(start + self.LINES_PER_WRITE, len(rows))):
                record: dict[str, Any] = {"id": first_id + i}
                if self.with_text:
                    record["text"] = texts[i]
                record.update(rows.record(i))
                lines.append(orjson.dumps(record, option=self._OPTIONS))
            self._file.write(b"".join(lines))

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
    """Parts for resume, and the finished file written alongside them.

    Each write's rows go to a part file (whole or absent; a commit records how many parts there
    are, which is what a resume continues from) and, as the same row groups, to the output file
    being written in ``<out>.partial/`` (its footer comes last, so it is only readable once
    finished). Finishing closes it and renames it: nothing is
    read back. A resumed run starts that file again from the committed parts, a row group at a
    time, then continues as a fresh run does.
    """

    #: Bytes of values per row group: Arrow's encoding buffers grow with a row group, so this bounds
    #: what writing adds to the peak RSS; thousands of rows for the usual few hundred dims.
    ROW_GROUP_BYTES = 4 * 2**20

    def open(self, resume: dict[str, Any] | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert self.path is not None
        self._dir = partial_path(self.path)
        fields = [pa.field("id", pa.int64(), nullable=False)]
        if self.with_text:
            fields.append(pa.field("text", pa.string(), nullable=False))
        fields += arrow_fields(self.kind, self.dim)
        self._schema = pa.schema(fields)
        if resume is None:
            self._dir.mkdir()
            self._parts = 0
        else:
            self._parts = resume["parts"]
            for part in self._dir.glob("part-*.parquet"):  # written after the last commit
                if int(part.stem.split("-")[1]) >= self._parts:
                    part.unlink()
        self._output = pq.ParquetWriter(self._finished_path(), self._schema, **self._options())
        for index in range(self._parts):
            committed = pq.ParquetFile(self._part(index), pre_buffer=False)
            for group in range(committed.num_row_groups):  # one row group in memory at a time
                self._output.write_table(committed.read_row_group(group, use_threads=False))
            committed.close()

    def _finished_path(self) -> Path:
        return self._dir / ".output.tmp"

    def _options(self) -> dict[str, Any]:
        import pyarrow as pa

        return {
            # Dictionary encoding suits repeated texts, not ids or vectors: trying it there
            # only builds a hash table of their values before giving up.
            "use_dictionary": ["text"] if self.with_text else False,
            # malloc hands large freed buffers back; Arrow's default pool (mimalloc) keeps them.
            "memory_pool": pa.system_memory_pool(),
        }

    def _part(self, index: int) -> Path:
        return self._dir / f"part-{index:06d}.parquet"

    def write(self, first_id: int, texts: list[str], vectors: Rows | np.ndarray) -> None:
        """One part file and the same row groups in the output, built one row group at a time."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = as_rows(vectors)
        staging = self._dir / f".part-{self._parts:06d}.tmp"
        with pq.ParquetWriter(staging, self._schema, **self._options()) as part:
            for start, stop in row_groups(rows, self.ROW_GROUP_BYTES):
                columns = [_int64s(np.arange(first_id + start, first_id + stop, dtype=np.int64))]
                if self.with_text:
                    columns.append(_strings(texts[start:stop]))
                columns += [array for _, array in rows.slice(start, stop).arrow_columns()]
                table = pa.Table.from_arrays(columns, schema=self._schema)
                part.write_table(table)
                self._output.write_table(table)
        with open(staging, "rb") as written:
            os.fsync(written.fileno())
        os.replace(staging, self._part(self._parts))  # a part is whole or absent
        self._parts += 1

    def commit(self, rows: int) -> dict[str, Any]:
        _sync_dir(self._dir)
        return {"parts": self._parts}

    def finish(self, rows: int) -> None:
        assert self.path is not None
        self._output.close()  # writes the footer
        with open(self._finished_path(), "rb") as written:
            os.fsync(written.fileno())
        os.replace(self._finished_path(), self.path)
        shutil.rmtree(self._dir)

    def close(self) -> None:
        """After an error or Ctrl-C the output in progress is dropped; the parts stay for --resume."""
        if hasattr(self, "_output"):
            self._output.close()


# Arrow arrays made from their buffers, not with pa.array(): that one imports pandas (when it is
# installed) to check for pandas types, 55 MB of RSS for nothing here. The numpy memory is shared.
# The vector columns are built the same way, in .rows.
def _int64s(values: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _strings(texts: list[str]) -> Any:
    import pyarrow as pa

    encoded = [text.encode("utf-8") for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(
            pa.string(),
            len(encoded),
            [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))],
        )
    # Over 2 GiB of text in one row group: 64-bit offsets, then cast to the schema's string type,
    # which Arrow refuses if it still does not fit (a clear error rather than wrapped offsets).
    large = pa.Array.from_buffers(
        pa.large_string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )
    return large.cast(pa.string())


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
