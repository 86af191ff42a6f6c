"""The corpus command with sparse (SPLADE) and multi-vector (ColBERT) models: the kind read from the
model's files, Parquet and JSONL rows equal to the in-process classes' output with the issue's
column types, the query side, resume of a sparse run, and ``.npy`` refused by name.

The SPLADE model is a lookup built here without torch (its "logits" are a table row per token, so
texts activate different numbers of words), with an inference-free query side (a static weight per
word, as sentence-transformers' Router saves one); the ColBERT model is the committed pylate
fixture, exported.
"""

from __future__ import annotations

import json
import re
import struct
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import VOCAB, WORDS, build_tokenizer, write_model_dir
from onnx import TensorProto, helper, numpy_helper
from test_cli_embed import failed_with, run_cli

from fastembed_native import LateInteractionTextEmbedding, SparseTextEmbedding, TextEmbedding
from fastembed_native.corpus import CorpusError, CorpusUsageError, plan, run
from fastembed_native.corpus.encoders import Encoder, model_kind
from fastembed_native.corpus.outputs import partial_path
from fastembed_native.corpus.resume import state_path
from fastembed_native.corpus.rows import MultiVectorRows, SparseRows, row_groups

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

COLBERT_FIXTURE = Path(__file__).parent / "data" / "colbert_tiny"


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """0 to 13 words each: texts of very different lengths, so batches of very different widths."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, 14))) for _ in range(n)]


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, data, offset = {}, b"", 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        data, offset = data + raw, offset + len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def write_splade_dir(root: Path, *, inference_free: bool = False, seed: int = 0) -> Path:
    """A SPLADE model directory, as ``export`` writes one, around a lookup graph: ``logits[b, t] =
    table[input_ids[b, t]]`` (vocabulary x vocabulary, mostly negative), Transformer + SpladePooling
    (max, relu), a query prompt; ``inference_free``: with a static query side
    (``router_config.json`` + SparseStaticEmbedding, as ``export`` keeps sentence-transformers' Router)."""
    rng = np.random.default_rng(seed)
    vocab = len(VOCAB)
    table = (rng.standard_normal((vocab, vocab)) - 0.8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"])],
        "tiny-splade",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
            for name in ("input_ids", "attention_mask")
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])],
        [numpy_helper.from_array(table, "table")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    (root / "onnx").mkdir(parents=True)
    onnx.save(proto, str(root / "onnx" / "model.onnx"))
    tokenizer = build_tokenizer()
    tokenizer.save(str(root / "tokenizer.json"))
    files = {
        "config.json": {"vocab_size": vocab, "max_position_embeddings": 64, "pad_token_id": 0},
        "sentence_bert_config.json": {"max_seq_length": 12, "transformer_task": "fill-mask"},
        "config_sentence_transformers.json": {"model_type": "SparseEncoder", "prompts": {"query": "fox "}},
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_SpladePooling",
                "type": "sentence_transformers.sparse_encoder.modules.SpladePooling",
            },
        ],
        "1_SpladePooling/config.json": {"pooling_strategy": "max", "activation_function": "relu"},
    }
    if inference_free:
        files["router_config.json"] = {
            "structure": {"query": ["query_0"], "document": ["document_0", "document_1"]},
            "types": {"query_0": "sentence_transformers.sparse_encoder.modules.SparseStaticEmbedding"},
        }
    for name, content in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(json.dumps(content))
    if not inference_free:
        return root
    (root / "query_0").mkdir()
    weights = rng.random(vocab).astype(np.float32) * (rng.random(vocab) > 0.3)
    _write_safetensors(root / "query_0" / "model.safetensors", {"weight": weights})
    tokenizer.save(str(root / "query_0" / "tokenizer.json"))
    return root


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory) -> Path:
    return write_splade_dir(tmp_path_factory.mktemp("splade") / "model")


@pytest.fixture(scope="module")
def inference_free_dir(tmp_path_factory) -> Path:
    return write_splade_dir(tmp_path_factory.mktemp("splade") / "free", inference_free=True)


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory) -> Path:
    from fastembed_native.models import export_model

    return export_model(COLBERT_FIXTURE, tmp_path_factory.mktemp("colbert") / "model").model_dir


@pytest.fixture(scope="module")
def splade(splade_dir) -> SparseTextEmbedding:
    # batch_size 4 and 2 threads: many batches per sort window, run 2 at a time.
    return SparseTextEmbedding(splade_dir, batch_size=4, threads=2)


@pytest.fixture(scope="module")
def colbert(colbert_dir) -> LateInteractionTextEmbedding:
    return LateInteractionTextEmbedding(colbert_dir, batch_size=4, threads=2)


def sparse_rows(table) -> list[tuple[list, list]]:
    return list(zip(table["indices"].to_pylist(), table["values"].to_pylist(), strict=True))


def assert_sparse_equal(got: list[tuple[np.ndarray, np.ndarray]], expected) -> None:
    assert len(got) == len(expected)
    for (indices, values), want in zip(got, expected, strict=True):
        # JSON's floats are the shortest decimals that read back as the same float32.
        np.testing.assert_array_equal(np.asarray(indices, dtype=np.int32), want.indices)
        np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), want.values)


def assert_multi_vector_equal(got: list, expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for vectors, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.array(vectors, dtype=np.float32).reshape(want.shape), want)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the kind, from the files ---------------------------------------------------------------------
def test_the_kind_comes_from_the_model_files(splade_dir, colbert_dir, encoder_dir):
    assert model_kind(splade_dir) == "sparse"
    assert model_kind(colbert_dir) == "multi-vector"
    assert model_kind(encoder_dir.path) == "dense"
    # Files that do not say (fastembed's layout): a registry id still tells.
    assert model_kind(encoder_dir.path, "prithivida/Splade_PP_en_v1") == "sparse"
    assert model_kind(encoder_dir.path, "answerai-colbert-small-v1") == "multi-vector"
    assert model_kind(encoder_dir.path, "BAAI/bge-m3") == "dense"  # BGE-M3's dense side, as its Pooling says
    assert Encoder.load(splade_dir).kind == "sparse" and Encoder.load(colbert_dir).kind == "multi-vector"


# -- in process: rows equal the classes' own output -----------------------------------------------
@pytest.mark.parametrize("query", [False, True], ids=["documents", "queries"])
def test_sparse_parquet_and_jsonl_equal_in_process(splade, tmp_path, query):
    texts = mixed_texts(5000, seed=1)  # more than one 4,096-text sort window
    source = tmp_path / "a.txt"
    source.write_text("\n".join(texts) + "\n")
    expected = splade.query_embed(texts) if query else splade.embed(texts)
    assert len({len(e) for e in expected}) > 5  # rows of many lengths
    steps: list[int] = []
    out = tmp_path / "v.parquet"
    assert run(plan([str(source)], str(out), window=3000), splade, progress=steps.append, query=query) == 5000
    assert len(steps) > 20 and sum(steps) == 5000  # progress every few batches, not per window
    table = pq.read_table(out)
    assert table.schema.field("indices").type == pa.list_(pa.int32())
    assert table.schema.field("values").type == pa.list_(pa.float32())
    assert table.column_names == ["id", "text", "indices", "values"]
    assert table["id"].to_pylist() == list(range(5000)) and table["text"].to_pylist() == texts
    assert_sparse_equal(sparse_rows(table), expected)

    jsonl = tmp_path / "v.jsonl"
    run(plan([str(source)], str(jsonl), with_text=False), splade, query=query)
    records = read_jsonl(jsonl)
    assert set(records[0]) == {"id", "indices", "values"}
    assert_sparse_equal([(r["indices"], r["values"]) for r in records], expected)


def test_inference_free_queries_run_no_model(inference_free_dir, tmp_path):
    texts = mixed_texts(5000, seed=2)
    source, out = tmp_path / "q.txt", tmp_path / "q.parquet"
    source.write_text("\n".join(texts) + "\n")
    model = SparseTextEmbedding(inference_free_dir, batch_size=4, threads=2)
    assert model.static_query is not None
    model.engine.stats(reset=True)
    steps: list[int] = []
    run(plan([str(source)], str(out)), model, query=True, progress=steps.append)
    assert model.engine.stats()["runs"] == 0 and steps == [4096, 904]
    expected = model.query_embed(texts)
    assert_sparse_equal(sparse_rows(pq.read_table(out)), expected)
    assert not all(
        np.array_equal(a.indices, b.indices) for a, b in zip(expected, model.embed(texts), strict=True)
    )


@pytest.mark.parametrize("query", [False, True], ids=["documents", "queries"])
def test_multi_vector_parquet_and_jsonl_equal_in_process(colbert, tmp_path, query):
    texts = [*mixed_texts(600, seed=3), "", "a, b. c!"]  # an empty text and punctuation (skiplist)
    source = tmp_path / "a.txt"
    source.write_text("\n".join(texts) + "\n")
    expected = colbert.query_embed(texts) if query else colbert.embed(texts)
    steps: list[int] = []
    out = tmp_path / "v.parquet"
    run(plan([str(source)], str(out), window=256), colbert, progress=steps.append, query=query)
    assert sum(steps) == len(texts) and len(steps) > 5
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.list_(pa.float32(), colbert.dim))
    assert pq.ParquetFile(out).metadata.num_row_groups == 3  # one per window
    assert_multi_vector_equal(table["embedding"].to_pylist(), expected)

    jsonl = tmp_path / "v.jsonl"
    run(plan([str(source)], str(jsonl)), colbert, query=query)
    records = read_jsonl(jsonl)
    assert [r["text"] for r in records] == texts
    assert_multi_vector_equal([r["embedding"] for r in records], expected)


def test_row_groups_are_whole_rows_of_about_the_budget():
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((int(n), 4)).astype(np.float32) for n in rng.integers(0, 50, 1000)]
    rows = MultiVectorRows(items, 4)
    bounds = row_groups(rows, budget=4096, min_rows=3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in pairwise(bounds))
    sizes = [int(rows.row_bytes()[a:b].sum()) for a, b in bounds]
    assert all(size <= 4096 or b - a <= 3 for size, (a, b) in zip(sizes, bounds, strict=True))
    # A row group's columns are the rows' own values, end to end.
    ((name, column),) = rows.slice(10, 20).arrow_columns()
    assert name == "embedding" and column.to_pylist() == [a.tolist() for a in items[10:20]]
    empty = SparseRows([]).arrow_columns()
    assert [(n, len(c), c.type) for n, c in empty] == [
        ("indices", 0, pa.list_(pa.int32())),
        ("values", 0, pa.list_(pa.float32())),
    ]


# -- resume ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v.parquet", "v.jsonl"])
def test_a_sparse_run_resumes_after_ctrl_c_into_the_same_rows(splade, tmp_path, name):
    texts = mixed_texts(6000, seed=4)
    source, out = tmp_path / "a.txt", tmp_path / name
    source.write_text("\n".join(texts) + "\n")
    embedded: list[int] = []

    def ctrl_c_in_the_second_sort_window(n: int) -> None:
        embedded.append(n)
        if sum(embedded) > 4096 + 500:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(
            plan([str(source)], str(out)), splade, commit_seconds=0, progress=ctrl_c_in_the_second_sort_window
        )
    state = json.loads(state_path(out).read_text())
    assert (state["rows"], state["kind"], state["dim"]) == (4096, "sparse", splade.vocab_size)
    assert partial_path(out).exists() and not out.exists()
    # Resuming with a model of another kind is refused; the partial run stays as it was.
    dense = TextEmbedding(write_model_dir(tmp_path / "dense").path)
    with pytest.raises(
        CorpusError, match=r"holds sparse vectors over 16 words, the model makes 7-dim vectors"
    ):
        run(plan([str(source)], str(out), resume=True), dense)
    job = plan([str(source)], str(out), resume=True)
    assert job.notes == [f"resuming {out} after 4096 rows"]
    assert run(job, splade) == 6000
    expected = splade.embed(texts)
    if name.endswith(".parquet"):
        table = pq.read_table(out)
        assert table["id"].to_pylist() == list(range(6000))
        assert_sparse_equal(sparse_rows(table), expected)
    else:
        records = read_jsonl(out)
        assert [r["id"] for r in records] == list(range(6000))
        assert_sparse_equal([(r["indices"], r["values"]) for r in records], expected)
    assert not partial_path(out).exists() and not state_path(out).exists()


# -- .npy and other refusals ----------------------------------------------------------------------
def test_npy_is_refused_naming_the_kind_and_the_formats_that_work(splade, colbert, tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("hello world\n")
    for model, kind in ((splade, "a sparse (SPLADE) model"), (colbert, "a multi-vector (ColBERT) model")):
        with pytest.raises(
            CorpusUsageError,
            match=rf"{re.escape(kind)} gives each text a different number .* \.parquet .* or \.jsonl",
        ):
            run(plan([str(source)], str(tmp_path / "v.npy")), model)
        assert not partial_path(tmp_path / "v.npy").exists()
    with pytest.raises(CorpusUsageError, match="takes no prompt"):
        run(plan([str(source)], str(tmp_path / "v.jsonl")), colbert, prompt="query: ")


def test_the_command_writes_sparse_and_multi_vector_parquet(inference_free_dir, colbert_dir, tmp_path):
    texts = mixed_texts(200, seed=5)
    source = tmp_path / "a.txt"
    source.write_text("\n".join(texts) + "\n")
    out = tmp_path / "s.parquet"
    done = run_cli("embed", str(source), "--model", str(inference_free_dir), "-o", str(out), "--query")
    assert done.returncode == 0, done.stderr
    assert f"-> {out} (sparse over a 16-word vocabulary)" in done.stderr
    expected = SparseTextEmbedding(inference_free_dir).query_embed(texts)
    assert_sparse_equal(sparse_rows(pq.read_table(out)), expected)

    out = tmp_path / "c.parquet"
    done = run_cli("embed", str(source), "--model", str(colbert_dir), "-o", str(out), "--no-text")
    assert done.returncode == 0 and "(multi-vector, 16 dims per token)" in done.stderr, done.stderr
    table = pq.read_table(out)
    assert table.column_names == ["id", "embedding"]
    assert_multi_vector_equal(
        table["embedding"].to_pylist(), LateInteractionTextEmbedding(colbert_dir).embed(texts)
    )

    refused = run_cli("embed", str(source), "--model", str(inference_free_dir), "-o", str(tmp_path / "v.npy"))
    assert failed_with(refused, "a sparse (SPLADE) model gives each text a different number", status=2)
    assert not (tmp_path / "v.npy.partial").exists()
    for flag in (["--max-length", "8"], ["--prompt-text", "x "]):
        refused = run_cli("embed", str(source), "--model", str(colbert_dir), *flag)
        assert failed_with(refused, "is a multi-vector (ColBERT) model: it takes no", status=2)
