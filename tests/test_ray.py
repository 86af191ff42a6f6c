"""Ray Data integration on a local 2-CPU cluster kept on loopback: vectors equal to in-process ones
row for row, Parquet that plain pyarrow reads, failures that surface as errors, sockets on 127.0.0.1.

One cluster serves the whole module (starting Ray costs seconds); it runs in its own temp dir under
pytest's and is shut down at the end.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import WORDS, write_model_dir

# Ray reads both when it is imported and its processes inherit them, so they are set before the
# first `import ray` of this process. The second puts Ray in the single-machine mode it uses on
# macOS and Windows: node address 127.0.0.1 and every socket on loopback (on Linux it otherwise
# re-resolves 127.0.0.1 to the machine's address and listens on every interface).
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ray = pytest.importorskip("ray", reason="Ray Data is not installed (the [ray] extra)")
pa = pytest.importorskip("pyarrow")

from fastembed_native import TextEmbedding  # noqa: E402
from fastembed_native.integrations.ray import (  # noqa: E402
    BatchEmbedder,
    embed_dataset,
    plan_actors,
)

CLUSTER_CPUS = 2


def random_texts(count: int, seed: int = 0) -> list[str]:
    """Texts of 0 to 20 words from the tiny vocabulary (max_length 16 truncates the longest)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, 21))) for _ in range(count)]


def vectors_by_id(table: pa.Table, column: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 vectors) of a result table, sorted by id."""
    ids = table.column("id").to_numpy()
    dim = table.schema.field(column).type.list_size
    flat = table.column(column).combine_chunks().flatten().to_numpy()
    order = np.argsort(ids)
    return ids[order], flat.reshape(len(ids), dim)[order]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A 2-CPU Ray cluster on loopback with its own temp dir, shut down after the module."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        pytest.fail(
            "ray was imported before tests/test_ray.py set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
            "(or the environment sets it to 1): the cluster would listen on every interface"
        )
    # Ray puts its Unix sockets under the temp dir; a short path stays below the 107-byte limit.
    temp_dir = tmp_path_factory.mktemp("ray")
    ray.init(
        num_cpus=CLUSTER_CPUS,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model", token_types=True, normalize=True)


# -- the pool's shape, no cluster needed ----------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "actors", "cpus_per_actor", "reserve", "expected"),
    [
        pytest.param(2, None, None, 1.0, (1, 1.0), id="2cpus-default"),
        pytest.param(2, 2, None, 1.0, (2, 0.5), id="2cpus-2actors-share-half"),
        pytest.param(16, None, None, 1.0, (15, 1.0), id="16cpus-one-per-cpu"),
        pytest.param(16, 4, None, 1.0, (4, 3.0), id="16cpus-4actors-whole-cpus"),
        pytest.param(16, None, 4, 1.0, (3, 4.0), id="16cpus-4-each"),
        pytest.param(1.5, None, None, 1.0, (1, 0.5), id="fractional-budget"),
        pytest.param(8, 3, None, 0.0, (3, 2.0), id="no-reserve"),
    ],
)
def test_plan_actors_leaves_the_reserve_free(total, actors, cpus_per_actor, reserve, expected):
    got = plan_actors(total, actors, cpus_per_actor, reserve)
    assert got == expected
    assert got[0] * got[1] <= total - reserve


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param((2, 2, 1.0, 1.0), "starves them", id="every-cpu"),
        pytest.param((2, None, None, 2.0), "none is left", id="reserve-all"),
        pytest.param((2, 0, None, 1.0), "actors must be a positive int", id="zero-actors"),
        pytest.param((2, None, -1, 1.0), "cpus_per_actor must be a positive", id="negative-cpus"),
        pytest.param((2, None, None, -1), "reserve_cpus must be >= 0", id="negative-reserve"),
        pytest.param((2, 500, None, 1.0), "cannot share", id="too-many-actors"),
    ],
)
def test_plan_actors_refuses_a_pool_that_would_hang(args, message):
    with pytest.raises(ValueError, match=message):
        plan_actors(*args)


def test_plan_actors_refuses_an_actor_larger_than_any_node():
    with pytest.raises(ValueError, match="largest node"):
        plan_actors(32, None, 16, 1.0, node_cpus=8)


def test_bench_fits_both_sides_and_finds_the_break_even():
    from fastembed_native.bench.ray import break_even, fit_line

    sizes = [1000, 5000, 20000]
    in_process = fit_line(sizes, [0.5 + n / 400 for n in sizes])
    on_ray = fit_line(sizes, [8.0 + n / 1000 for n in sizes])
    assert in_process == pytest.approx((0.5, 1 / 400)) and on_ray == pytest.approx((8.0, 1 / 1000))
    # 0.5 + n/400 = 8 + n/1000  ->  n = 7.5 / (1/400 - 1/1000) = 5000
    assert break_even(in_process, on_ray) == pytest.approx(5000)
    assert break_even(in_process, on_ray, extra=3.0) == pytest.approx(7000)
    assert break_even(on_ray, in_process) is None  # the slower rate never catches up
    assert fit_line([1000], [2.0]) is None  # one size: no telling fixed cost from rate
    assert fit_line([1000, 2000], [3.0, 2.0]) is None  # time falling with size: noise, no fit


# -- the callable class in this process ---------------------------------------------------------


def test_batch_embedder_adds_a_fixed_size_list_column(tiny):
    texts = random_texts(50)
    batch = pa.table({"id": np.arange(50), "text": texts})
    embedder = BatchEmbedder(tiny.path, id_column="id", threads=1)
    out = embedder(batch)
    assert out.column_names == ["id", "text", "embedding"]
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), TextEmbedding(tiny.path).dim)
    np.testing.assert_array_equal(vectors_by_id(out)[1], TextEmbedding(tiny.path, threads=1).embed(texts))
    assert embedder(batch.slice(0, 0)).num_rows == 0
    assert BatchEmbedder(tiny.path, keep_text=False, threads=1)(batch).column_names == ["id", "embedding"]


@pytest.mark.parametrize(
    ("batch", "kwargs", "error", "message"),
    [
        pytest.param({"id": [1], "body": ["x"]}, {}, KeyError, "column 'text' is not in the batch", id="no-text"),
        pytest.param({"text": ["x"]}, {"id_column": "id"}, KeyError, "column 'id' is not", id="no-id"),
        pytest.param({"id": [1, 2], "text": ["x", None]}, {"id_column": "id"}, ValueError, r"row 1 .*id=2", id="null-text"),
        pytest.param({"id": [1, None], "text": ["x", "y"]}, {"id_column": "id"}, ValueError, "id column 'id' is null at row 1", id="null-id"),
        pytest.param({"text": [1, 2]}, {}, TypeError, "must hold strings, but its type is int64", id="ints"),
        pytest.param({"text": ["x"], "embedding": [0]}, {}, ValueError, "already has a column 'embedding'", id="clash"),
    ],
)  # fmt: skip
def test_batch_embedder_names_what_is_wrong(tiny, batch, kwargs, error, message):
    with pytest.raises(error, match=message):
        BatchEmbedder(tiny.path, threads=1, **kwargs)(pa.table(batch))


def test_batch_embedder_wants_arrow_batches(tiny):
    with pytest.raises(TypeError, match="batch_format='pyarrow'"):
        BatchEmbedder(tiny.path, threads=1)({"text": np.array(["x"])})


# -- on the cluster --------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_20k_texts_through_two_actors_equal_in_process(cluster, tiny):
    texts = random_texts(20_000, seed=1)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    result = embed_dataset(ds, tiny.path, actors=2, rows_per_batch=2048).to_arrow_refs()
    table = pa.concat_tables(ray.get(result))
    ids, got = vectors_by_id(table)
    np.testing.assert_array_equal(ids, np.arange(len(texts)))  # every row once
    want = TextEmbedding(tiny.path).embed(texts)
    # Same ORT kernels on other batch shapes: equal up to float rounding.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.count_nonzero(np.linalg.norm(got, axis=1)) > 0.9 * len(texts)


@pytest.mark.timeout(180)
def test_actors_get_their_threads_from_ray(cluster, tiny):
    """Each actor runs ORT on the CPUs Ray assigned it (0.5 -> 1 thread), not on the machine's."""

    class Probe(BatchEmbedder):
        def __call__(self, batch):
            out = super().__call__(batch)
            return pa.table({"threads": [self.threads] * out.num_rows, "id": out.column("id")})

    ds = ray.data.from_items([{"id": i, "text": "hello world"} for i in range(64)])
    probed = ds.map_batches(
        Probe,
        fn_constructor_kwargs={"model": str(tiny.path)},
        batch_format="pyarrow",
        batch_size=16,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
    ).take_all()
    assert {row["threads"] for row in probed} == {1}


@pytest.mark.timeout(180)
def test_parquet_output_reads_back_without_ray(cluster, tiny, tmp_path):
    texts = random_texts(3000, seed=2)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    out_dir = tmp_path / "vectors"
    embed_dataset(ds, tiny.path, actors=2, keep_text=False, rows_per_batch=512).write_parquet(str(out_dir))

    # A fresh interpreter with pyarrow alone: no Ray extension type is registered there.
    reader = textwrap.dedent(
        f"""
        import json, sys
        import pyarrow.parquet as pq
        table = pq.read_table({str(out_dir)!r})
        assert "ray" not in sys.modules
        print(json.dumps({{"schema": str(table.schema.field("embedding").type),
                          "columns": table.column_names, "rows": table.num_rows}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout)
    dim = TextEmbedding(tiny.path).dim
    assert read == {
        "schema": f"fixed_size_list<element: float>[{dim}]",
        "columns": ["id", "embedding"],
        "rows": 3000,
    }

    import pyarrow.parquet as pq

    ids, got = vectors_by_id(pq.read_table(out_dir))
    np.testing.assert_array_equal(ids, np.arange(3000))
    np.testing.assert_allclose(got, TextEmbedding(tiny.path).embed(texts), rtol=0, atol=1e-6)


@pytest.mark.timeout(180)  # a hang here is the failure
def test_a_model_that_cannot_load_is_an_error_not_a_hang(cluster, tmp_path):
    ds = ray.data.from_items([{"id": i, "text": "hello"} for i in range(100)])
    with pytest.raises(ray.exceptions.RayError, match="no-such-model") as raised:
        embed_dataset(ds, tmp_path / "no-such-model", actors=2).materialize()
    assert "FileNotFoundError" in str(raised.value)  # the actor's own error, carried to the driver


@pytest.mark.timeout(180)  # a hang here is the failure
def test_a_bad_row_is_an_error_not_a_hang(cluster, tiny):
    rows = [{"id": i, "text": None if i == 777 else "hello world"} for i in range(2000)]
    with pytest.raises(
        ray.exceptions.RayError, match=r"text column 'text' is null at row \d+ of this batch \(id=777\)"
    ):
        embed_dataset(ray.data.from_items(rows), tiny.path, actors=2, rows_per_batch=256).materialize()


def test_embed_dataset_checks_its_arguments(cluster, tiny):
    ds = ray.data.from_items([{"id": 0, "text": "hello"}])
    with pytest.raises(ValueError, match="starves them"):
        embed_dataset(ds, tiny.path, actors=2, cpus_per_actor=1)
    with pytest.raises(ValueError, match="rows_per_batch must be a positive int"):
        embed_dataset(ds, tiny.path, rows_per_batch=0)


# -- sparse and multi-vector models --------------------------------------------------------------


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory: pytest.TempPathFactory):
    from test_corpus_kinds import write_splade_dir

    return write_splade_dir(tmp_path_factory.mktemp("splade") / "model")


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory: pytest.TempPathFactory):
    from test_corpus_kinds import COLBERT_FIXTURE

    from fastembed_native.models import export_model

    return export_model(COLBERT_FIXTURE, tmp_path_factory.mktemp("colbert") / "model").model_dir


def sparse_by_id(table: pa.Table) -> list[tuple[list[int], list[float]]]:
    order = np.argsort(table.column("id").to_numpy())
    rows = list(zip(table["indices"].to_pylist(), table["values"].to_pylist(), strict=True))
    return [rows[i] for i in order]


def assert_sparse_equal(got, expected) -> None:
    assert len(got) == len(expected)
    for (indices, values), want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(indices, dtype=np.int32), want.indices)
        np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), want.values)


def assert_multi_vector_close(table: pa.Table, expected: list[np.ndarray], atol: float = 0.0) -> None:
    rows = table["embedding"].to_pylist()
    order = np.argsort(table.column("id").to_numpy())
    assert len(rows) == len(expected)
    for i, want in zip(order, expected, strict=True):
        np.testing.assert_allclose(
            np.array(rows[i], dtype=np.float32).reshape(want.shape), want, rtol=0, atol=atol
        )


def test_batch_embedder_sparse_and_multi_vector_columns(splade_dir, colbert_dir):
    from fastembed_native import LateInteractionTextEmbedding, SparseTextEmbedding

    texts = random_texts(50)
    batch = pa.table({"id": np.arange(50), "text": texts})
    sparse = BatchEmbedder(splade_dir, id_column="id", threads=1)(batch)
    assert sparse.column_names == ["id", "text", "indices", "values"]
    assert sparse.schema.field("indices").type == pa.list_(pa.int32())
    assert sparse.schema.field("values").type == pa.list_(pa.float32())
    assert_sparse_equal(sparse_by_id(sparse), SparseTextEmbedding(splade_dir, threads=1).embed(texts))

    colbert = BatchEmbedder(colbert_dir, keep_text=False, query=True, threads=1)(batch)
    dim = LateInteractionTextEmbedding(colbert_dir).dim
    assert colbert.column_names == ["id", "embedding"]
    assert colbert.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), dim))
    assert_multi_vector_close(
        colbert, LateInteractionTextEmbedding(colbert_dir, threads=1).query_embed(texts)
    )
    assert BatchEmbedder(colbert_dir, threads=1)(batch.slice(0, 0)).num_rows == 0

    with pytest.raises(ValueError, match="this model writes 'indices', 'values'"):
        BatchEmbedder(splade_dir, output_column="sparse", threads=1)
    with pytest.raises(ValueError, match="takes no prompt"):
        BatchEmbedder(colbert_dir, prompt="query: ", threads=1)
    with pytest.raises(ValueError, match="already has a column 'values'"):
        BatchEmbedder(splade_dir, threads=1)(batch.append_column("values", pa.array(np.zeros(50))))


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory: pytest.TempPathFactory):
    from test_corpus_m3 import FIXTURE

    from fastembed_native.models import export_model

    return export_model(FIXTURE, tmp_path_factory.mktemp("m3") / "model").model_dir


def test_batch_embedder_writes_bge_m3_outputs_side_by_side(m3_dir):
    from fastembed_native import BGEM3

    texts = random_texts(40, seed=5)
    batch = pa.table({"id": np.arange(40), "text": texts})
    expected = BGEM3(m3_dir, threads=1).embed(texts)
    table = BatchEmbedder(m3_dir, outputs="dense,sparse,colbert", output_column="dense", threads=1)(batch)
    assert table.column_names == ["id", "text", "dense", "indices", "values", "colbert"]
    vector = pa.list_(pa.float32(), expected.dense.shape[1])
    assert table.schema.field("dense").type == vector and table.schema.field("colbert").type == pa.list_(
        vector
    )
    # One call is one BGEM3.embed of the same texts: the same batches, so the very same numbers.
    np.testing.assert_array_equal(np.array(table["dense"].to_pylist(), dtype=np.float32), expected.dense)
    assert_sparse_equal(sparse_by_id(table), expected.sparse)
    for vectors, want in zip(table["colbert"].to_pylist(), expected.colbert, strict=True):
        np.testing.assert_array_equal(np.array(vectors, dtype=np.float32).reshape(want.shape), want)
    # Some outputs only; without outputs, BGE-M3 is the dense model its files describe.
    lexical = BatchEmbedder(m3_dir, outputs=["sparse"], keep_text=False, threads=1)(batch)
    assert lexical.column_names == ["id", "indices", "values"]
    assert BatchEmbedder(m3_dir, threads=1)(batch).column_names == ["id", "text", "embedding"]
    with pytest.raises(ValueError, match="BGE-M3's outputs are dense, sparse, colbert"):
        BatchEmbedder(m3_dir, outputs="dense,lexical", threads=1)
    with pytest.raises(ValueError, match="this model writes 'indices', 'values'"):
        BatchEmbedder(m3_dir, outputs="sparse", output_column="lexical", threads=1)
    with pytest.raises(ValueError, match="already has a column 'colbert'"):
        BatchEmbedder(m3_dir, outputs="colbert", threads=1)(
            batch.append_column("colbert", pa.array(np.zeros(40)))
        )


def test_outputs_are_bge_m3s_only(splade_dir):
    with pytest.raises(ValueError, match="is not a BGE-M3 model"):
        BatchEmbedder(splade_dir, outputs="sparse", threads=1)


@pytest.mark.timeout(180)
def test_sparse_and_multi_vector_parquet_through_ray(cluster, splade_dir, colbert_dir, tmp_path):
    import pyarrow.parquet as pq

    from fastembed_native import LateInteractionTextEmbedding, SparseTextEmbedding

    texts = random_texts(3000, seed=3)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    embed_dataset(ds, splade_dir, actors=2, keep_text=False, rows_per_batch=512).write_parquet(
        str(tmp_path / "sparse")
    )
    table = pq.read_table(tmp_path / "sparse")
    assert table.column_names == ["id", "indices", "values"]
    assert (table.schema.field("indices").type, table.schema.field("values").type) == (
        pa.list_(pa.int32()),
        pa.list_(pa.float32()),
    )
    np.testing.assert_array_equal(np.sort(table.column("id").to_numpy()), np.arange(3000))
    # A lookup model: no arithmetic depends on the batch, so the values are the very same.
    assert_sparse_equal(sparse_by_id(table), SparseTextEmbedding(splade_dir).embed(texts))

    embed_dataset(ds, colbert_dir, actors=2, rows_per_batch=512).write_parquet(str(tmp_path / "colbert"))
    table = pq.read_table(tmp_path / "colbert")
    model = LateInteractionTextEmbedding(colbert_dir)
    assert table.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), model.dim))
    # Same ORT kernels on other batch shapes: equal up to float rounding.
    assert_multi_vector_close(table, model.embed(texts), atol=1e-6)


@pytest.mark.timeout(180)
def test_bge_m3_outputs_parquet_through_ray(cluster, m3_dir, tmp_path):
    import pyarrow.parquet as pq

    from fastembed_native import BGEM3

    texts = random_texts(1000, seed=4)
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    embed_dataset(ds, m3_dir, outputs="dense,sparse,colbert", actors=2, rows_per_batch=256).write_parquet(
        str(tmp_path / "m3")
    )
    table = pq.read_table(tmp_path / "m3")
    assert table.column_names == ["id", "text", "embedding", "indices", "values", "colbert"]
    order = np.argsort(table.column("id").to_numpy())
    np.testing.assert_array_equal(table.column("id").to_numpy()[order], np.arange(len(texts)))
    expected = BGEM3(m3_dir).embed(texts)
    # Other batches than in-process: the same up to float rounding, and the same sparse indices.
    dense = np.array(table["embedding"].to_pylist(), dtype=np.float32)[order]
    np.testing.assert_allclose(dense, expected.dense, rtol=0, atol=1e-6)
    got_sparse = sparse_by_id(table)
    for (indices, values), want in zip(got_sparse, expected.sparse, strict=True):
        np.testing.assert_array_equal(np.asarray(indices, dtype=np.int32), want.indices)
        np.testing.assert_allclose(np.asarray(values, dtype=np.float32), want.values, rtol=0, atol=1e-5)
    colbert = table["colbert"].to_pylist()
    for i, want in zip(order, expected.colbert, strict=True):
        np.testing.assert_allclose(
            np.array(colbert[i], dtype=np.float32).reshape(want.shape), want, atol=1e-6
        )


def _listening_sockets(processes) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket the processes listen on."""
    import psutil

    found = []
    for process in processes:
        try:
            name = process.name()  # Ray's processes set their titles: gcs_server, raylet, ray::MapWorker(...)
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # "::ffff:127.0.0.1" is 127.0.0.1
    return (mapped or ip).is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("::", False),
     ("192.0.2.2", False), ("::ffff:192.0.2.2", False)],
)  # fmt: skip
def test_the_socket_check_tells_loopback_from_the_rest(address, loopback):
    assert _is_loopback(address) is loopback


@pytest.mark.timeout(180)
def test_every_ray_socket_listens_on_loopback_only(cluster, tiny):
    """Checked while embedding actors run: the driver, GCS, raylet, workers and actors."""
    psutil = pytest.importorskip("psutil")
    ds = ray.data.from_items([{"id": i, "text": "hello world"} for i in range(4000)])
    batches = iter(embed_dataset(ds, tiny.path, actors=2, rows_per_batch=256).iter_batches(batch_size=256))
    try:
        next(batches)  # an actor is embedding now
        driver = psutil.Process()
        sockets = _listening_sockets([driver, *driver.children(recursive=True)])
    finally:
        batches.close()  # stop the pipeline before the cluster goes
    names = " ".join(name for name, _, _ in sockets)
    if not sockets:
        pytest.skip("psutil sees no listening socket of this process tree (no permission here)")
    assert "gcs_server" in names and "raylet" in names and "MapWorker" in names, sockets
    exposed = [s for s in sockets if not _is_loopback(s[1])]
    assert exposed == [], f"Ray sockets reachable from outside this machine: {exposed}"


# -- the real model ----------------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.timeout(300)
def test_real_model_through_ray_matches_in_process(cluster, minilm_dir, minilm):
    from test_parity import real_corpus

    texts = [f"{i}: {text}" for i, text in enumerate(real_corpus() * 4)]
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    table = pa.concat_tables(
        ray.get(embed_dataset(ds, minilm_dir, actors=2, rows_per_batch=16).to_arrow_refs())
    )
    ids, got = vectors_by_id(table)
    np.testing.assert_array_equal(ids, np.arange(len(texts)))
    want = minilm.embed(texts)
    assert float(np.min(np.sum(got * want, axis=1))) > 0.99999
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
