"""fastembed_native: text embeddings through a C++ core on ONNX Runtime's C API.

>>> from fastembed_native import TextEmbedding
>>> model = TextEmbedding("path/to/all-MiniLM-L6-v2")
>>> model.embed(["hello world"]).shape
(1, 384)
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastembed_native's compiled extension (fastembed_native._core) is missing or failed to load: "
        f"{exc}. Reinstall with `pip install fastembed-native`, or for a source checkout "
        "`pip install --no-build-isolation -e .` (see README)."
    ) from exc

from .bge_m3 import BGEM3
from .cross_encoder import TextCrossEncoder
from .engine import runtime_info
from .errors import (
    FastembedNativeError,
    ModelLoadError,
    OrtError,
    ProviderNotAvailableError,
    RuntimeLoadError,
)
from .late_interaction import LateInteractionTextEmbedding
from .sparse_text_embedding import SparseEmbedding, SparseTextEmbedding
from .text_embedding import TextEmbedding

__version__ = "0.1.0"

__all__ = [
    "BGEM3",
    "FastembedNativeError",
    "LateInteractionTextEmbedding",
    "ModelLoadError",
    "OrtError",
    "ProviderNotAvailableError",
    "RuntimeLoadError",
    "SparseEmbedding",
    "SparseTextEmbedding",
    "TextCrossEncoder",
    "TextEmbedding",
    "__version__",
    "available_providers",
    "runtime_info",
]


def available_providers() -> list[str]:
    """Execution providers the loaded ONNX Runtime offers, e.g. ``['CPUExecutionProvider']``."""
    from .engine import ensure_loaded

    ensure_loaded()
    return list(_core.available_providers())
