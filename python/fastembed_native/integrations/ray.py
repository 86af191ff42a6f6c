"""Ray Data: embed a Dataset's text column on a pool of actors, each holding the model once.

    import ray
    from fastembed_native.integrations.ray import embed_dataset

    ds = ray.data.read_parquet("texts/")                      # columns: id, text
    embed_dataset(ds, model="path/to/model", column="text", id_column="id").write_parquet("vectors/")

The result keeps every input column and adds ``embedding``, an Arrow ``fixed_size_list<float>[dim]``
column, so the Parquet files read back with plain pyarrow (or pandas, DuckDB, Spark), no Ray needed.
A sparse (SPLADE) model adds ``indices`` (``list<int32>``) and ``values`` (``list<float>``) instead,
a multi-vector (ColBERT) model an ``embedding`` column of ``list<fixed_size_list<float>[dim]>``, and
BGE-M3 with ``outputs="dense,sparse,colbert"`` (any of the three) each output's columns from one
forward pass (``embedding``, ``indices`` and ``values``, ``colbert``): the columns
``fastembed-native embed`` writes (both build them in ``corpus.rows``), the kind read from the
model's files. Ray does not keep row order from input to output: join on the id column.

How the work is laid out, and the traps each choice avoids:

- Each actor (:class:`BatchEmbedder`) loads the model once and runs ONNX Runtime on as many intra-op
  threads as the CPUs Ray assigned it (ORT ignores ``OMP_NUM_THREADS``, which Ray sets), and embeds
  each batch of rows on the engine's usual path: length-sorted, token-budget batches.
- :func:`embed_dataset` sizes the pool from the cluster's CPUs but always leaves ``reserve_cpus`` free:
  an actor pool that holds every CPU starves the read and write tasks and the pipeline hangs without
  an error. It uses ``compute=ActorPoolStrategy(...)`` (``concurrency=`` is deprecated).
- A model directory given as a path must exist on every node (a shared file system); a model id is
  resolved by each node's own model cache.

A single-machine cluster on loopback: Ray on Linux resolves ``127.0.0.1`` (``_node_ip_address``) to
the machine's address and binds its ports on every interface. Setting
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment before ``import ray`` puts it in the local
mode it uses on macOS and Windows, where the node address is 127.0.0.1 and every Ray process listens
on loopback only (``tests/test_ray.py`` checks every listening socket); add
``RAY_USAGE_STATS_ENABLED=0`` so nothing is reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"fastembed_native.integrations.ray needs Ray Data ({exc}); "
        "install it with: pip install 'fastembed-native[ray]'"
    ) from exc

from ..corpus.encoders import Encoder
from ..corpus.rows import arrow_fields

__all__ = [
    "DEFAULT_ROWS_PER_BATCH",
    "EMBEDDING_COLUMN",
    "BatchEmbedder",
    "assigned_cpus",
    "cluster_cpus",
    "embed_dataset",
    "plan_actors",
]

#: The column the embeddings go to, unless ``output_column`` says otherwise.
EMBEDDING_COLUMN = "embedding"

#: Rows per actor call. The engine length-sorts the texts of one call, and in-process ``embed`` sorts
#: in windows of this many texts (engine.embedder.TOKENIZE_WINDOW), so each call pads as little.
DEFAULT_ROWS_PER_BATCH = 4096

_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)


def assigned_cpus() -> float:
    """CPUs Ray assigned the calling task or actor (``num_cpus``, fractions included); 0 outside Ray."""
    if not ray.is_initialized():
        return 0.0
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))


class BatchEmbedder:
    """A callable class for ``Dataset.map_batches(..., batch_format="pyarrow")``: a pyarrow Table
    with a text column in, the same Table with an embedding column added out (``indices`` and
    ``values`` for a sparse model, see the module docstring).

    Args:
        model: a model directory, a model id from the cache, or None for the default model, as for
            :class:`~fastembed_native.TextEmbedding`; a SPLADE or ColBERT model (as its files say)
            loads as :class:`~fastembed_native.SparseTextEmbedding` or
            :class:`~fastembed_native.LateInteractionTextEmbedding`. Loaded once, when the actor starts.
        column: the column holding the texts (a string column without nulls).
        id_column: a column every row must have a value in (it is how rows are matched after Ray
            reorders them); None checks nothing. Every input column is kept either way.
        output_column: the name of the embedding column, which must not exist yet (a sparse
            model's columns are always ``indices`` and ``values``).
        keep_text: keep ``column`` in the output (False drops it, to write less).
        batch_size: texts per ONNX Runtime run (the engine's ``batch_size``).
        prompt: text prepended to every input (e.g. e5's "passage: "); none for a ColBERT model.
        outputs: a BGE-M3 model's outputs to write, of ``dense``, ``sparse`` and ``colbert`` (a
            comma-separated string or a sequence; default: its dense vectors only, as its files say).
        query: encode the texts as queries, on the model's query side (a ColBERT model's query
            marker and [MASK] expansion, an inference-free sparse model's static weights, else the
            model's "query" prompt).
        threads: ONNX Runtime intra-op threads; default: the CPUs Ray assigned this actor, at least 1
            (ORT ignores ``OMP_NUM_THREADS``), or every usable CPU outside Ray.
        **options: further :class:`~fastembed_native.TextEmbedding` options (max_length, providers, ...).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        column: str = "text",
        id_column: str | None = None,
        output_column: str = EMBEDDING_COLUMN,
        keep_text: bool = True,
        batch_size: int = 32,
        prompt: str = "",
        outputs: str | Sequence[str] | None = None,
        query: bool = False,
        threads: int | None = None,
        **options: Any,
    ) -> None:
        if threads is None:
            cpus = assigned_cpus()
            threads = max(1, math.floor(cpus)) if cpus > 0 else None
        if threads is not None:
            # The tokenizer's Rust thread pool sizes itself from the machine, not from Ray's share;
            # it reads this once, on first use, which is after this line in a fresh actor process.
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        self.encoder = Encoder.load(model, query=query, threads=threads, outputs=outputs, **options)
        self.encoder.check_prompt(prompt)
        self.kind = self.encoder.kind
        self.model = self.encoder.model
        self.threads = self.encoder.engine.threads
        # The columns written, as the corpus command names them; output_column renames "embedding".
        written = [f.name for f in arrow_fields(self.kind, 1)]
        if EMBEDDING_COLUMN not in written and output_column != EMBEDDING_COLUMN:
            raise ValueError(
                f"output_column={output_column!r}: this model writes {', '.join(map(repr, written))}; "
                "output_column names the column of dense and multi-vector vectors"
            )
        self.columns = [output_column if name == EMBEDDING_COLUMN else name for name in written]
        self.column = column
        self.id_column = id_column
        self.output_column = output_column
        self.keep_text = keep_text
        self.batch_size = batch_size
        self.prompt = prompt

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Embed ``batch[column]``; returns ``batch`` (less the text unless ``keep_text``) plus
        ``output_column`` as ``fixed_size_list<float>[dim]`` (a sparse model: ``indices`` and
        ``values``; a multi-vector model: ``list<fixed_size_list<float>[dim]>``; BGE-M3's
        ``outputs``: the columns of each), rows in the batch's order.

        Raises:
            TypeError: ``batch`` is not a pyarrow Table, or ``column`` is not a string column.
            KeyError: ``column`` or ``id_column`` is missing (the message lists the batch's columns).
            ValueError: a text or an id is null (the message names the row), or an output column
                already exists.
        """
        if not isinstance(batch, pa.Table):
            raise TypeError(
                f"BatchEmbedder takes pyarrow Tables (map_batches(..., batch_format='pyarrow')), "
                f"not {type(batch).__name__}"
            )
        texts = self._texts(batch)
        for name in self.columns:
            if name in batch.column_names:
                hint = "choose another output_column" if name == self.output_column else "rename it"
                raise ValueError(f"the batch already has a column {name!r}; {hint}")
        rows = self.encoder.embed(texts, batch_size=self.batch_size, prompt=self.prompt)
        out = batch if self.keep_text else batch.drop_columns([self.column])
        for (_, array), name in zip(rows.arrow_columns(), self.columns, strict=True):
            out = out.append_column(pa.field(name, array.type, nullable=False), array)
        return out

    def _texts(self, batch: pa.Table) -> list[str]:
        """The batch's texts as a list of str, after checking the text and id columns."""
        for name in (self.column, self.id_column):
            if name is not None and name not in batch.column_names:
                raise KeyError(f"column {name!r} is not in the batch; its columns are {batch.column_names}")
        if self.id_column is not None:
            ids = batch.column(self.id_column)
            if ids.null_count:
                row = ids.is_null().to_pylist().index(True)
                raise ValueError(
                    f"id column {self.id_column!r} is null at row {row} of this batch: "
                    "every row needs an id to be matched after Ray reorders the rows"
                )
        column = batch.column(self.column)
        if not any(is_type(column.type) for is_type in _STRING_TYPES):
            raise TypeError(f"column {self.column!r} must hold strings, but its type is {column.type}")
        if column.null_count:
            row = column.is_null().to_pylist().index(True)
            where = f"row {row} of this batch"
            if self.id_column is not None:
                where += f" ({self.id_column}={batch.column(self.id_column)[row].as_py()!r})"
            raise ValueError(f"text column {self.column!r} is null at {where}; expected a string")
        return column.to_pylist()


def cluster_cpus() -> tuple[float, float]:
    """(CPUs in the whole cluster, CPUs of its largest live node), from the running Ray cluster.

    Raises:
        RuntimeError: Ray is not initialised (``ray.init()`` first).
    """
    if not ray.is_initialized():
        raise RuntimeError(
            "Ray is not initialised: call ray.init() (or ray.init(address=...)) first; "
            "embed_dataset sizes its actor pool from the cluster's CPUs"
        )
    total = float(ray.cluster_resources().get("CPU", 0.0))
    nodes = [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    return total, max(nodes, default=total)


def plan_actors(
    total_cpus: float,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    reserve_cpus: float = 1.0,
    node_cpus: float | None = None,
) -> tuple[int, float]:
    """How many embedding actors, with how many CPUs each, on a cluster of ``total_cpus``.

    The actors together take at most ``total_cpus - reserve_cpus``: the rest stays for Ray Data's
    read and write tasks, which otherwise never get a CPU (the pipeline hangs without an error).
    Left open, ``cpus_per_actor`` is 1 (one ORT thread per actor, a model copy per CPU; pass more
    for a large model) and ``actors`` fills what is left; with ``actors`` alone each gets an equal
    share (whole CPUs when the share is at least 1).

    Args:
        total_cpus: CPUs in the cluster.
        actors: actors in the pool, or None.
        cpus_per_actor: CPUs each actor reserves (fractions allowed), or None.
        reserve_cpus: CPUs kept free for the other tasks of the pipeline.
        node_cpus: CPUs of the largest node; an actor larger than it could never start.

    Returns:
        (actors, cpus_per_actor).

    Raises:
        ValueError: an argument is out of range, or the plan leaves less than ``reserve_cpus`` free.
    """
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors <= 0):
        raise ValueError(f"actors must be a positive int, got {actors!r}")
    if cpus_per_actor is not None and not cpus_per_actor > 0:
        raise ValueError(f"cpus_per_actor must be a positive number, got {cpus_per_actor!r}")
    if not reserve_cpus >= 0:
        raise ValueError(f"reserve_cpus must be >= 0, got {reserve_cpus!r}")
    budget = total_cpus - reserve_cpus
    if budget <= 0:
        raise ValueError(
            f"the cluster has {total_cpus:g} CPUs and reserve_cpus={reserve_cpus:g} keeps them all "
            "for reading and writing: none is left for embedding actors"
        )
    if cpus_per_actor is None:
        if actors is None:
            cpus_per_actor = min(1.0, budget)
        else:
            share = budget / actors
            # Whole CPUs give whole ORT threads; below one, two decimals (rounded down) keep the sum
            # within the budget.
            cpus_per_actor = float(math.floor(share)) if share >= 1 else math.floor(share * 100) / 100
            if cpus_per_actor <= 0:
                raise ValueError(
                    f"{actors} actors cannot share the {budget:g} CPUs left after reserve_cpus={reserve_cpus:g}"
                )
    if actors is None:
        actors = max(1, math.floor(budget / cpus_per_actor + 1e-9))
    if actors * cpus_per_actor > budget + 1e-9:
        raise ValueError(
            f"{actors} actors x {cpus_per_actor:g} CPUs = {actors * cpus_per_actor:g} CPUs, but the cluster "
            f"has {total_cpus:g} and reserve_cpus={reserve_cpus:g} must stay free for the read and write "
            "tasks (an actor pool that holds every CPU starves them and the pipeline hangs)"
        )
    if node_cpus is not None and cpus_per_actor > node_cpus:
        raise ValueError(
            f"cpus_per_actor={cpus_per_actor:g} is more than the largest node has ({node_cpus:g}): "
            "such an actor could never start"
        )
    return actors, float(cpus_per_actor)


def embed_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str] | None = None,
    *,
    column: str = "text",
    id_column: str | None = "id",
    output_column: str = EMBEDDING_COLUMN,
    keep_text: bool = True,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    reserve_cpus: float = 1.0,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    batch_size: int = 32,
    prompt: str = "",
    outputs: str | Sequence[str] | None = None,
    query: bool = False,
    **options: Any,
) -> ray.data.Dataset:
    """Add an embedding column to ``ds``, computed by a pool of :class:`BatchEmbedder` actors.

    Lazy, like every Ray Data transform: nothing runs until the result is consumed
    (``write_parquet``, ``take``, ``iter_batches``, ...).

    Args:
        ds: a Dataset with a string column ``column``.
        model: a model directory, a model id or None (the default model); see the module docstring
            for clusters of several machines.
        column: the text column.
        id_column: the column that identifies rows (Ray does not keep their order); each batch is
            checked to have it, without nulls. None skips the check; every input column is kept.
        output_column: where the embeddings go, as ``fixed_size_list<float>[dim]`` (a multi-vector
            model: ``list<fixed_size_list<float>[dim]>``; a sparse model writes ``indices`` and
            ``values`` instead, and takes no other ``output_column``).
        keep_text: keep the text column in the output.
        actors, cpus_per_actor, reserve_cpus: the pool's shape; see :func:`plan_actors`. Each actor
            runs ONNX Runtime on ``max(1, floor(cpus_per_actor))`` threads.
        rows_per_batch: rows per actor call (Ray's ``batch_size``); the engine length-sorts within it.
        batch_size: texts per ONNX Runtime run, as in :meth:`TextEmbedding.embed`.
        prompt: text prepended to every input.
        outputs: a BGE-M3 model's outputs (``"dense,sparse,colbert"`` or any of them), each output's
            columns side by side from one forward pass (see :class:`BatchEmbedder`).
        query: encode the texts as queries (see :class:`BatchEmbedder`).
        **options: further options of the model's class (max_length, ...).

    Returns:
        The Dataset with ``output_column`` (or ``indices`` and ``values``, or BGE-M3's columns) added.

    Raises:
        RuntimeError: Ray is not initialised.
        ValueError: the pool does not fit the cluster (see :func:`plan_actors`), or ``rows_per_batch``
            is not a positive int.
    """
    if isinstance(rows_per_batch, bool) or not isinstance(rows_per_batch, int) or rows_per_batch <= 0:
        raise ValueError(f"rows_per_batch must be a positive int, got {rows_per_batch!r}")
    total, largest_node = cluster_cpus()
    pool_size, cpus = plan_actors(total, actors, cpus_per_actor, reserve_cpus, largest_node)
    return ds.map_batches(
        BatchEmbedder,
        fn_constructor_kwargs={
            "model": os.fspath(model) if model is not None else None,
            "column": column,
            "id_column": id_column,
            "output_column": output_column,
            "keep_text": keep_text,
            "batch_size": batch_size,
            "prompt": prompt,
            "outputs": outputs,
            "query": query,
            **options,
        },
        batch_format="pyarrow",
        batch_size=rows_per_batch,
        compute=ray.data.ActorPoolStrategy(size=pool_size),
        num_cpus=cpus,
    )
