"""TextEmbedding, the public entry point: a model id, a directory or None in, embeddings out.

It resolves the model through the model store (the cache, the default model's first-use build)
and hands the directory to the engine's :class:`~fastembed_native.engine.Embedder`, adding what
only the registry knows (e.g. e5's "query: " / "passage: " prompts).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .engine import Embedder, check_positive
from .engine.stream import STREAM_WINDOW, Progress, embed_stream
from .models import DEFAULT_MODEL, SUPPORTED_MODELS, model_info, resolve_model
from .models.cache import quantized_file

__all__ = ["TextEmbedding", "quantized_file"]


class TextEmbedding(Embedder):
    """An embedding model, ready to embed texts.

    Args:
        model: a model directory (sentence-transformers layout, with ``onnx/model.onnx`` or
            ``model.onnx`` and ``tokenizer.json``), a model id ("org/name") or registry short name
            ("all-MiniLM-L6-v2"), or None for the default model (sentence-transformers/all-MiniLM-L6-v2,
            built on first use).
        model_name: the same as ``model``, under the name fastembed users know
            (``TextEmbedding(model_name="BAAI/bge-small-en-v1.5")``); give one of the two, not both.
        cache_dir: the model cache to look in and build into (default ``$FASTEMBED_NATIVE_CACHE``,
            else the user cache folder).
        specific_model_path: a local model directory to load whatever ``model`` says (fastembed's
            way of pointing at files on disk; ``model`` then only picks registry facts such as prompts).
        cuda: run on CUDA (fastembed's flag): the same as ``providers=[("cuda", {"device_id": ...})]``.
        device_id, device_ids: the GPU for ``cuda`` (one device per TextEmbedding).
        quantized: load the model's int8 file (``onnx/model_int8.onnx``, written by
            ``fastembed-native quantize`` or ``export --dtype int8``; its recipe and measured
            quality are in ``onnx/model_int8.json``, which ``inspect`` prints) instead of fp32.
        **options: the engine's options (providers, fallback, max_length, pooling, normalize,
            padding_side, onnx_file, fused, batch_size, max_batch_tokens, threads, parallel_runs,
            graph_optimization_level, prompts, include_prompt, lazy_load): see
            :class:`fastembed_native.engine.Embedder`.

    Raises:
        TypeError: an option this class does not take (the message lists those it does).
        FileNotFoundError, ModelLoadError: the model cannot be found or built (the message says
            where it looked), or ``quantized`` and it has no int8 file (the message says how to make it).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        model_name: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        specific_model_path: str | os.PathLike[str] | None = None,
        cuda: bool = False,
        device_id: int | None = None,
        device_ids: Sequence[int] | None = None,
        quantized: bool = False,
        **options: Any,
    ) -> None:
        _check_options(options)
        if model is not None and model_name is not None:
            raise TypeError(
                f"give the model as model= or model_name=, not both (got {str(model)!r} and {str(model_name)!r})"
            )
        model = model if model is not None else model_name
        if cuda or device_id is not None or device_ids is not None:
            options["providers"] = _cuda_providers(cuda, device_id, device_ids, options.get("providers"))
        info = model_info(str(model) if model is not None else DEFAULT_MODEL)
        registry_prompts = {"query": info.query_prompt, "passage": info.passage_prompt} if info else {}
        options["prompts"] = {**registry_prompts, **(options.get("prompts") or {})}
        if specific_model_path is not None:
            model_dir = resolve_model(os.fspath(specific_model_path), cache=cache_dir)
        else:
            model_dir = resolve_model(model, cache=cache_dir)
        if quantized:
            options["onnx_file"] = quantized_file(model_dir, options.get("onnx_file"))
        super().__init__(model_dir, **options)

    @staticmethod
    def get_embedding_size(model_name: str) -> int:
        """The width of a registry model's embeddings, without loading it (fastembed's classmethod).

        Raises:
            ValueError: the model is not in the registry (load it and read :attr:`dim` instead).
        """
        info = model_info(model_name)
        if info is None:
            raise ValueError(
                f"{model_name!r} is not in the registry (fastembed-native models lists it); "
                "load it and read .dim instead"
            )
        return info.dim

    def embed_iter(
        self,
        texts: Iterable[str],
        chunk: int = STREAM_WINDOW,
        batch_size: int | None = None,
        *,
        prompt: str = "",
        dimensions: int | None = None,
        progress: Progress | None = None,
    ) -> Iterator[np.ndarray]:
        """Embed an iterable of any length (a generator, a file's lines) without holding it all.

        Texts are read ``chunk`` at a time; each chunk is embedded exactly as :meth:`embed` would
        embed it (same length-sorted batches, same vectors) and yielded before the next is read,
        so memory holds one chunk of texts and vectors, never the whole input.

        Args:
            texts: strings, consumed lazily.
            chunk: texts per yielded array (default 16,384: four of embed()'s sort windows).
            batch_size: texts per ONNX Runtime call; default ``self.batch_size``.
            prompt: text prepended to every input (e.g. ``self.prompts["query"]``).
            dimensions: keep the first ``dimensions`` values (Matryoshka), as in :meth:`embed`.
            progress: called with a count of texts each time a few more batches are done.

        Yields:
            float32 arrays of shape ``(n, dimensions or dim)`` with ``n <= chunk``, in input order;
            concatenated, they equal ``embed(list(texts), ...)``.

        Raises:
            TypeError: an item is not a string (the message gives its index in the whole input).
            ValueError: ``chunk``/``batch_size`` not a positive int, or a text not encodable.
        """
        check_positive(chunk, "chunk")
        return embed_stream(
            self,
            texts,
            window=chunk,
            batch_size=batch_size,
            prompt=prompt,
            dimensions=dimensions,
            progress=progress,
        )

    @staticmethod
    def list_supported_models() -> list[dict[str, Any]]:
        """The models this package knows (dimension, pooling, prompts, ...), as dicts like fastembed's.

        Any other model with a sentence-transformers layout works too, from its own config files.
        """
        return [asdict(info) for info in SUPPORTED_MODELS]


#: The engine's keyword options, which TextEmbedding passes on.
_ENGINE_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(Embedder.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "task"  # a TextEmbedding embeds
)


def _check_options(options: dict[str, Any]) -> None:
    """Refuse an unknown option here, naming this class and what it takes (not the engine's)."""
    unknown = sorted(set(options) - set(_ENGINE_OPTIONS))
    if unknown:
        known = (
            "model",
            "model_name",
            "cache_dir",
            "specific_model_path",
            "cuda",
            "device_id",
            "device_ids",
            "quantized",
        )
        raise TypeError(
            f"TextEmbedding() got an unexpected keyword argument {unknown[0]!r}; "
            f"it takes: {', '.join(known + _ENGINE_OPTIONS)}"
        )


def _cuda_providers(
    cuda: bool, device_id: int | None, device_ids: Sequence[int] | None, providers: Any
) -> list[Any]:
    """fastembed's ``cuda`` / ``device_id(s)`` as this engine's provider list."""
    if providers is not None:
        raise ValueError("give cuda=/device_id= or providers=, not both")
    if not cuda:
        raise ValueError("device_id / device_ids choose a GPU for cuda=True; pass cuda=True too")
    if device_ids is not None:
        ids = list(device_ids)
        if len(ids) != 1 or (device_id is not None and device_id != ids[0]):
            raise ValueError(
                f"device_ids={ids}: one device per TextEmbedding here (fastembed spreads worker "
                "processes over several); make one TextEmbedding per device, or serve one model per "
                "device with `fastembed-native serve`"
            )
        device_id = ids[0]
    return [("cuda", {"device_id": 0 if device_id is None else device_id})]
