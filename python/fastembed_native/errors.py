"""Exceptions raised by fastembed_native.

Errors reported by ONNX Runtime keep ORT's error code (``code``, ``code_name``) and also derive
from the built-in exception a caller would naturally catch: a missing file is a
``FileNotFoundError``, an invalid model or argument a ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "FastembedNativeError",
    "ModelLoadError",
    "OrtError",
    "OrtInvalidArgument",
    "OrtInvalidModel",
    "OrtNoSuchFile",
    "OrtNotImplemented",
    "ProviderNotAvailableError",
    "RuntimeLoadError",
    "ort_error",
]


class FastembedNativeError(Exception):
    """Base class of every exception this package defines."""


class RuntimeLoadError(FastembedNativeError, RuntimeError):
    """ONNX Runtime's shared library is missing, unloadable, or older than the extension's headers."""


class ModelLoadError(FastembedNativeError, RuntimeError):
    """A model (or the default model) could not be found, built or cached."""


class ProviderNotAvailableError(FastembedNativeError, ValueError):
    """An execution provider was asked for that this ONNX Runtime build does not have."""


class OrtError(FastembedNativeError, RuntimeError):
    """An error reported by ONNX Runtime.

    Attributes:
        code: ORT's ``OrtErrorCode`` as an int.
        code_name: its name, e.g. ``"ORT_INVALID_ARGUMENT"``.
    """

    def __init__(self, message: str, code: int = 1, code_name: str = "ORT_FAIL") -> None:
        super().__init__(f"[{code_name}] {message}")
        self.code = code
        self.code_name = code_name


class OrtInvalidArgument(OrtError, ValueError):
    """ORT_INVALID_ARGUMENT: ORT rejected an input (shape, type or value)."""


class OrtNoSuchFile(OrtError, FileNotFoundError):
    """ORT_NO_SUCHFILE: the model file does not exist."""


class OrtInvalidModel(OrtError, ValueError):
    """ORT_INVALID_PROTOBUF / ORT_INVALID_GRAPH / ORT_NO_MODEL: the file is not a usable ONNX model."""


class OrtNotImplemented(OrtError, NotImplementedError):
    """ORT_NOT_IMPLEMENTED: the model uses an operator or type this ORT build lacks."""


_BY_CODE_NAME: dict[str, type[OrtError]] = {
    "ORT_INVALID_ARGUMENT": OrtInvalidArgument,
    "ORT_NO_SUCHFILE": OrtNoSuchFile,
    "ORT_INVALID_PROTOBUF": OrtInvalidModel,
    "ORT_INVALID_GRAPH": OrtInvalidModel,
    "ORT_NO_MODEL": OrtInvalidModel,
    "ORT_NOT_IMPLEMENTED": OrtNotImplemented,
}


def ort_error(code: int, code_name: str, message: str) -> OrtError:
    """Build the exception for an ORT error (called by the compiled module's error translator)."""
    return _BY_CODE_NAME.get(code_name, OrtError)(message, code, code_name)
