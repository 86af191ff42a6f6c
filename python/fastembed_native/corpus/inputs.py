"""Reading a corpus: text files (one text per line), JSONL records (``--field``), Parquet columns
(``--column``) and stdin, streamed record by record, in order, across several files.

Every problem names its file and line (or Parquet row): bytes that are not UTF-8, a directory given
as a file, a JSONL record without the field, a Parquet file without the column.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import FastembedNativeError

STDIN = "-"
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
#: Files that are JSONL by name: read as text lines they would embed raw JSON, so --field is required.
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PYARROW_HINT = "pip install 'fastembed-native[corpus]', or from a source checkout pip install '.[corpus]'"


class CorpusError(FastembedNativeError, ValueError):
    """A corpus input or output that cannot be used: the message names the file (and line)."""


class CorpusUsageError(CorpusError):
    """Options that do not fit the inputs (a JSONL file without ``--field``, ``--column`` without a
    Parquet input) or need a missing extra (pyarrow for Parquet): the command line exits with
    status 2 for these, like argparse for its own usage errors."""


@dataclass(frozen=True)
class Input:
    """One input: a path (or ``-`` for stdin) and how its records are read."""

    path: str
    kind: str  # "lines", "jsonl" or "parquet"
    key: str | None = None  # the JSONL field or the Parquet column

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == STDIN else self.path


def plan_inputs(paths: list[str], field: str | None, column: str | None) -> list[Input]:
    """Check the input paths before any work and decide how each is read.

    A ``.parquet`` file is read by column (``column``, default "text"); with ``field`` every other
    input is JSONL; otherwise one text per line. No path (or ``-``) means stdin.

    Raises:
        CorpusUsageError: a ``.jsonl`` / ``.ndjson`` file without ``field`` (its raw JSON lines
            would be embedded), ``column`` when no input is Parquet, ``field`` when every input is.
        CorpusError: a missing, unreadable or directory input; stdin named twice.
    """
    inputs = []
    for path in paths or [STDIN]:
        if path != STDIN:
            if Path(path).is_dir():
                raise CorpusError(f"{path}: is a directory, expected a file of texts")
            if not Path(path).exists():
                raise CorpusError(f"{path}: no such file")
            if not os.access(path, os.R_OK):
                raise CorpusError(f"{path}: not readable (permission denied)")
        if path.lower().endswith(PARQUET_SUFFIXES):
            _require_pyarrow(f"reading {path}")
            inputs.append(Input(path, "parquet", column or "text"))
        elif field is not None:
            inputs.append(Input(path, "jsonl", field))
        elif path.lower().endswith(JSONL_SUFFIXES):
            raise CorpusUsageError(
                f"{path} is JSONL: pass --field NAME to say which field of each record to embed "
                "(without it every line would be embedded as raw JSON text)"
            )
        else:
            inputs.append(Input(path, "lines"))
    if sum(i.path == STDIN for i in inputs) > 1:
        raise CorpusError("stdin ('-') can be read only once")
    kinds = {i.kind for i in inputs}
    if column is not None and "parquet" not in kinds:
        raise CorpusUsageError(
            f"--column {column} names the text column of Parquet inputs, and no input is Parquet "
            f"({', '.join(i.name for i in inputs)}): leave --column out"
            + ("" if field is not None else ", or pass --field NAME for a field of JSONL records")
        )
    if field is not None and kinds == {"parquet"}:
        raise CorpusUsageError(
            f"--field {field} names a field of JSONL records, and every input is Parquet: "
            "choose the text column with --column instead"
        )
    return inputs


def fingerprint(inputs: list[Input]) -> list[dict[str, Any]]:
    """What identifies the inputs for ``--resume``: path, size and modification time of each file."""
    prints = []
    for item in inputs:
        stat = os.stat(item.path)
        prints.append(
            {
                "path": str(Path(item.path).resolve()),
                "kind": item.kind,
                "key": item.key,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
        )
    return prints


def read_texts(inputs: list[Input], skip: int = 0) -> Iterator[str]:
    """The texts of all inputs in order, lazily, leaving out the first ``skip`` (for a resume).

    Raises:
        CorpusError: a line that is not UTF-8, a JSONL line that is not an object with a string
            ``field``, a Parquet file without the column or with a null in it (file and line named).
    """
    for item in inputs:
        if item.kind == "parquet":
            texts, skipped = _parquet_texts(item, skip)
        else:
            texts, skipped = _line_texts(item, skip)
        skip -= skipped
        yield from texts


def count_texts(inputs: list[Input]) -> int | None:
    """How many texts the inputs hold (a quick pass over the files, for the progress bar's ETA);
    None when an input is stdin."""
    total = 0
    for item in inputs:
        if item.path == STDIN:
            return None
        if item.kind == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(item.path).metadata.num_rows
            continue
        with open(item.path, "rb") as stream:
            if item.kind == "jsonl":
                total += sum(1 for line in stream if line.strip())
            else:
                total += sum(1 for _ in stream)
    return total


def _open(item: Input) -> BinaryIO:
    if item.path == STDIN:
        return sys.stdin.buffer
    return open(item.path, "rb")


def _line_texts(item: Input, skip: int) -> tuple[Iterator[str], int]:
    """Texts of a line-based input, and how many of ``skip`` it used up (without decoding them)."""
    stream = _open(item)
    numbered = enumerate(stream, 1)
    skipped = 0
    if skip:
        if item.kind == "lines":
            skipped = sum(1 for _ in islice(numbered, skip))
        else:
            for _, raw in numbered:
                if raw.strip():
                    skipped += 1
                    if skipped == skip:
                        break
    return _decode_lines(item, stream, numbered), skipped


def _decode_lines(item: Input, stream: BinaryIO, numbered: Iterator[tuple[int, bytes]]) -> Iterator[str]:
    try:
        for number, raw in numbered:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise CorpusError(
                    f"{item.name}:{number}: not valid UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1}); "
                    "convert the file to UTF-8, e.g. with iconv"
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark is not text
            line = line.rstrip("\r\n")
            if item.kind == "lines":
                yield line
            elif line.strip():
                yield _field(item, number, line)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _field(item: Input, number: int, line: str) -> str:
    assert item.key is not None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{item.name}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise CorpusError(f"{item.name}:{number}: expected a JSON object, got {type(record).__name__}")
    if item.key not in record:
        fields = ", ".join(map(repr, record)) or "none"
        raise CorpusError(f"{item.name}:{number}: record has no field {item.key!r} (its fields: {fields})")
    value = record[item.key]
    if not isinstance(value, str):
        raise CorpusError(
            f"{item.name}:{number}: field {item.key!r} is {type(value).__name__}, expected a string"
        )
    return value


def _parquet_texts(item: Input, skip: int) -> tuple[Iterator[str], int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert item.key is not None
    try:
        parquet = pq.ParquetFile(item.path if item.path != STDIN else sys.stdin.buffer)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorpusError(f"{item.name}: not a readable Parquet file ({exc})") from None
    schema = parquet.schema_arrow
    if item.key not in schema.names:
        raise CorpusError(
            f"{item.name}: no column {item.key!r} (its columns: {', '.join(schema.names)}); "
            "choose one with --column"
        )
    kind = schema.field(item.key).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise CorpusError(f"{item.name}: column {item.key!r} holds {kind}, expected strings")
    rows = parquet.metadata.num_rows
    skipped = min(skip, rows)
    # Start at the row group that holds the first row wanted; drop the rows before it in there.
    first_group, group_start = 0, 0
    while first_group < parquet.num_row_groups:
        size = parquet.metadata.row_group(first_group).num_rows
        if group_start + size > skipped:
            break
        group_start += size
        first_group += 1

    def texts() -> Iterator[str]:
        row = group_start
        drop = skipped - group_start
        groups = list(range(first_group, parquet.num_row_groups))
        if not groups:
            return
        for batch in parquet.iter_batches(batch_size=4096, row_groups=groups, columns=[item.key]):
            values = batch.column(0)
            if values.null_count:
                first_null = next(i for i, v in enumerate(values.is_null().to_pylist()) if v)
                raise CorpusError(
                    f"{item.name}: row {row + first_null} (counting from 0): column {item.key!r} is null"
                )
            chunk = values.to_pylist()
            row += len(chunk)
            if drop:
                chunk, drop = chunk[drop:], max(0, drop - len(chunk))
            yield from chunk

    return texts(), skipped


def _require_pyarrow(purpose: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CorpusUsageError(f"{purpose} needs pyarrow: {PYARROW_HINT}") from None
