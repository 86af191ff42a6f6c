"""A corpus run: check everything that can be checked before a model is loaded (:func:`plan`),
then read, embed and write one window at a time (:func:`run`), committing after each window so an
interrupted run can be resumed where its output ends.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ..engine import Embedder
from ..engine.stream import STREAM_WINDOW, Progress, embed_window
from .inputs import STDIN, CorpusError, Input, fingerprint, plan_inputs, read_texts
from .outputs import WRITERS, check_output, output_format, partial_path
from .resume import clear_state, differences, load_state, save_state, state_path


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
    assert job.output is not None
    output, partial, state_file = job.output, partial_path(job.output), state_path(job.output)
    if overwrite:
        _remove(partial)
        clear_state(output)
        return
    state = load_state(output) if state_file.exists() else None
    if not resume:
        if partial.exists() or state is not None:
            raise CorpusError(
                f"{partial} holds an unfinished run: pass --resume to continue it, or --overwrite to start over"
            )
        if _exists(output):
            raise CorpusError(f"{output} exists: pass --overwrite to replace it")
        return
    if state is not None:
        changes = differences(state["fingerprint"], job.fingerprint)
        if changes:
            raise CorpusError(
                f"cannot resume {output}: the run changed since it was interrupted ("
                + "; ".join(changes)
                + "); rerun it as it was, or pass --overwrite to start over"
            )
        if not partial.exists():
            if _exists(output):  # finished, then stopped before the state file was removed
                clear_state(output)
                job.complete = True
                job.notes.append(f"{output} is already complete")
                return
            raise CorpusError(f"{state_file} exists but {partial} does not; pass --overwrite to start over")
        job.resume_from = state
        job.notes.append(f"resuming {output} after {state['rows']} rows")
        return
    if _exists(output):
        raise CorpusError(
            f"{output} exists and there is no partial run to resume: pass --overwrite to redo it"
        )
    if partial.exists():  # stopped before its first commit: nothing in it is worth keeping
        _remove(partial)
    job.notes.append(f"nothing to resume for {output}; starting from the beginning")


def run(
    job: Job,
    model: Embedder,
    *,
    batch_size: int | None = None,
    prompt: str = "",
    progress: Progress | None = None,
) -> int:
    """Embed the job's inputs into its output, window by window; returns the rows written in all.

    After each window the output is made durable and the state file rewritten, so a crash or
    Ctrl-C loses at most the window in flight. Rows are numbered from 0 across all inputs.
    """
    if job.complete:
        return job.rows_done
    saved = job.resume_from
    if saved is not None and saved.get("dim") != model.dim:
        raise CorpusError(
            f"cannot resume {job.output}: it holds {saved.get('dim')}-dim vectors, the model makes {model.dim}"
        )
    rows = job.rows_done
    writer = WRITERS[job.format](job.output, model.dim, job.with_text)
    writer.open(saved["writer"] if saved else None)
    try:
        texts = read_texts(job.inputs, skip=rows)
        while window := list(islice(texts, job.window)):
            vectors = embed_window(
                model, window, batch_size=batch_size, prompt=prompt, progress=progress, first_index=rows
            )
            writer.write(rows, window, vectors)
            rows += len(window)
            state = writer.commit(rows)
            if job.output is not None:
                save_state(
                    job.output,
                    {"fingerprint": job.fingerprint, "rows": rows, "dim": model.dim, "writer": state},
                )
        writer.finish(rows)
        if job.output is not None:
            clear_state(job.output)
    finally:
        writer.close()
    return rows


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
