"""Execution providers by name: translation of options, errors for providers this ORT lacks.

This machine's ORT has neither CoreML nor CUDA, so the translation and the error paths are tested
here, and the append calls they feed are the ones ORT documents for those providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastembed_native import ProviderNotAvailableError, TextEmbedding, available_providers
from fastembed_native.engine.providers import coreml_options, cuda_options, resolve_providers

ALL = ["CUDAExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"]


def test_default_is_cpu():
    assert resolve_providers(None, ["CPUExecutionProvider"]) == [("CPUExecutionProvider", {})]


def test_names_and_priority_order():
    resolved = resolve_providers(["coreml", ("cuda", {"device_id": 1}), "CPUExecutionProvider"], ALL)
    assert resolved == [
        ("CoreMLExecutionProvider", {}),
        ("CUDAExecutionProvider", {"device_id": "1"}),
        ("CPUExecutionProvider", {}),
    ]


def test_coreml_options_translate_to_ort_keys(tmp_path):
    assert coreml_options(
        {
            "compute_units": "CPUAndNeuralEngine",
            "model_format": "MLProgram",
            "static_input_shapes": True,
            "cache_dir": tmp_path,
        }
    ) == {
        "MLComputeUnits": "CPUAndNeuralEngine",
        "ModelFormat": "MLProgram",
        "RequireStaticInputShapes": "1",
        "ModelCacheDirectory": str(tmp_path),
    }


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"compute_units": "GPU"}, ValueError, "compute_units.*ALL, CPUOnly, CPUAndGPU, CPUAndNeuralEngine"),
        ({"model_format": "mlpackage"}, ValueError, "model_format"),
        ({"static_input_shapes": "yes"}, TypeError, "must be a bool"),
        ({"flags": 3}, ValueError, "unknown CoreML option 'flags'"),
    ],
)
def test_bad_coreml_options(options, error, message):
    with pytest.raises(error, match=message):
        coreml_options(options)


@pytest.mark.parametrize("device_id", [-1, "0", 1.5, True])
def test_bad_cuda_device(device_id):
    with pytest.raises(ValueError, match="device_id"):
        cuda_options({"device_id": device_id})


def test_a_missing_provider_with_nothing_after_it_names_its_package():
    with pytest.raises(
        ProviderNotAvailableError,
        match=r"'cuda' \(CUDAExecutionProvider\).*available: CPUExecutionProvider.*onnxruntime-gpu",
    ):
        resolve_providers(["cuda"], ["CPUExecutionProvider"])
    with pytest.raises(ProviderNotAvailableError, match=r"CoreMLExecutionProvider.*macOS on Apple silicon"):
        resolve_providers("coreml", ["CPUExecutionProvider"])
    # After an available provider is still "nothing after it": the user asked for CUDA last.
    with pytest.raises(ProviderNotAvailableError, match="onnxruntime-gpu"):
        resolve_providers(["cpu", "cuda"], ["CPUExecutionProvider"])


def test_a_priority_list_falls_back_with_a_warning():
    with pytest.warns(RuntimeWarning, match=r"CUDAExecutionProvider.*onnxruntime-gpu.*falling back to 'cpu'"):
        resolved = resolve_providers(["cuda", "cpu"], ["CPUExecutionProvider"])
    assert resolved == [("CPUExecutionProvider", {})]


def test_every_skipped_provider_is_reported():
    with pytest.warns(RuntimeWarning) as record:
        resolved = resolve_providers(["cuda", "coreml", "cpu"], ["CPUExecutionProvider"])
    assert resolved == [("CPUExecutionProvider", {})]
    assert [str(w.message).split(" (")[0] for w in record] == [
        "execution provider 'cuda'",
        "execution provider 'coreml'",
    ]


def test_no_warning_when_the_first_choice_is_there():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_providers(["cuda", "cpu"], ALL) == [
            ("CUDAExecutionProvider", {}),
            ("CPUExecutionProvider", {}),
        ]


def test_fallback_turns_the_last_missing_provider_into_cpu():
    with pytest.warns(RuntimeWarning, match="CoreMLExecutionProvider.*falling back to 'cpu'"):
        resolved = resolve_providers(["coreml"], ["CPUExecutionProvider"], fallback=True)
    assert resolved == [("CPUExecutionProvider", {})]


def test_malformed_specs():
    with pytest.raises(TypeError, match="a provider must be"):
        resolve_providers([("cuda",)], ALL)
    with pytest.raises(ValueError, match="listed twice"):
        resolve_providers(["cuda", "CUDAExecutionProvider"], ALL)
    with pytest.raises(ValueError, match="CPU provider takes no options"):
        resolve_providers([("cpu", {"threads": 2})], ALL)


def test_model_reports_active_providers(encoder_dir):
    model = TextEmbedding(encoder_dir.path, providers="cpu")
    assert model.providers == ["CPUExecutionProvider"]
    assert model.embed(["hello"]).shape == (1, 7)


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="this ORT build has CUDA")
def test_model_with_missing_provider_raises_or_falls_back(encoder_dir):
    with pytest.raises(ProviderNotAvailableError, match="onnxruntime-gpu"):
        TextEmbedding(encoder_dir.path, providers=["cuda"])
    with pytest.warns(RuntimeWarning, match="falling back to 'cpu'"):
        model = TextEmbedding(encoder_dir.path, providers=["cuda", "cpu"])
    assert model.providers == ["CPUExecutionProvider"]
    assert np.isfinite(model.embed(["hello world"])).all()


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="this ORT build has CUDA")
def test_cli_providers_cuda_cpu_falls_back(encoder_dir, tmp_path):
    import subprocess
    import sys

    def embed(providers: str, out: Path) -> subprocess.CompletedProcess[str]:
        command = ["embed", "--model", str(encoder_dir.path), "--providers", providers, "-o", str(out)]
        return subprocess.run(
            [sys.executable, "-m", "fastembed_native.cli", *command],
            input="hello world\n",
            capture_output=True,
            text=True,
            timeout=120,
        )

    result = embed("cuda,cpu", tmp_path / "fallback.npy")
    assert result.returncode == 0, result.stderr
    assert "CUDAExecutionProvider" in result.stderr and "falling back to 'cpu'" in result.stderr
    assert np.load(tmp_path / "fallback.npy").shape == (1, 7)
    result = embed("cuda", tmp_path / "never.npy")
    assert result.returncode != 0 and "onnxruntime-gpu" in result.stderr
