"""The model store: which models exist, where they live on disk, and how they are made.

It owns the registry of known models (:mod:`.registry`), the cache and model resolution
(:mod:`.cache`: local directory, our cache, the Hugging Face hub cache, packaged weights, a
download), the torch-free BERT builder (:mod:`.bert_graph`), export from any other Hugging Face
checkpoint through optimum (:mod:`.export`), the fused and int8 variants
(:mod:`.fuse`, :mod:`.quantize`), the parity check they all share (:mod:`.parity`) and ``inspect``
(:mod:`.inspect`). It may use the engine (a parity check embeds texts) but never the public API,
the server or the integrations above it. Heavy tools (torch, optimum, onnx, sentence-transformers)
are imported inside the functions that need them, so embedding never loads them.
"""

from .bert_graph import BuildReport, build_bert_model
from .cache import (
    CACHE_ENV,
    DEFAULT_MODEL_EXTRA_HINT,
    build_model,
    cache_root,
    cached_model_dir,
    default_model_source,
    download_model,
    ensure_default_model,
    hub_cache_dir,
    hub_snapshot,
    resolve_model,
    resolve_model_argument,
)
from .export import EXPORT_EXTRA_HINT, ExportReport, export_model
from .fuse import fuse_model
from .inspect import inspect_model
from .parity import PARITY_TEXTS, cosine_rows, parity_check
from .quantize import QuantizeReport, quantize_model
from .registry import (
    DEFAULT_MODEL,
    SUPPORTED_LATE_INTERACTION_MODELS,
    SUPPORTED_MODELS,
    SUPPORTED_RERANKERS,
    SUPPORTED_SPARSE_MODELS,
    LateInteractionModelInfo,
    ModelInfo,
    RerankerInfo,
    SparseModelInfo,
    canonical_model_name,
    model_info,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_EXTRA_HINT",
    "EXPORT_EXTRA_HINT",
    "PARITY_TEXTS",
    "SUPPORTED_LATE_INTERACTION_MODELS",
    "SUPPORTED_MODELS",
    "SUPPORTED_RERANKERS",
    "SUPPORTED_SPARSE_MODELS",
    "BuildReport",
    "ExportReport",
    "LateInteractionModelInfo",
    "ModelInfo",
    "QuantizeReport",
    "RerankerInfo",
    "SparseModelInfo",
    "build_bert_model",
    "build_model",
    "cache_root",
    "cached_model_dir",
    "canonical_model_name",
    "cosine_rows",
    "default_model_source",
    "download_model",
    "ensure_default_model",
    "export_model",
    "fuse_model",
    "hub_cache_dir",
    "hub_snapshot",
    "inspect_model",
    "model_info",
    "parity_check",
    "quantize_model",
    "resolve_model",
    "resolve_model_argument",
]
