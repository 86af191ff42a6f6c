"""The corpus command with BGE-M3: dense by default (its files say so), and with ``--outputs`` any of
its three outputs written side by side from one forward pass: ``embedding`` (dense), ``indices`` and
``values`` (its lexical weights by token id), ``colbert`` (its token vectors); each column equal to
``BGEM3(...).embed(...)``'s output, resumable as any run, and the option refused (exit status 2,
naming the fix) for a model that is not BGE-M3 or an output that cannot hold the rows.

The rows are computed exactly as ``BGEM3.embed`` computes them (the same tokenize-and-sort windows,
the same batches, the same sessions), so they are compared for equality, not within a tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli_embed import failed_with, run_cli
from test_corpus_kinds import (
    assert_multi_vector_equal,
    assert_sparse_equal,
    mixed_texts,
    read_jsonl,
    sparse_rows,
)

from fastembed_native import BGEM3, TextEmbedding
from fastembed_native.corpus import CorpusError, CorpusUsageError, plan, run
from fastembed_native.corpus.encoders import Encoder
from fastembed_native.corpus.outputs import partial_path
from fastembed_native.corpus.resume import state_path

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FIXTURE = Path(__file__).parent / "data" / "bge_m3_tiny"


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory) -> Path:
    from fastembed_native.models import export_model

    return export_model(FIXTURE, tmp_path_factory.mktemp("m3") / "model").model_dir


@pytest.fixture(scope="module")
def m3(m3_dir) -> BGEM3:
    # batch_size 4 and 2 threads: many batches per sort window, run 2 at a time.
    return BGEM3(m3_dir, batch_size=4, threads=2)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*mixed_texts(500, seed=7), "", "a, b. c!", " ".join(f"token{i}" for i in range(300))]


@pytest.fixture(scope="module")
def source(tmp_path_factory, texts) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "a.txt"
    path.write_text("\n".join(texts) + "\n")
    return path


def test_three_outputs_side_by_side_equal_bgem3(m3, source, texts, tmp_path):
    expected = m3.embed(texts)
    steps: list[int] = []
    out = tmp_path / "v.parquet"
    encoder = Encoder(m3, outputs="dense,sparse,colbert")
    assert encoder.kind == "bge-m3:dense,sparse,colbert"
    assert run(plan([str(source)], str(out), window=200), encoder, progress=steps.append) == len(texts)
    assert sum(steps) == len(texts) and len(steps) > 3  # progress every few batches
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "embedding", "indices", "values", "colbert"]
    vector = pa.list_(pa.float32(), m3.engine.dim)
    assert table.schema.field("embedding").type == vector
    assert table.schema.field("indices").type == pa.list_(pa.int32())
    assert table.schema.field("values").type == pa.list_(pa.float32())
    assert table.schema.field("colbert").type == pa.list_(vector)
    assert table["text"].to_pylist() == texts
    np.testing.assert_array_equal(np.array(table["embedding"].to_pylist(), dtype=np.float32), expected.dense)
    assert_sparse_equal(sparse_rows(table), expected.sparse)
    assert_multi_vector_equal(table["colbert"].to_pylist(), expected.colbert)

    # Some outputs only, in JSONL: each record holds the fields of those it asked for.
    jsonl = tmp_path / "v.jsonl"
    run(plan([str(source)], str(jsonl), with_text=False), Encoder(m3, outputs=["colbert", "sparse"]))
    records = read_jsonl(jsonl)
    assert set(records[0]) == {"id", "indices", "values", "colbert"}
    assert_sparse_equal([(r["indices"], r["values"]) for r in records], expected.sparse)
    assert_multi_vector_equal([r["colbert"] for r in records], expected.colbert)


def test_a_bge_m3_run_resumes_after_ctrl_c_into_the_same_rows(m3, source, texts, tmp_path):
    out = tmp_path / "v.parquet"
    encoder = Encoder(m3, outputs="sparse,colbert")
    embedded: list[int] = []

    def ctrl_c_in_the_third_window(n: int) -> None:
        embedded.append(n)
        if sum(embedded) > 250:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(plan([str(source)], str(out), window=100), encoder, progress=ctrl_c_in_the_third_window)
    state = json.loads(state_path(out).read_text())
    assert (state["rows"], state["kind"], state["dim"]) == (200, "bge-m3:sparse,colbert", m3.engine.dim)
    # Resuming with other outputs is refused; the partial run stays as it was.
    with pytest.raises(
        CorpusError, match=r"holds BGE-M3 rows of sparse and colbert \(32 dims\), the model makes"
    ):
        run(plan([str(source)], str(out), window=100, resume=True), Encoder(m3, outputs="dense,sparse"))
    job = plan([str(source)], str(out), window=100, resume=True)
    assert job.notes == [f"resuming {out} after 200 rows"]
    assert run(job, encoder) == len(texts)
    table = pq.read_table(out)
    assert table["id"].to_pylist() == list(range(len(texts)))
    expected = m3.embed(texts, dense=False)
    assert_sparse_equal(sparse_rows(table), expected.sparse)
    assert_multi_vector_equal(table["colbert"].to_pylist(), expected.colbert)
    assert not partial_path(out).exists() and not state_path(out).exists()


def test_outputs_are_checked(m3, tmp_path):
    with pytest.raises(ValueError, match="BGE-M3's outputs are dense, sparse, colbert .* got 'lexical'"):
        Encoder(m3, outputs="dense,lexical")
    dense = TextEmbedding(m3.engine.model_dir)
    with pytest.raises(ValueError, match="outputs are BGE-M3's"):
        Encoder(dense, outputs="sparse")
    # Dense alone is the model's plain dense rows, which a .npy holds.
    assert Encoder(m3, outputs="dense").kind == "dense"
    source = tmp_path / "a.txt"
    source.write_text("hello world\n")
    with pytest.raises(
        CorpusUsageError, match=r"BGE-M3's sparse output gives each text .* \.parquet or \.jsonl"
    ):
        run(plan([str(source)], str(tmp_path / "v.npy")), Encoder(m3, outputs="dense,sparse"))
    assert not partial_path(tmp_path / "v.npy").exists()


def test_the_command_writes_the_outputs_asked_for(m3_dir, source, texts, tmp_path):
    expected = BGEM3(m3_dir).embed(texts)
    out = tmp_path / "m3.parquet"
    done = run_cli(
        "embed", str(source), "--model", str(m3_dir), "-o", str(out), "--outputs", "sparse,dense,colbert"
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"-> {out} (BGE-M3 dense 32 dims, sparse over a 1000-word vocabulary, colbert 32 dims" in done.stderr
    )
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "embedding", "indices", "values", "colbert"]
    np.testing.assert_array_equal(np.array(table["embedding"].to_pylist(), dtype=np.float32), expected.dense)
    assert_sparse_equal(sparse_rows(table), expected.sparse)
    assert_multi_vector_equal(table["colbert"].to_pylist(), expected.colbert)

    # Without --outputs: dense, as its files say, as before.
    out = tmp_path / "dense.parquet"
    done = run_cli("embed", str(source), "--model", str(m3_dir), "-o", str(out), "--no-text")
    assert done.returncode == 0 and "(32 dims)" in done.stderr, done.stderr
    table = pq.read_table(out)
    assert table.column_names == ["id", "embedding"]
    np.testing.assert_array_equal(np.array(table["embedding"].to_pylist(), dtype=np.float32), expected.dense)


def test_the_command_refuses_outputs_it_cannot_write(m3_dir, tmp_path):
    from conftest import write_model_dir

    source = tmp_path / "a.txt"
    source.write_text("hello world\n")
    dense = write_model_dir(tmp_path / "dense").path
    cases = [
        (
            ["--model", str(dense), "-o", str(tmp_path / "v.parquet"), "--outputs", "sparse"],
            "is not one: leave --outputs out",
        ),
        (
            ["--model", str(m3_dir), "-o", str(tmp_path / "v.npy"), "--outputs", "dense,colbert"],
            "BGE-M3's colbert output gives",
        ),
        (
            ["--model", str(m3_dir), "-o", str(tmp_path / "v.parquet"), "--outputs", "dense,bm25"],
            "--outputs: BGE-M3's outputs are dense, sparse, colbert",
        ),
    ]
    for args, message in cases:
        refused = run_cli("embed", str(source), *args)
        assert failed_with(refused, message, status=2), refused.stderr
    assert not list(tmp_path.glob("v.*"))  # refused before anything was written
