"""The engine on tiny models whose exact outputs numpy computes: inputs discovered from the model,
padding, truncation, pooling modes, ordering, zero copy and typed errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import VOCAB, build_tokenizer, write_model_dir
from reference import pool_reference

import fastembed_native
from fastembed_native import TextEmbedding, _core
from fastembed_native.engine import runtime as _runtime
from fastembed_native.engine import token_batches
from fastembed_native.engine import tokens as engine_tokens
from fastembed_native.errors import OrtInvalidModel, OrtNoSuchFile

TEXTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "flag",
    "embedding hello",
    "dog dog dog fox",
]


def tokens(text: str, max_length: int = 16) -> list[int]:
    ids = [VOCAB.get(w, VOCAB["[UNK]"]) for w in text.split()][: max_length - 2]
    return [VOCAB["[CLS]"], *ids, VOCAB["[SEP]"]]


def expected(model, texts, mode, normalize, max_length=16, left=False) -> np.ndarray:
    """Embed each text alone (no padding) with numpy."""
    rows = []
    for text in texts:
        ids = np.array([tokens(text, max_length)])
        positions = np.arange(ids.shape[1])[None, :]
        states = model.states(ids, np.zeros_like(ids), positions)
        rows.append(pool_reference(states, np.ones_like(ids), mode, normalize)[0])
    return np.array(rows)


def test_encoder_with_token_types_matches_numpy(encoder_dir):
    model = TextEmbedding(encoder_dir.path)
    assert (model.dim, model.max_length, model.pooling, model.normalize) == (7, 16, "mean", True)
    got = model.embed(TEXTS, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 7)
    np.testing.assert_allclose(got, expected(encoder_dir, TEXTS, "mean", True), rtol=1e-5, atol=1e-6)


def test_encoder_without_token_types(tmp_path):
    tiny = write_model_dir(tmp_path / "m", pooling="cls")
    model = TextEmbedding(tiny.path)
    assert "token_type_ids" not in model._session.input_roles
    np.testing.assert_allclose(model.embed(TEXTS), expected(tiny, TEXTS, "cls", False), rtol=1e-6)


def test_decoder_last_token_with_left_padding(decoder_dir):
    """Left padding, positions derived from the mask: each row equals the text embedded alone."""
    model = TextEmbedding(decoder_dir.path)
    assert model.config.padding_side == "left" and model.pooling == "last_token"
    assert model._session.input_roles["position_ids"] == "position_ids"
    got = model.embed(TEXTS, batch_size=len(TEXTS))
    np.testing.assert_allclose(got, expected(decoder_dir, TEXTS, "last_token", True), rtol=1e-5, atol=1e-6)


def test_decoder_right_padding_gives_the_same_vectors(decoder_dir):
    left = TextEmbedding(decoder_dir.path).embed(TEXTS)
    right = TextEmbedding(decoder_dir.path, padding_side="right").embed(TEXTS)
    np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-6)


def test_pre_pooled_output_is_used_as_is(tmp_path):
    tiny = write_model_dir(tmp_path / "pooled", pooled_output=True, normalize=True)
    model = TextEmbedding(tiny.path)
    assert model.pooling == "pooled" and model._session.output_name == "sentence_embedding"
    np.testing.assert_allclose(
        model.embed(TEXTS, batch_size=3), expected(tiny, TEXTS, "mean", True), rtol=1e-5, atol=1e-6
    )


def test_truncation_at_max_length(encoder_dir):
    model = TextEmbedding(encoder_dir.path, max_length=5)
    long_text = "the quick brown fox jumps over the lazy dog"
    got = model.embed([long_text, "the quick brown"])
    np.testing.assert_allclose(got[0], got[1], rtol=1e-6)  # both are [CLS] the quick brown [SEP]


def test_padding_and_truncation_stored_in_tokenizer_json_are_overridden(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.enable_padding(length=12, pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=3)
    tiny = write_model_dir(tmp_path / "m", tokenizer=tokenizer)
    got = TextEmbedding(tiny.path).embed(TEXTS)
    np.testing.assert_allclose(got, expected(tiny, TEXTS, "mean", False), rtol=1e-5, atol=1e-6)


def test_explicit_arguments_override_config_files(encoder_dir):
    model = TextEmbedding(encoder_dir.path, pooling="cls", normalize=False, max_length=8)
    assert (model.pooling, model.normalize, model.max_length) == ("cls", False, 8)
    np.testing.assert_allclose(
        model.embed(TEXTS), expected(encoder_dir, TEXTS, "cls", False, 8), rtol=1e-5, atol=1e-6
    )


def test_rows_follow_input_order_whatever_the_batching(encoder_dir):
    model = TextEmbedding(encoder_dir.path)
    texts = [" ".join(["fox"] * n) for n in (5, 1, 9, 3, 12, 2, 7)]
    alone = np.vstack([model.embed(t) for t in texts])
    for batch_size in (1, 2, 3, 7, 100):
        np.testing.assert_allclose(model.embed(texts, batch_size=batch_size), alone, rtol=1e-5, atol=1e-6)


def test_model_with_an_input_it_cannot_fill(tmp_path):
    tiny = write_model_dir(tmp_path / "m", extra_input="pixel_values")
    with pytest.raises(
        ValueError, match="cannot fill: pixel_values.*input_ids, attention_mask, pixel_values"
    ):
        TextEmbedding(tiny.path)


def test_model_without_token_inputs(tmp_path):
    tiny = write_model_dir(tmp_path / "m", ids_input="image")
    with pytest.raises(ValueError, match="cannot fill: image"):
        TextEmbedding(tiny.path)


def test_tokenizer_larger_than_the_embedding_table_is_caught(tmp_path):
    """Ids past the model's table are reported (row and id), never read out of bounds."""
    tiny = write_model_dir(tmp_path / "m", vocab_rows=8, vocab_size=8)
    model = TextEmbedding(tiny.path)
    assert model.embed(["hello world"]).shape == (1, 7)  # ids 4 and 5 fit
    with pytest.raises(ValueError, match=r"token id \d+ in row 0 is outside the model's vocabulary \[0, 8\)"):
        model.embed(["lazy dog"])


def test_out_of_range_ids_without_config_vocab_are_an_ort_error(tmp_path):
    """Without config.json's vocab_size, ORT's own bounds check answers (a typed error, no crash)."""
    tiny = write_model_dir(tmp_path / "m", vocab_rows=8, vocab_size=None)
    with pytest.raises(fastembed_native.OrtError, match="ORT_"):
        TextEmbedding(tiny.path).embed(["lazy dog"])


# -- zero copy and the session interface ------------------------------------------------------------


def test_ort_tensors_view_numpy_memory():
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert _core.tensor_data_address(ids) == ids.ctypes.data


def test_session_writes_rows_in_place(encoder_dir):
    session = _core.Session(str(encoder_dir.path / "onnx" / "model.onnx"))
    ids = np.array([[2, 4, 3], [2, 5, 3]], dtype=np.int64)
    mask = np.ones_like(ids)
    out = np.full((4, 7), -1.0, dtype=np.float32)
    address = out.ctypes.data
    session.embed(ids, mask, None, out, np.array([3, 1], dtype=np.int64), pooling="mean")
    assert out.ctypes.data == address
    want = pool_reference(encoder_dir.states(ids), mask, "mean", False)
    np.testing.assert_allclose(out[[3, 1]], want, rtol=1e-6)
    assert (out[[0, 2]] == -1.0).all()  # untouched rows stay as they were


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ids": np.zeros((2, 3), np.int32)}, TypeError, "input_ids must have dtype int64"),
        ({"ids": np.zeros((2, 3, 1), np.int64)}, ValueError, "input_ids must have 2 dimensions"),
        (
            {"mask": np.ones((2, 4), np.int64)},
            ValueError,
            r"attention_mask has shape \(2, 4\) but input_ids has shape \(2, 3\)",
        ),
        ({"out": np.zeros((2, 5), np.float32)}, ValueError, r"has shape \[2, 3, 7\]; expected \[2, 3, 5\]"),
        ({"out": np.zeros((2, 7), np.float64)}, TypeError, "out must have dtype float32"),
        ({"rows": np.array([0, 9], np.int64)}, ValueError, r"destination row 9 is outside \[0, 2\)"),
        ({"rows": np.array([0], np.int64)}, ValueError, "rows has shape"),
        ({"pooling": "max"}, ValueError, "unknown pooling mode 'max'"),
    ],
    ids=["int32-ids", "3d-ids", "mask-shape", "out-width", "out-dtype", "row-range", "rows-length", "mode"],
)
def test_session_checks_every_argument(encoder_dir, kwargs, error, message):
    session = _core.Session(str(encoder_dir.path / "onnx" / "model.onnx"))
    args = {
        "ids": np.full((2, 3), 4, np.int64),
        "mask": np.ones((2, 3), np.int64),
        "out": np.zeros((2, 7), np.float32),
        "rows": None,
        "pooling": "mean",
    }
    args.update(kwargs)
    with pytest.raises(error, match=message):
        session.embed(args["ids"], args["mask"], None, args["out"], args["rows"], pooling=args["pooling"])


def test_read_only_output_is_refused(encoder_dir):
    session = _core.Session(str(encoder_dir.path / "onnx" / "model.onnx"))
    out = np.zeros((1, 7), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        session.embed(np.full((1, 2), 4, np.int64), np.ones((1, 2), np.int64), None, out)


# -- typed errors and the runtime -----------------------------------------------------------------


def test_missing_and_corrupt_model_files(tmp_path, encoder_dir):
    with pytest.raises(OrtNoSuchFile, match="ORT_NO_SUCHFILE") as missing:
        _core.Session(str(tmp_path / "absent.onnx"))
    assert isinstance(missing.value, FileNotFoundError) and missing.value.code_name == "ORT_NO_SUCHFILE"
    (encoder_dir.path / "onnx" / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(OrtInvalidModel, match="ORT_INVALID_PROTOBUF") as corrupt:
        TextEmbedding(encoder_dir.path)
    assert isinstance(corrupt.value, ValueError) and corrupt.value.code > 0


def test_missing_model_dir_and_files(tmp_path, encoder_dir):
    with pytest.raises(FileNotFoundError, match="no such directory: .*nowhere"):
        TextEmbedding(tmp_path / "nowhere")
    (encoder_dir.path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in"):
        TextEmbedding(encoder_dir.path)
    (encoder_dir.path / "onnx" / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"onnx/model.onnx.*model.onnx"):
        TextEmbedding(encoder_dir.path)


def test_unsupported_pooling_config(encoder_dir):
    config = encoder_dir.path / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match="pooling mode 'max' is not supported"):
        TextEmbedding(encoder_dir.path)


def test_runtime_comes_from_the_onnxruntime_wheel():
    info = fastembed_native.runtime_info()
    assert Path(info["library"]).parent.name == "capi"
    assert info["headers_api_version"] == _core.HEADERS_API_VERSION == 21
    assert int(info["version"].split(".")[1]) >= 21
    assert "CPUExecutionProvider" in info["available_providers"]


def test_embedding_never_imports_onnxruntimes_python_module(encoder_dir):
    """Its module carries a second copy of ORT; we only load the shared library."""
    code = f"""
        import sys
        from fastembed_native import TextEmbedding
        TextEmbedding({str(encoder_dir.path)!r}).embed(["hello world"])
        print(sorted(m for m in sys.modules if m.startswith("onnxruntime")))
    """
    result = _run_python(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _run_python(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


LOAD = "import fastembed_native\nfastembed_native.available_providers()\n"


def test_library_override_that_is_not_onnxruntime():
    libm = next(
        p
        for p in (
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
            "/lib64/libm.so.6",
        )
        if Path(p).exists()
    )
    result = _run_python(LOAD, {_runtime.LIBRARY_ENV: libm})
    assert result.returncode != 0
    assert "RuntimeLoadError" in result.stderr and "not an ONNX Runtime library" in result.stderr


def test_library_override_that_does_not_exist(tmp_path):
    result = _run_python(LOAD, {_runtime.LIBRARY_ENV: str(tmp_path / "libnothing.so")})
    assert "RuntimeLoadError" in result.stderr and "does not name a file" in result.stderr


def test_runtime_older_than_the_headers_names_both_versions(tmp_path):
    """A fake libonnxruntime whose GetApi refuses our API version, as ORT 1.20 would."""
    source = tmp_path / "fake_ort.c"
    source.write_text(
        textwrap.dedent("""
        #include <stddef.h>
        typedef struct { const void* (*GetApi)(unsigned); const char* (*GetVersionString)(void); } Base;
        static const void* get_api(unsigned version) { (void)version; return NULL; }
        static const char* version(void) { return "1.20.0"; }
        static const Base base = {get_api, version};
        const Base* OrtGetApiBase(void) { return &base; }
    """)
    )
    library = tmp_path / "libonnxruntime.so.1.20.0"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    result = _run_python(LOAD, {_runtime.LIBRARY_ENV: str(library)})
    assert "RuntimeLoadError" in result.stderr
    assert "ONNX Runtime 1.20.0" in result.stderr and "C API version 21" in result.stderr
    assert "onnxruntime>=1.21" in result.stderr


def test_batches_respect_count_token_budget_and_length_drops(encoder_dir):
    """Batches (slices of the longest-first order): never more than batch_size texts or the token
    budget, and a batch that is big enough ends where the texts get much shorter."""
    model = TextEmbedding(encoder_dir.path, max_batch_tokens=200)
    lengths = np.array([100, 60, 50, 50, 50, 10, 9, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 8, 8, 3])
    batches = [(b.start, b.stop) for b in token_batches(lengths, 8, model.token_budget(8))]
    # (0, 2): 100 and 60, padded to 100, fill the 200-token budget.
    # (2, 5): three 50s; the 10 that follows is below 0.9 x 50 and the batch already holds 150 tokens.
    # (5, 13): 8 texts of <= 10 (the count cap); the 8s stay in because the batch is still small.
    # (13, 20): the rest.
    assert batches == [(0, 2), (2, 5), (5, 13), (13, 20)]


def test_wide_texts_get_a_budget_shrunk_by_their_width(encoder_dir):
    """Past the attention width (the engine's on the CPU: ATTENTION_WIDTH) a batch's budget shrinks in
    proportion to its width, so its attention scores (texts x width^2 per head) stay within
    budget x ATTENTION_WIDTH cells."""
    assert TextEmbedding(encoder_dir.path).attention_width == engine_tokens.ATTENTION_WIDTH == 64
    lengths = np.array([300] + [256] * 3 + [128] * 8 + [64] * 20)
    plain = [(b.start, b.stop) for b in token_batches(lengths, 32, 1024)]
    assert plain[:3] == [(0, 1), (1, 4), (4, 12)]  # no width rule: three 256-token texts in one batch
    batches = [(b.start, b.stop) for b in token_batches(lengths, 32, 1024, 64)]
    # 300 and 256: 1,024 x 64 / 256^2 = 1 text a batch; 128: 4; 64: the plain token budget, 16.
    assert batches == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 8), (8, 12), (12, 28), (28, 32)]
    for start, stop in batches:
        assert (stop - start) * int(lengths[start]) ** 2 <= max(1024 * 64, int(lengths[start]) ** 2)


def test_parallel_runs_match_sequential_and_start_lazily(encoder_dir):
    texts = [" ".join(["fox"] * n) for n in range(1, 40)]
    sequential = TextEmbedding(encoder_dir.path, parallel_runs=1)
    parallel = TextEmbedding(encoder_dir.path, threads=2, parallel_runs=2)
    parallel.embed(["hello world"])  # one batch: the main session, no second one yet
    assert parallel._bulk_session is None
    np.testing.assert_array_equal(parallel.embed(texts, batch_size=4), sequential.embed(texts, batch_size=4))
    assert parallel._bulk_session is not None
    # The same batches ran, split over two sessions; stats() adds both up.
    assert parallel.stats()["runs"] == 1 + sequential.stats()["runs"]


def test_errors_in_parallel_runs_reach_the_caller(tmp_path):
    tiny = write_model_dir(tmp_path / "m", vocab_rows=8, vocab_size=8)
    model = TextEmbedding(tiny.path, threads=2, parallel_runs=2)
    texts = ["hello"] * 10 + ["lazy dog"] + ["world"] * 10
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        model.embed(texts, batch_size=2)
    assert model.embed(["hello world"] * 5, batch_size=2).shape == (5, 7)


@pytest.mark.parametrize("argument", ["threads", "parallel_runs", "max_batch_tokens"])
@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_bad_thread_and_budget_arguments(encoder_dir, argument, value):
    with pytest.raises(ValueError, match=f"{argument} must be a positive int"):
        TextEmbedding(encoder_dir.path, **{argument: value})
