"""Execution providers by name: what users write ("cpu", "cuda", ("coreml", {...})) translated to
ONNX Runtime's provider names and option keys, checked against what the loaded ORT build offers."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ProviderNotAvailableError

#: A provider as a user names it: "cpu", "cuda", "coreml", ORT's full name, or (name, options).
ProviderSpec = str | tuple[str, Mapping[str, Any]]

_ORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}

# CoreML's options in ORT's provider-option keys (SessionOptionsAppendExecutionProvider "CoreML").
_COREML_COMPUTE_UNITS = ("ALL", "CPUOnly", "CPUAndGPU", "CPUAndNeuralEngine")
_COREML_MODEL_FORMATS = ("MLProgram", "NeuralNetwork")


def _bool_flag(name: str, value: Any) -> str:
    if not isinstance(value, bool):
        raise TypeError(f"option {name!r} must be a bool, not {type(value).__name__}")
    return "1" if value else "0"


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"option {name!r} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def coreml_options(options: Mapping[str, Any]) -> dict[str, str]:
    """Translate CoreML options to ORT's keys.

    Accepted: ``compute_units`` (ALL, CPUOnly, CPUAndGPU, CPUAndNeuralEngine), ``model_format``
    (MLProgram, NeuralNetwork), ``static_input_shapes`` (bool), ``cache_dir`` (a folder where
    CoreML keeps compiled models between runs).
    """
    translated: dict[str, str] = {}
    for key, value in options.items():
        if key == "compute_units":
            translated["MLComputeUnits"] = _choice(key, value, _COREML_COMPUTE_UNITS)
        elif key == "model_format":
            translated["ModelFormat"] = _choice(key, value, _COREML_MODEL_FORMATS)
        elif key == "static_input_shapes":
            translated["RequireStaticInputShapes"] = _bool_flag(key, value)
        elif key == "cache_dir":
            translated["ModelCacheDirectory"] = str(value)
        else:
            raise ValueError(
                f"unknown CoreML option {key!r}; expected compute_units, model_format, "
                "static_input_shapes or cache_dir"
            )
    return translated


def cuda_options(options: Mapping[str, Any]) -> dict[str, str]:
    """Translate CUDA options to ORT's keys: ``device_id`` (int >= 0)."""
    translated: dict[str, str] = {}
    for key, value in options.items():
        if key == "device_id":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"option 'device_id' must be an int >= 0; got {value!r}")
            translated["device_id"] = str(value)
        else:
            raise ValueError(f"unknown CUDA option {key!r}; expected device_id")
    return translated


_TRANSLATORS = {
    "CoreMLExecutionProvider": coreml_options,
    "CUDAExecutionProvider": cuda_options,
}


def _split(spec: ProviderSpec) -> tuple[str, Mapping[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], str)
        and isinstance(spec[1], Mapping)
    ):
        return spec[0], spec[1]
    raise TypeError(f"a provider must be a name such as 'cpu' or a (name, options) tuple, not {spec!r}")


def ort_provider_name(name: str) -> str:
    """'cuda' -> 'CUDAExecutionProvider'; ORT's own names pass through unchanged."""
    return _ORT_NAMES.get(name.lower(), name)


#: Where each optional provider comes from, for the error when it is missing.
_PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "the onnxruntime-gpu package (pip uninstall onnxruntime && pip install onnxruntime-gpu)",
    "CoreMLExecutionProvider": "the onnxruntime wheel for macOS on Apple silicon (arm64), where pip install onnxruntime "
    "gets it",
}


def _missing_message(name: str, ort_name: str, available: Sequence[str]) -> str:
    source = _PROVIDER_PACKAGES.get(ort_name, "an ONNX Runtime build that includes it")
    return (
        f"execution provider {name!r} ({ort_name}) is not available in this ONNX Runtime build "
        f"(available: {', '.join(available)}); it comes with {source}"
    )


def resolve_providers(
    requested: ProviderSpec | Iterable[ProviderSpec] | None,
    available: Sequence[str],
    fallback: bool = False,
) -> list[tuple[str, dict[str, str]]]:
    """Turn the user's providers into ORT's (name, options) list, in priority order.

    A list is a priority list: a provider this ORT build lacks is skipped with a RuntimeWarning
    when a provider after it is available (``["cuda", "cpu"]`` runs on the CPU where there is no
    CUDA), and is an error when nothing after it is.

    Args:
        requested: one spec or a list of them; None means CPU only.
        available: ORT's available providers (``_core.available_providers()``).
        fallback: when True, a missing provider with nothing after it falls back to the CPU (with a
            warning) instead of raising.

    Raises:
        ProviderNotAvailableError: a missing provider with no available one after it (and not
            ``fallback``); the message lists the available ones and names the package that provides it.
    """
    if requested is None:
        requested = ["cpu"]
    elif isinstance(requested, (str, tuple)):
        requested = [requested]
    resolved: list[tuple[str, dict[str, str]]] = []
    listed: set[str] = set()
    pending: list[str] = []  # missing providers that no available provider follows yet
    for spec in requested:
        name, options = _split(spec)
        ort_name = ort_provider_name(name)
        translate = _TRANSLATORS.get(ort_name)
        if translate is not None:
            translated = translate(options)
        elif options:
            if ort_name == "CPUExecutionProvider":
                raise ValueError("the CPU provider takes no options (threads are TextEmbedding arguments)")
            translated = {str(k): str(v) for k, v in options.items()}
        else:
            translated = {}
        if ort_name in listed:
            raise ValueError(f"execution provider {name!r} is listed twice")
        listed.add(ort_name)
        if ort_name not in available:
            pending.append(_missing_message(name, ort_name, available))
            continue
        for message in pending:
            warnings.warn(f"{message}; falling back to {name!r}", RuntimeWarning, stacklevel=3)
        pending.clear()
        resolved.append((ort_name, translated))
    if pending:
        if not fallback:
            raise ProviderNotAvailableError("; ".join(pending))
        for message in pending:
            warnings.warn(f"{message}; falling back to 'cpu'", RuntimeWarning, stacklevel=3)
        if ("CPUExecutionProvider", {}) not in resolved:
            resolved.append(("CPUExecutionProvider", {}))
    return resolved
