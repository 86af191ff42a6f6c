"""The command line (each command as a subprocess), the default model and the model cache."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import source_checkout
from tokenizers import Tokenizer

from fastembed_native import TextEmbedding
from fastembed_native.models import DEFAULT_MODEL, cached_model_dir, cosine_rows, inspect_model

CLI = [sys.executable, "-m", "fastembed_native.cli"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: int = 300):
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **OFFLINE, **(env or {})},
    )


# The embed command's tests are in test_cli_embed.py.


# -- inspect ----------------------------------------------------------------------------------------
def test_inspect_tiny_model(encoder_dir):
    result = run_cli("inspect", str(encoder_dir.path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["outputs"][0] == {
        "name": "last_hidden_state",
        "type": "float32",
        "shape": ["batch", "sequence", 7],
    }
    assert report["vocab_size"] == 16 and report["hidden_size"] == 7 and report["opset"] == {"ai.onnx": 17}
    assert report["pooling"] == "mean" and report["normalize"] is True
    assert "CPUExecutionProvider" in report["available_providers"]
    if sys.platform != "darwin":  # Core ML cannot exist here: nothing about it
        assert not any("CoreML" in w for w in report["warnings"]), report["warnings"]


def test_coreml_warnings_only_where_coreml_can_run(encoder_dir, monkeypatch):
    from fastembed_native.models import inspect as inspect_module

    assert inspect_module.coreml_possible(["CPUExecutionProvider"]) == (sys.platform == "darwin")
    assert inspect_module.coreml_possible(["CoreMLExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(sys, "platform", "darwin")
    assert inspect_module.coreml_possible(["CPUExecutionProvider"])
    monkeypatch.setattr(sys, "platform", "linux")
    assert not any("CoreML" in w for w in inspect_model(encoder_dir.path)["warnings"])
    monkeypatch.setattr(inspect_module, "coreml_possible", lambda providers: True)
    assert any("dynamic input shapes" in w for w in inspect_model(encoder_dir.path)["warnings"])


def test_inspect_counts_external_data_and_sees_a_lowercasing_tokenizer(tmp_path):
    import onnx
    from conftest import write_model_dir
    from tokenizers import normalizers

    tiny = write_model_dir(tmp_path / "m", vocab_rows=80_000)  # a 2.1 MB embedding table
    graph = tiny.path / "onnx" / "model.onnx"
    onnx.save(onnx.load(str(graph)), str(graph), save_as_external_data=True, location="model.onnx_data")
    total = graph.stat().st_size + (graph.parent / "model.onnx_data").stat().st_size
    assert graph.stat().st_size < 10_000 < total
    report = inspect_model(tiny.path)
    assert report["size_mb"] == round(total / 2**20, 1) > 2.0
    assert report["external_data"] == ["model.onnx_data (2.1 MB total)"]
    assert report["lowercase"] is False
    tokenizer = Tokenizer.from_file(str(tiny.path / "tokenizer.json"))
    for normalizer in (
        normalizers.BertNormalizer(lowercase=True),
        normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()]),
    ):
        tokenizer.normalizer = normalizer
        tokenizer.save(str(tiny.path / "tokenizer.json"))
        assert inspect_model(tiny.path)["lowercase"] is True, normalizer
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.save(str(tiny.path / "tokenizer.json"))
    assert inspect_model(tiny.path)["lowercase"] is False
    # sentence-transformers' own switch, with a tokenizer that keeps case.
    (tiny.path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 16, "do_lower_case": True})
    )
    assert inspect_model(tiny.path)["lowercase"] is True


# -- what a missing extra or a wrong file gets: one line naming the fix, exit status 2 ---------------
WITHOUT = "import sys\nsys.modules[sys.argv.pop(1)] = None  # as if not installed\nfrom fastembed_native.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def run_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a process where ``module`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, module, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **OFFLINE},
    )


def one_line_usage_error(result: subprocess.CompletedProcess[str], *phrases: str) -> bool:
    lines = result.stderr.strip().splitlines()
    return result.returncode == 2 and len(lines) == 1 and all(p in lines[0] for p in phrases)


def test_a_missing_extra_or_a_file_that_is_not_a_model_is_one_line(encoder_dir, tmp_path):
    result = run_without("uvicorn", "serve", "--model", str(encoder_dir.path), "--port", "0")
    assert one_line_usage_error(result, "serve: error:", "pip install 'fastembed-native[serve]'"), (
        result.stderr
    )
    result = run_without("onnx", "quantize", str(encoder_dir.path))
    assert one_line_usage_error(result, "quantize", "onnx", "pip install"), result.stderr
    assert not (encoder_dir.path / "onnx" / "model_int8.onnx").exists()
    result = run_without("onnx", "inspect", str(encoder_dir.path))
    assert one_line_usage_error(result, "inspect", "onnx", "pip install"), result.stderr
    result = run_without(
        "pyarrow", "embed", "--model", str(encoder_dir.path), "-o", str(tmp_path / "v.parquet")
    )
    assert one_line_usage_error(result, "v.parquet needs pyarrow: pip install 'fastembed-native[corpus]'")
    result = run_cli("inspect", sys.executable)  # a program, not a model
    assert one_line_usage_error(result, f"{sys.executable} is not an ONNX model", "pass a model directory")


def test_inspect_warns_about_a_tokenizer_larger_than_the_model(tmp_path):
    from conftest import write_model_dir

    tiny = write_model_dir(tmp_path / "m", vocab_rows=8, vocab_size=8)
    report = json.loads(run_cli("inspect", str(tiny.path), "--json").stdout)
    assert any(
        "tokenizer has 16 tokens but the model's embedding table has 8 rows" in w for w in report["warnings"]
    )


@pytest.mark.real_model
def test_inspect_real_model(minilm_dir):
    result = run_cli("inspect", str(minilm_dir))
    assert result.returncode == 0, result.stderr
    assert (
        "vocab_size: 30522" in result.stdout
        and "hidden_size: 384" in result.stdout
        and "layers: 6" in result.stdout
    )
    # The 30522x384 table is over Core ML's limit: said only where Core ML could run.
    assert ("CoreML cannot take a dimension above 16384" in result.stdout) == (sys.platform == "darwin")
    assert re.search(r"^size_mb: (8[0-9]|9[0-9])\.\d$", result.stdout, re.MULTILINE), result.stdout


# -- export, models, bench --------------------------------------------------------------------------
@pytest.mark.real_model
def test_export_command(tmp_path):
    out = tmp_path / "exported"
    result = run_cli("export", str(source_checkout()), str(out))
    assert result.returncode == 0, result.stderr
    assert "parity min cosine" in result.stdout
    assert (out / "onnx" / "model.onnx").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert (out / "onnx" / "model_fused.onnx").is_file()
    again = run_cli("export", str(source_checkout()), str(out))
    assert again.returncode == 1 and "exists already" in again.stderr


def test_fuse_command_on_a_model_it_cannot_fuse(encoder_dir):
    result = run_cli("fuse", str(encoder_dir.path))
    assert result.returncode == 0 and "nothing fused" in result.stdout
    assert not (encoder_dir.path / "onnx" / "model_fused.onnx").exists()


def test_models_command():
    result = run_cli("models")
    assert result.returncode == 0
    for name in ("all-MiniLM-L6-v2", "bge-small-en-v1.5", "e5-small-v2", "gte-small", "Qwen3-Embedding-0.6B"):
        assert name in result.stdout


@pytest.mark.real_model
def test_bench_command_small_run(minilm_dir, tmp_path):
    result = run_cli(
        "bench",
        "--model",
        str(minilm_dir),
        "--contenders",
        "naive_ort,careful_ort,fastembed_native",
        "--corpus-size",
        "40",
        "--batch-sizes",
        "8",
        "--repeats",
        "1",
        "--latency-calls",
        "5",
        "--no-memory",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["contenders"]) == {"naive_ort", "careful_ort", "fastembed_native"}
    for contender in results["contenders"].values():
        assert contender["min_cosine_vs_reference"] >= 0.9999
    assert (tmp_path / "results.png").stat().st_size > 0 and "| fastembed_native |" in (
        tmp_path / "results.md"
    ).read_text()


# -- the default model and the cache ------------------------------------------------------------------
def test_supported_models_registry():
    models = {m["model"]: m for m in TextEmbedding.list_supported_models()}
    assert models[DEFAULT_MODEL]["dim"] == 384 and models[DEFAULT_MODEL]["pooling"] == "mean"
    assert models["BAAI/bge-small-en-v1.5"]["pooling"] == "cls"
    assert models["intfloat/e5-small-v2"]["query_prompt"] == "query: "
    qwen = models["Qwen/Qwen3-Embedding-0.6B"]
    assert (qwen["pooling"], qwen["padding_side"]) == ("last_token", "left") and qwen["query_prompt"]


def test_prompts(encoder_dir):
    model = TextEmbedding(encoder_dir.path)
    model.prompts["query"] = "flag "
    np.testing.assert_allclose(model.embed_query(["dog"]), model.embed(["flag dog"]), rtol=1e-6)
    np.testing.assert_allclose(model.embed(["dog"], prompt="fox "), model.embed(["fox dog"]), rtol=1e-6)
    np.testing.assert_allclose(model.embed_passage(["dog"]), model.embed(["dog"]), rtol=1e-6)


@pytest.mark.real_model
def test_default_model_end_to_end_offline(minilm_dir, model_cache, sentence_transformer):
    code = "from fastembed_native import TextEmbedding; import numpy as np; m = TextEmbedding(); np.save('v.npy', m.embed(['hello world', 'offline']))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=minilm_dir.parent,
        env={**os.environ, **OFFLINE, "FASTEMBED_NATIVE_CACHE": str(model_cache)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    vectors = np.load(minilm_dir.parent / "v.npy")
    assert cosine_rows(vectors, sentence_transformer.encode(["hello world", "offline"])).min() >= 0.9999


def test_model_id_offline_fails_at_once(tmp_path):
    """No hub here: a model id that is not cached fails quickly with a message saying why."""
    start = time.monotonic()
    result = run_cli(
        "embed",
        "--model",
        "BAAI/bge-small-en-v1.5",
        stdin="x\n",
        env={"FASTEMBED_NATIVE_CACHE": str(tmp_path)},
    )
    assert result.returncode == 1
    assert (
        "cannot download 'BAAI/bge-small-en-v1.5'" in result.stderr
        and "local model directory" in result.stderr
    )
    assert time.monotonic() - start < 60
    assert not (tmp_path / "BAAI--bge-small-en-v1.5").exists()


BUILD = "from fastembed_native.models import ensure_default_model; print(ensure_default_model())"


@pytest.mark.real_model
@pytest.mark.timeout(600)
def test_concurrent_first_use_of_an_empty_cache_builds_once(tmp_path):
    env = {**os.environ, **OFFLINE, "FASTEMBED_NATIVE_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=500) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert Path(out.strip()) == cached_model_dir(DEFAULT_MODEL, tmp_path)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert entries == ["sentence-transformers--all-MiniLM-L6-v2"]  # the lock file goes with the build


@pytest.mark.real_model
@pytest.mark.timeout(600)
def test_a_crash_mid_export_leaves_no_model_behind(tmp_path):
    env = {**os.environ, **OFFLINE, "FASTEMBED_NATIVE_CACHE": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    target = cached_model_dir(DEFAULT_MODEL, tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(f".{target.name}.*")) and time.monotonic() < deadline:  # wait for staging
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    result = subprocess.run(
        [sys.executable, "-c", BUILD], env=env, capture_output=True, text=True, timeout=500
    )
    assert result.returncode == 0, result.stderr
    assert target.is_dir() and not list(tmp_path.glob(f".{target.name}.*"))


@pytest.mark.real_model
def test_quantize_command_reports_speed_and_parity(minilm_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    result = run_cli("quantize", str(model))
    assert result.returncode == 0, result.stderr
    assert "cosine vs fp32 min" in result.stdout and "x the fp32 speed" in result.stdout
    int8 = TextEmbedding(model, quantized=True)
    fp32 = TextEmbedding(model)
    texts = ["hello world", "int8 weights move embeddings a little"]
    cos = cosine_rows(int8.embed(texts), fp32.embed(texts))
    assert 0.99 < cos.min() < 1.0  # close, and measurably not identical: never the default file
    # MatMul weights and the embedding table (47 MB of the 90) shrink 4x.
    int8_bytes = (model / "onnx" / "model_int8.onnx").stat().st_size
    fp32_bytes = sum(p.stat().st_size for p in (model / "onnx").glob("model.onnx*"))  # graph + its weights
    assert int8_bytes < 0.3 * fp32_bytes
    assert json.loads((model / "onnx" / "model_int8.json").read_text())["method"] == "rowwise"
