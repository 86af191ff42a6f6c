"""A corpus run: check everything that can be checked before a model is loaded (:func:`plan`),
then read, embed and write one window at a time (:func:`run`), committing after each window, and
every few seconds of work within one, so an interrupted run can be resumed where its output ends.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ..engine.embedder import TOKENIZE_WINDOW
from ..engine.stream import STREAM_WINDOW, Progress
from .encoders import Encoder, Model
from .inputs import STDIN, CorpusError, CorpusUsageError, Input, fingerprint, plan_inputs, read_texts
from .outputs import WRITERS, check_kind, check_output, output_format, partial_path
from .resume import clear_state, differences, load_state, save_state, state_path
from .rows import M3_KIND, m3_outputs

#: Seconds of work after which a run commits what it has embedded, even in the middle of a window:
#: a Ctrl-C or a crash then loses seconds, not a 16,384-text window (a minute or more on a CPU).
#: Commits fall on the window's 4,096-text sort windows, so the vectors do not depend on when they
#: happen (see :func:`run`).
COMMIT_SECONDS = 5.0


@dataclass
class Job:
    """What a run will do, decided before the model is loaded.

    Attributes:
        inputs: the inputs, in order.
        output: the output path, or None for JSONL on stdout.
        format: "npy", "jsonl" or "parquet".
        with_text: whether JSONL / Parquet rows carry their text.
        window: texts read, embedded, written and committed per step.
        fingerprint: what a resume must find unchanged (see :mod:`.resume`).
        resume_from: the saved state of the partial run this one continues, if any.
        complete: the output is already finished (a resume after the last commit); nothing to do.
        notes: what the command should tell the user before it starts (e.g. "resuming ...").
    """

    inputs: list[Input]
    output: str | None
    format: str
    with_text: bool = True
    window: int = STREAM_WINDOW
    fingerprint: dict[str, Any] = field(default_factory=dict)
    resume_from: dict[str, Any] | None = None
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rows_done(self) -> int:
        return self.resume_from["rows"] if self.resume_from else 0


def plan(
    paths: list[str],
    output: str | None,
    *,
    field: str | None = None,
    column: str | None = None,
    with_text: bool = True,
    window: int = STREAM_WINDOW,
    options: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Job:
    """Check the output, the inputs and any partial run, before anything is loaded or read.

    ``options`` are the settings that change the vectors (model, prompt, max length, batch size,
    ...); they go into the fingerprint a resume compares.

    Raises:
        CorpusError: an unknown output extension (naming the known ones), a missing or read-only
            output folder, a missing input or a directory given as one, an existing output
            without ``overwrite``, or a resume whose inputs or options changed.
    """
    fmt = output_format(output)
    if window <= 0:
        raise CorpusError(f"window must be a positive number of texts, got {window}")
    if output is not None:
        check_output(output)
    inputs = plan_inputs(paths, field, column)
    if output is not None and any(
        i.path != STDIN and Path(i.path).resolve() == Path(output).resolve() for i in inputs
    ):
        raise CorpusError(f"{output} is also an input: write the vectors to another file")
    if resume and output is None:
        raise CorpusError("--resume needs an output file (-o): stdout cannot be continued")
    if resume and any(i.path == STDIN for i in inputs):
        raise CorpusError("--resume needs input files: stdin cannot be checked for changes")
    job = Job(inputs, output, fmt, with_text, window)
    if output is None:
        return job
    job.fingerprint = {
        "inputs": [] if any(i.path == STDIN for i in inputs) else fingerprint(inputs),
        "format": fmt,
        "with_text": with_text,
        "window": window,
        **(options or {}),
    }
    _check_previous_run(job, resume, overwrite)
    return job


def _check_previous_run(job: Job, resume: bool, overwrite: bool) -> None:
    """Decide what to do with what a previous run left, before any work.

    Only a partial output together with its state file can be continued. Either one alone is
    removed, as nothing in it can be resumed: a state file whose partial output is gone (the run
    finished, or its partial was deleted), or a partial output without a state file (the run was
    killed before its first commit; runs that fail or are interrupted remove it themselves).
    """
    assert job.output is not None
    output, partial, state_file = job.output, partial_path(job.output), state_path(job.output)
    if overwrite:
        _remove(partial)
        clear_state(output)
        return
    state = load_state(output) if state_file.exists() else None
    if state is not None and not partial.exists():
        if resume and _exists(output):  # finished, then stopped before the state file was removed
            _check_unchanged(job, state)
            clear_state(output)
            job.complete = True
            job.notes.append(f"{output} is already complete")
            return
        clear_state(output)
        state = None
    if state is None and partial.exists():
        _remove(partial)
        job.notes.append(
            f"removed {partial}: the run that wrote it stopped before its first commit, "
            "so nothing in it could be resumed"
        )
    if not resume:
        if state is not None:
            raise CorpusError(
                f"{partial} holds an unfinished run ({state['rows']} rows committed): "
                "pass --resume to continue it, or --overwrite to start over"
            )
        if _exists(output):
            raise CorpusError(f"{output} exists: pass --overwrite to replace it")
        return
    if state is not None:
        _check_unchanged(job, state)
        job.resume_from = state
        job.notes.append(f"resuming {output} after {state['rows']} rows")
        return
    if _exists(output):
        raise CorpusError(
            f"{output} exists and there is no partial run to resume: pass --overwrite to redo it"
        )
    job.notes.append(f"nothing to resume for {output}; starting from the beginning")


def _check_unchanged(job: Job, state: dict[str, Any]) -> None:
    changes = differences(state["fingerprint"], job.fingerprint)
    if changes:
        raise CorpusError(
            f"cannot resume {job.output}: the run changed since it was interrupted ("
            + "; ".join(changes)
            + "); rerun it as it was, or pass --overwrite to start over"
        )


def run(
    job: Job,
    model: Model | Encoder,
    *,
    batch_size: int | None = None,
    prompt: str = "",
    progress: Progress | None = None,
    commit_seconds: float = COMMIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    query: bool = False,
) -> int:
    """Embed the job's inputs into its output; returns the rows written in all.

    ``model`` is a ``TextEmbedding``, a ``SparseTextEmbedding``, a ``LateInteractionTextEmbedding``
    or a ``BGEM3`` (or an :class:`~.encoders.Encoder` of one, which says which of a ``BGEM3``'s
    outputs to write); its kind decides the rows' columns (:mod:`.rows`).
    ``query`` encodes the texts as queries (:mod:`.encoders`).

    Texts are embedded a sort window (``TOKENIZE_WINDOW`` texts, or the job's window if smaller)
    at a time, the windows and their sort windows counted from the first row of the input, as
    one ``embed()`` call over each window would cut them. Each sort window's rows are written as
    soon as they are embedded (what is held is one sort window, whatever the window), and
    committed (the output made durable, then the state file rewritten) at the end of each
    window, and at the end of any sort window that finishes ``commit_seconds`` or more after the
    last commit. A resume restarts at a commit, which is always a sort-window boundary of the
    same grid, so its rows equal an uninterrupted run's whenever the commits happened; a crash
    or Ctrl-C loses the work since the last commit. Rows are numbered from 0 across all inputs.

    A run that fails or is interrupted before its first commit removes its partial output: there
    is nothing in it a resume could use.

    Raises:
        CorpusUsageError: the output format cannot hold the model's rows (``.npy`` of a sparse or
            multi-vector model), or a prompt for a ColBERT model.
        CorpusError: a resume with a model that makes other rows than the partial output holds.
    """
    if job.complete:
        return job.rows_done
    encoder = model if isinstance(model, Encoder) else Encoder(model, query=query)
    check_kind(job.output, encoder.kind)
    try:
        encoder.check_prompt(prompt)
    except ValueError as exc:
        raise CorpusUsageError(str(exc)) from None
    saved = job.resume_from
    if saved is not None and (saved.get("kind", "dense"), saved.get("dim")) != (encoder.kind, encoder.dim):
        raise CorpusError(
            f"cannot resume {job.output}: it holds {_rows_of(saved.get('kind', 'dense'), saved.get('dim'))}, "
            f"the model makes {_rows_of(encoder.kind, encoder.dim)}"
        )
    rows = committed = job.rows_done
    sort_window = min(TOKENIZE_WINDOW, job.window)
    writer = WRITERS[job.format](job.output, encoder.dim, job.with_text, encoder.kind)
    writer.open(saved["writer"] if saved else None)
    durable = saved is not None  # whether a state file exists that a resume could continue from

    def commit() -> None:
        nonlocal committed, durable, last_commit
        state = writer.commit(rows)
        if job.output is not None:
            save_state(
                job.output,
                {
                    "fingerprint": job.fingerprint,
                    "rows": rows,
                    "kind": encoder.kind,
                    "dim": encoder.dim,
                    "writer": state,
                },
            )
            durable = True
        committed = rows
        last_commit = clock()

    try:
        texts = read_texts(job.inputs, skip=rows)
        last_commit = clock()
        while True:
            window_end = (rows // job.window + 1) * job.window
            chunk = list(islice(texts, min(sort_window, window_end - rows)))
            if chunk:
                embedded = encoder.embed(
                    chunk, batch_size=batch_size, prompt=prompt, progress=progress, first_index=rows
                )
                writer.write(rows, chunk, embedded)
                del embedded
                rows += len(chunk)
            if rows > committed and (
                not chunk or rows == window_end or clock() - last_commit >= commit_seconds
            ):
                commit()
            if not chunk:
                break
        writer.finish(rows)
        if job.output is not None:
            clear_state(job.output)
    except BaseException:
        writer.close()
        if job.output is not None and not durable:  # nothing committed: nothing worth keeping
            _remove(partial_path(job.output))
        raise
    writer.close()
    return rows


def _rows_of(kind: str, dim: Any) -> str:
    if kind.startswith(M3_KIND):
        return f"BGE-M3 rows of {' and '.join(m3_outputs(kind))} ({dim} dims)"
    if kind == "sparse":
        return f"sparse vectors over {dim} words"
    if kind == "multi-vector":
        return f"multi-vector rows of {dim}-dim token vectors"
    return f"{dim}-dim vectors"


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
