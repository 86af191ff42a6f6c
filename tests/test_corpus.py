"""Streaming embedding in-process: ``TextEmbedding.embed_iter`` / ``model_name=``, the corpus
readers (resume skips included), the writers' partial files and the resume fingerprint.
The command line itself is tested as a subprocess in test_cli_embed.py."""

from __future__ import annotations

import json
from itertools import count, pairwise

import numpy as np
import pytest
from conftest import WORDS

from fastembed_native import TextEmbedding
from fastembed_native.corpus import CorpusError, CorpusUsageError, plan, plan_inputs, read_texts, run
from fastembed_native.corpus import job as corpus_job
from fastembed_native.corpus.command import _interrupted_message
from fastembed_native.corpus.outputs import NpyWriter, partial_path
from fastembed_native.corpus.resume import differences, state_path
from fastembed_native.engine.stream import _groups


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of 0 to 13 words: batches of very different widths, as in a real corpus."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, 14))) for _ in range(n)]


@pytest.fixture
def tiny(encoder_dir):
    # batch_size 4 and 2 threads: many batches per window, run 2 at a time.
    return TextEmbedding(encoder_dir.path, batch_size=4, threads=2)


# -- embed_iter ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("chunk", "n"), [(1, 100), (7, 500), (4097, 5000), (16384, 5000)], ids=str)
def test_embed_iter_equals_embed_on_a_generator(tiny, chunk, n):
    texts = mixed_texts(n)
    expected = tiny.embed(texts)
    steps: list[int] = []
    parts = list(tiny.embed_iter((t for t in texts), chunk=chunk, progress=steps.append))
    assert all(p.dtype == np.float32 and len(p) <= chunk for p in parts)
    # Same sort windows, same batches, same sessions: the very same vectors.
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    assert sum(steps) == len(texts)
    if chunk >= 4096:  # progress moves per few batches, not per window
        assert len(steps) > 10 * len(parts)
    np.testing.assert_array_equal(np.concatenate(list(tiny.embed_iter(texts, chunk=chunk))), expected)


def test_embed_iter_reads_lazily_and_keeps_order(tiny):
    consumed = count()

    def source():
        for i in range(10_000):
            next(consumed)
            yield WORDS[i % len(WORDS)] * (1 + i % 3)

    stream = tiny.embed_iter(source(), chunk=1000)
    first = next(stream)
    assert len(first) == 1000 and next(consumed) <= 1001  # one chunk read, not the whole input
    rest = np.concatenate([first, *stream])
    texts = [WORDS[i % len(WORDS)] * (1 + i % 3) for i in range(10_000)]
    np.testing.assert_array_equal(rest, tiny.embed(texts))


def test_embed_iter_prompt_and_dimensions(tiny, encoder_dir):
    texts = mixed_texts(300)
    got = np.concatenate(list(tiny.embed_iter(texts, chunk=128, prompt="fox ", dimensions=3)))
    np.testing.assert_array_equal(got, tiny.embed(texts, prompt="fox ", dimensions=3))
    np.testing.assert_allclose(np.linalg.norm(got[np.abs(got).sum(1) > 0], axis=1), 1, rtol=1e-5)
    # A model that leaves the prompt out of the pooling (sentence-transformers' include_prompt).
    skipping = TextEmbedding(encoder_dir.path, batch_size=4, threads=2, include_prompt=False)
    for progress in (None, lambda n: None):
        got = np.concatenate(list(skipping.embed_iter(texts, chunk=128, prompt="fox ", progress=progress)))
        np.testing.assert_array_equal(got, skipping.embed(texts, prompt="fox "))
        assert not np.array_equal(got, tiny.embed(texts, prompt="fox "))


def test_embed_iter_bad_input(tiny):
    with pytest.raises(TypeError, match=r"texts\[5\] must be str, not int"):
        list(tiny.embed_iter(["dog"] * 5 + [3], chunk=2))
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        tiny.embed_iter(["dog"], chunk=0)  # refused at the call, not at the first next()
    with pytest.raises(TypeError, match="iterable of strings, not int"):
        tiny.embed_iter(3)
    assert [v.shape for v in tiny.embed_iter("one string")] == [(1, tiny.dim)]
    assert list(tiny.embed_iter(iter([]))) == []


def test_groups_cover_every_batch_once_and_never_leave_one_alone():
    for n in range(1, 30):
        batches = [slice(i * 3, i * 3 + 3) for i in range(n)]
        for per_group in (2, 4, 8):
            groups = _groups(batches, per_group)
            assert groups[0].start == 0 and groups[-1].stop == 3 * n
            assert all(a.stop == b.start for a, b in pairwise(groups))
            sizes = [(g.stop - g.start) // 3 for g in groups]
            assert max(sizes) <= per_group + 1
            assert n == 1 or min(sizes) >= 2  # a lone batch would run on the other session
    assert _groups([], 4) == []


def test_model_name_is_accepted_as_fastembed_users_write_it(encoder_dir):
    model = TextEmbedding(model_name=str(encoder_dir.path))
    assert model.model_dir == encoder_dir.path
    with pytest.raises(TypeError, match="model= or model_name=, not both"):
        TextEmbedding(str(encoder_dir.path), model_name=str(encoder_dir.path))


@pytest.mark.real_model
def test_embed_iter_matches_embed_on_the_real_model(minilm):
    from fastembed_native.models import PARITY_TEXTS

    texts = [t * (1 + i % 4) for i, t in enumerate(PARITY_TEXTS * 4)]
    streamed = np.concatenate(list(minilm.embed_iter(iter(texts), chunk=64, progress=lambda n: None)))
    np.testing.assert_allclose(streamed, minilm.embed(texts), atol=2e-6)


# -- readers ------------------------------------------------------------------------------------------
def test_text_lines_crlf_bom_blank_lines_and_several_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes("\ufeffhello world\r\n\r\nflag embedding".encode())
    b.write_bytes(b"dog\n")
    texts = list(read_texts(plan_inputs([str(a), str(b)], None, None)))
    assert texts == ["hello world", "", "flag embedding", "dog"]


def test_skipping_for_a_resume_crosses_files_and_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines, jsonl, parquet = tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"
    lines.write_text("l0\nl1\nl2\n")
    jsonl.write_text('{"t": "j0"}\n\n{"t": "j1"}\n{"t": "j2"}\n')
    pq.write_table(pa.table({"body": [f"p{i}" for i in range(10)]}), parquet, row_group_size=3)
    expected = ["l0", "l1", "l2", "j0", "j1", "j2"] + [f"p{i}" for i in range(10)]
    text_inputs = plan_inputs([str(lines)], None, None)
    jsonl_inputs = plan_inputs([str(jsonl), str(parquet)], "t", "body")
    for skip in range(len(expected) + 2):
        got = list(read_texts(text_inputs, skip=min(skip, 3)))
        got += list(read_texts(jsonl_inputs, skip=max(0, skip - 3)))
        assert got == expected[skip:], skip


def test_bad_input_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nalso fine\ncaf\xe9\n")
    with pytest.raises(CorpusError, match=r"bad\.txt:3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        list(read_texts(plan_inputs([str(bad)], None, None)))
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"body": "x"}) + "\n" + json.dumps({"title": "y"}) + "\n[1]\n{\n")
    with pytest.raises(CorpusError, match=r"r\.jsonl:2: record has no field 'body' \(its fields: 'title'\)"):
        list(read_texts(plan_inputs([str(records)], "body", None)))
    with pytest.raises(CorpusError, match=r"r\.jsonl:3: expected a JSON object, got list"):
        list(read_texts(plan_inputs([str(records)], "body", None), skip=2))
    with pytest.raises(CorpusError, match=r"r\.jsonl:4: not JSON"):
        list(read_texts(plan_inputs([str(records)], "body", None), skip=3))
    with pytest.raises(CorpusError, match="is a directory, expected a file"):
        plan_inputs([str(tmp_path)], None, None)
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        plan_inputs([str(tmp_path / "nope.txt")], None, None)


def test_parquet_input_problems(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["a", None, "c"], "n": [1, 2, 3]}), path)
    with pytest.raises(CorpusError, match=r"no column 'text' \(its columns: body, n\)"):
        list(read_texts(plan_inputs([str(path)], None, None)))
    with pytest.raises(CorpusError, match="column 'n' holds int64, expected strings"):
        list(read_texts(plan_inputs([str(path)], None, "n")))
    with pytest.raises(CorpusError, match=r"row 1 \(counting from 0\): column 'body' is null"):
        list(read_texts(plan_inputs([str(path)], None, "body")))


def test_options_that_do_not_fit_the_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    text, docs, table = tmp_path / "a.txt", tmp_path / "d.JSONL", tmp_path / "t.parquet"
    text.write_text("hello\n")
    docs.write_text('{"body": "x"}\n')
    pq.write_table(pa.table({"body": ["x"]}), table)
    with pytest.raises(CorpusUsageError, match=r"d\.JSONL is JSONL: pass --field NAME"):
        plan_inputs([str(text), str(docs)], None, None)
    with pytest.raises(CorpusUsageError, match="--column body names the text column of Parquet inputs"):
        plan_inputs([str(text)], None, "body")
    with pytest.raises(CorpusUsageError, match="--field body names a field of JSONL records"):
        plan_inputs([str(table)], "body", None)
    # Each option where some input takes it: JSONL by --field, Parquet by --column.
    assert [i.kind for i in plan_inputs([str(docs), str(table)], "body", "body")] == ["jsonl", "parquet"]


# -- commits and resume state ----------------------------------------------------------------------------
def record_commits(monkeypatch) -> list[int]:
    """The row counts at which the run saves its state, i.e. commits."""
    commits: list[int] = []
    save = corpus_job.save_state

    def recording(output, state):
        commits.append(state["rows"])
        save(output, state)

    monkeypatch.setattr(corpus_job, "save_state", recording)
    return commits


def test_commits_by_time_fall_on_sort_windows_and_leave_the_vectors_alone(tiny, tmp_path, monkeypatch):
    texts = mixed_texts(10_000, seed=3)
    source, out = tmp_path / "a.txt", tmp_path / "v.npy"
    source.write_text("\n".join(texts) + "\n")
    commits = record_commits(monkeypatch)
    expected = tiny.embed(texts)
    # Never by time: one commit, when the input ends inside the first 16,384-text window.
    run(plan([str(source)], str(out)), tiny, commit_seconds=float("inf"))
    assert commits == [10_000]
    np.testing.assert_array_equal(np.load(out), expected)
    # Always: after every 4,096-text sort window.
    commits.clear()
    run(plan([str(source)], str(out), overwrite=True), tiny, commit_seconds=0)
    assert commits == [4096, 8192, 10_000]
    np.testing.assert_array_equal(np.load(out), expected)
    # A clock that moves 3 s per reading, 5 s between commits: the first sort window ends 3 s after
    # the start, the second 6 s after; then the input ends.
    ticks = count(0, 3)
    commits.clear()
    run(plan([str(source)], str(out), overwrite=True), tiny, commit_seconds=5, clock=lambda: next(ticks))
    assert commits == [8192, 10_000]
    np.testing.assert_array_equal(np.load(out), expected)
    # Smaller windows than a sort window are committed whole, and only at their ends.
    commits.clear()
    run(plan([str(source)], str(out), overwrite=True, window=3000), tiny, commit_seconds=0)
    assert commits == [3000, 6000, 9000, 10_000]
    np.testing.assert_array_equal(np.load(out), expected)


@pytest.mark.parametrize("name", ["v.npy", "v.jsonl", "v.parquet"])
def test_ctrl_c_before_the_first_commit_removes_the_partial_output(tiny, tmp_path, name):
    source, out = tmp_path / "a.txt", tmp_path / name
    source.write_text("\n".join(mixed_texts(50)) + "\n")

    def ctrl_c(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(plan([str(source)], str(out)), tiny, progress=ctrl_c)
    assert not partial_path(out).exists() and not state_path(out).exists()
    assert _interrupted_message(str(out)).endswith("nothing was saved")
    job = plan([str(source)], str(out))  # no "unfinished run" to resume: the rerun just starts
    assert job.resume_from is None and job.notes == []


def test_ctrl_c_after_a_commit_keeps_the_partial_output_for_resume(tiny, tmp_path):
    texts = mixed_texts(5000, seed=2)
    source, out = tmp_path / "a.txt", tmp_path / "v.npy"
    source.write_text("\n".join(texts) + "\n")
    embedded = []

    def ctrl_c_in_the_second_sort_window(n: int) -> None:
        embedded.append(n)
        if sum(embedded) > 4096:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(plan([str(source)], str(out)), tiny, commit_seconds=0, progress=ctrl_c_in_the_second_sort_window)
    assert partial_path(out).exists() and "4096 rows are saved" in _interrupted_message(str(out))
    job = plan([str(source)], str(out), resume=True)
    assert job.notes == [f"resuming {out} after 4096 rows"]
    run(job, tiny)
    np.testing.assert_array_equal(np.load(out), tiny.embed(texts))


# -- writers and resume state -------------------------------------------------------------------------
def test_npy_partial_is_a_valid_array_of_the_committed_rows(tmp_path):
    out = tmp_path / "v.npy"
    writer = NpyWriter(str(out), 5, with_text=False)
    writer.open(None)
    data = np.arange(35, dtype=np.float32).reshape(7, 5)
    writer.write(0, [""] * 4, data[:4])
    state = writer.commit(4)
    writer.write(4, [""] * 3, data[4:])  # written, not committed: a crash here loses these rows
    writer.close()
    np.testing.assert_array_equal(np.load(partial_path(out)), data[:4])
    again = NpyWriter(str(out), 5, with_text=False)
    again.open(state)
    again.write(4, [""] * 3, data[4:])
    again.finish(7)
    np.testing.assert_array_equal(np.load(out), data)
    assert not partial_path(out).exists()
    # The fixed-size header holds any row count.
    assert len(NpyWriter(None, 4096, False)._header(10**18)) == NpyWriter.HEADER_BYTES


def test_jsonl_writer_holds_a_few_lines_of_text_not_a_window(tmp_path):
    """Before: a window's vectors as Python floats, then its JSON twice over (hundreds of MB for
    16,384 x 384). Now a few hundred lines at a time: the peak stays at a few MB."""
    import tracemalloc

    from fastembed_native.corpus.outputs import JsonlWriter

    vectors = np.random.default_rng(0).standard_normal((16_384, 384)).astype(np.float32)
    texts = [f"text {i}" for i in range(len(vectors))]
    writer = JsonlWriter(str(tmp_path / "v.jsonl"), 384, with_text=True)
    writer.open(None)
    tracemalloc.start()
    try:
        writer.write(0, texts, vectors)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.finish(len(vectors))
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MB traced while writing one window"
    with open(tmp_path / "v.jsonl", "rb") as written:
        first, *_, last = written.read().splitlines()
    assert json.loads(first)["id"] == 0 and json.loads(last)["id"] == len(vectors) - 1
    np.testing.assert_array_equal(np.array(json.loads(last)["embedding"], dtype=np.float32), vectors[-1])


PARQUET_WITHOUT_PANDAS = """
import sys
import numpy as np
from fastembed_native.corpus.outputs import ParquetWriter
writer = ParquetWriter(sys.argv[1], 384, with_text=True)
writer.open(None)
writer.write(0, ["a", "b", "c"] * 2000, np.ones((6000, 384), dtype=np.float32))
writer.finish(6000)
print("pandas" in sys.modules)
"""


def test_parquet_writer_keeps_row_groups_small_and_pandas_out(tmp_path):
    """pa.array() imports pandas when it is installed (55 MB of RSS), and a window in one row group
    made Arrow's encoding buffers grow with the window: neither is needed to write vectors."""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    out = tmp_path / "v.parquet"
    result = subprocess.run(
        [sys.executable, "-c", PARQUET_WITHOUT_PANDAS, str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr + result.stdout
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == 6000 and meta.num_row_groups == 3  # 2,730 rows of 384 floats: 4 MB each
    table = pq.read_table(out)
    assert table["text"].to_pylist()[:4] == ["a", "b", "c", "a"] and table["id"].to_pylist() == list(
        range(6000)
    )
    assert not partial_path(out).exists()


def test_fingerprint_differences_say_what_changed():
    base = {
        "inputs": [{"path": "/a.txt", "kind": "lines", "key": None, "size": 5, "mtime_ns": 1}],
        "batch_size": 32,
    }
    grown = {**base, "inputs": [{**base["inputs"][0], "size": 9}]}
    touched = {**base, "inputs": [{**base["inputs"][0], "mtime_ns": 2}]}
    assert differences(base, base) == []
    assert differences(base, grown) == ["input /a.txt changed (size 5 -> 9)"]
    assert differences(base, touched) == ["input /a.txt changed (modified)"]
    assert differences(base, {**base, "batch_size": 64}) == ["batch_size: 32 -> 64"]
    assert differences(base, {**base, "inputs": []}) == ["inputs: ['/a.txt'] -> []"]
