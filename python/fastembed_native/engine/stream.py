"""Streaming: texts of any number in, float32 arrays out one window at a time, in input order.

Shared by ``TextEmbedding.embed_iter`` and the corpus command (``fastembed-native embed``), which
both sit above the engine. Memory stays bounded by one window of texts and vectors, whatever the
input's length, and a window is embedded exactly as :meth:`Embedder.embed` embeds the same texts:
the same tokenize-and-sort sub-windows of ``TOKENIZE_WINDOW`` texts, the same token-budget
batches, the same sessions, so the vectors are the same and length sorting keeps its benefit.

With a ``progress`` callback, a sub-window's batches run in small groups so the callback fires
every few batches instead of every 4,096 texts; two driver threads keep the next group's batches
queued behind the current one's, so the groups add no barrier (no idle runner) between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice, pairwise
from typing import Any

import numpy as np
from tokenizers import Encoding

from .embedder import TOKENIZE_WINDOW, Embedder, check_dimensions, check_positive, truncate_dimensions
from .tokens import token_batches

#: Texts per window of a stream: a multiple of TOKENIZE_WINDOW, so a stream's sort windows are the
#: ones embed() would use on the whole input, and big enough that per-window costs (a write, an
#: fsync, a progress refresh) vanish next to embedding 16,384 texts.
STREAM_WINDOW = 4 * TOKENIZE_WINDOW

#: Batches per progress step, per concurrent run: small enough that the bar moves a few times a
#: second on a CPU, large enough that the per-group bookkeeping stays negligible.
_BATCHES_PER_STEP_PER_RUN = 2

Progress = Callable[[int], object]


def embed_stream(
    embedder: Embedder,
    texts: Iterable[str],
    *,
    window: int = STREAM_WINDOW,
    batch_size: int | None = None,
    prompt: str = "",
    dimensions: int | None = None,
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Embed an iterable of texts (a list, a generator, a file's lines) window by window.

    Args:
        embedder: the model.
        texts: strings; read ``window`` at a time, never all at once.
        window: texts per yielded array (the last one may hold fewer).
        batch_size: texts per ONNX Runtime call; default ``embedder.batch_size``.
        prompt: text prepended to every input.
        dimensions: keep the first ``dimensions`` values of each embedding (see ``Embedder.embed``).
        progress: called with a number of texts each time that many more are embedded.

    Yields:
        float32 arrays of shape ``(n, dimensions or dim)``, ``n <= window``, rows in input order.

    Raises:
        TypeError: an item is not a string (the message gives its index in the whole stream).
        ValueError: ``window`` or ``batch_size`` is not a positive int, or a text is not encodable.
    """
    # Checked here, at the call, not at the first next() of a generator.
    check_positive(window, "window")
    check_positive(embedder.batch_size if batch_size is None else batch_size)
    check_dimensions(dimensions, embedder.dim)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be str, not {type(prompt).__name__}")
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a string or an iterable of strings, not {type(texts).__name__}")
    items = iter([texts] if isinstance(texts, str) else texts)
    return _windows(embedder, items, window, batch_size, prompt, dimensions, progress)


def _windows(
    embedder: Embedder,
    items: Iterator[str],
    window: int,
    batch_size: int | None,
    prompt: str,
    dimensions: int | None,
    progress: Progress | None,
) -> Iterator[np.ndarray]:
    start = 0
    with Drivers(embedder) as drivers:
        while chunk := list(islice(items, window)):
            yield _embed_window(embedder, chunk, batch_size, prompt, dimensions, progress, start, drivers)
            start += len(chunk)


def embed_window(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
    prompt: str = "",
    dimensions: int | None = None,
    progress: Progress | None = None,
    first_index: int = 0,
) -> np.ndarray:
    """Embed one window of texts, calling ``progress`` every few batches (see the module docstring).

    ``first_index`` is the window's position in a longer stream, for error messages. Returns the
    same array ``embedder.embed(texts, batch_size, prompt=prompt, dimensions=dimensions)`` returns.
    """
    with Drivers(embedder) as drivers:
        return _embed_window(embedder, texts, batch_size, prompt, dimensions, progress, first_index, drivers)


def _embed_window(
    embedder: Embedder,
    texts: Sequence[str],
    batch_size: int | None,
    prompt: str,
    dimensions: int | None,
    progress: Progress | None,
    first_index: int,
    drivers: Drivers,
) -> np.ndarray:
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(f"texts[{first_index + i}] must be str, not {type(item).__name__}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be str, not {type(prompt).__name__}")
    check_dimensions(dimensions, embedder.dim)
    size = embedder.batch_size if batch_size is None else batch_size
    check_positive(size)
    items = [prompt + text for text in texts] if prompt else list(texts)
    out = np.empty((len(items), embedder.dim), dtype=np.float32)
    # As embed(): with fewer dimensions, normalise after truncating, not before.
    normalize = None if dimensions is None else False
    skip = embedder.prompt_tokens(prompt)  # as embed(): a prompt may be left out of the pooling
    for start in range(0, len(items), TOKENIZE_WINDOW):
        encodings = embedder.tokenizer.encode(items[start : start + TOKENIZE_WINDOW], first_index + start)
        rows = out[start : start + len(encodings)]
        if progress is None:
            embedder.embed_encodings(encodings, rows, size, normalize=normalize, skip_prefix=skip)
        else:
            drivers.embed_in_steps(encodings, rows, size, normalize, skip, progress)
    if dimensions is None:
        return out
    return truncate_dimensions(out, dimensions, embedder.normalize)


class Drivers:
    """Two threads that each hand one group of batches at a time to the embedder's own run pool.

    Each group is a call to ``embed_encodings`` on texts that are already sorted and start at a
    batch boundary, so it cuts the very batches the whole sub-window would have been cut into,
    and runs them on the same session; only the moments the progress callback fires differ. The
    sparse and multi-vector heads step the same way (:meth:`run_in_steps`, used by the corpus
    command), on their engine's sessions and with their own token budget.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._pool: ThreadPoolExecutor | None = None  # made on first use

    def __enter__(self) -> Drivers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            # After an error or Ctrl-C: drop the groups not yet started, let the running ones end,
            # so no thread writes into an array its caller has already given up.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def embed_in_steps(
        self,
        encodings: list[Encoding],
        out: np.ndarray,
        batch_size: int,
        normalize: bool | None,
        skip_prefix: int,
        progress: Progress,
    ) -> None:
        embedder = self.embedder

        def embed_group(rows: np.ndarray) -> None:
            part = np.empty((len(rows), out.shape[1]), dtype=np.float32)
            embedder.embed_encodings(
                [encodings[i] for i in rows], part, batch_size, normalize=normalize, skip_prefix=skip_prefix
            )
            out[rows] = part

        self.run_in_steps(encodings, batch_size, embedder.token_budget(batch_size), embed_group, progress)

    def run_in_steps(
        self,
        encodings: Sequence[Any],
        batch_size: int,
        token_budget: int,
        embed_group: Callable[[np.ndarray], None],
        progress: Progress,
    ) -> None:
        """Any head's stepping: ``embed_group(rows)`` embeds ``encodings[rows]`` (rows in the sorted
        order, starting at a batch boundary, so with the head's ``token_budget`` its own batching
        cuts the very batches of the whole call) and stores the results; ``progress`` after each."""
        embedder = self.embedder
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")
        batches = list(token_batches(lengths[order], batch_size, token_budget, embedder.attention_width))
        groups = _groups(batches, max(2, _BATCHES_PER_STEP_PER_RUN * embedder.parallel_runs))

        def run(group: slice) -> int:
            rows = order[group]
            embed_group(rows)
            return len(rows)

        if len(groups) < 2 or embedder.parallel_runs < 2:
            # One run at a time anyway (one group, or a single session): nothing to overlap.
            for group in groups:
                progress(run(group))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="fastembed_native-stream")
        futures: list[Future[int]] = [self._pool.submit(run, group) for group in groups]
        try:
            for future in futures:
                progress(future.result())
        except BaseException:  # an error, or Ctrl-C: do not start the rest
            for future in futures:
                future.cancel()
            raise


def _groups(batches: list[slice], per_group: int) -> list[slice]:
    """Consecutive batches (slices of the sorted order) joined ``per_group`` at a time. A group of
    one batch would run on the single-batch session, so a lone last batch joins the group before."""
    bounds = [b.start for b in batches[::per_group]] + [batches[-1].stop] if batches else [0]
    if len(batches) > 1 and len(batches) % per_group == 1:
        del bounds[-2]
    return [slice(a, b) for a, b in pairwise(bounds)]
