"""The late-interaction benchmark's contenders: each turns (model, threads) into a :class:`Contender`,
called with documents (one float32 ``(tokens, dim)`` array of unit rows per text), with ``queries``
for queries' arrays, and ``time_queries`` for the seconds of one query at a time.

Every ONNX contender runs the model's ``onnx/model.onnx`` (the encoder with the Dense projection folded
in by ``export``). fastembed 0.9's ``LateInteractionTextEmbedding`` loads it through
:func:`fastembed_dir` under the name of the ColBERT it knows at this shape; two things in its Colbert
class are worked around there, and said so in the report: it inserts the marker into ``input_ids`` and
``attention_mask`` but not into ``token_type_ids`` (so a graph that takes token types, as a BERT export
does, fails), and it cuts documents at the tokenizer's ``model_max_length`` rather than the model's
``document_length`` (its view of the model says ``model_max_length`` = ``document_length``, so every
contender computes the same tokens). pylate runs in its own venv (:mod:`.pylate_worker`), in a child
process that times itself.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .head_models import ColbertShape, HeadModel, linked_view
from .worker_protocol import Worker, time_each

PEER_BATCH = 32
CONTENDERS = ("naive_ort", "fastembed", "fastembed_native")
#: Documents per call as each contender is used.
BATCHING = {
    "naive_ort": f"{PEER_BATCH} documents in input order",
    "fastembed": "256 documents in input order (its default)",
    "pylate": f"{PEER_BATCH} documents, length-sorted (ColBERT.encode's default)",
    "fastembed_native": "token budget, length-sorted (its default)",
}


class Contender:
    """Documents in, arrays out (``__call__``); ``queries`` for queries; ``time_queries`` times one
    query per call. In-process contenders are built from two functions."""

    def __init__(
        self,
        documents: Callable[[list[str]], list[np.ndarray]],
        queries: Callable[[list[str]], list[np.ndarray]],
    ):
        self._documents, self._queries = documents, queries

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        return self._documents(texts)

    def queries(self, texts: list[str]) -> list[np.ndarray]:
        return self._queries(texts)

    def time_queries(self, texts: list[str]) -> list[float]:
        return time_each(self._queries, texts)


def make_fastembed_native(model: HeadModel, threads: int) -> Contender:
    from ..late_interaction import LateInteractionTextEmbedding

    encoder = LateInteractionTextEmbedding(model.onnx_dir, threads=threads)
    contender = Contender(encoder.embed, encoder.query_embed)
    contender.encoder = encoder  # type: ignore[attr-defined]  (for MaxSim and the token count)
    return contender


def make_naive_ort(model: HeadModel, threads: int) -> Contender:
    """The loop a user writes with onnxruntime and tokenizers from the model's ColBERT config: texts in
    input order, batches of 32, the marker inserted after [CLS], queries padded with [MASK] to the
    query length, skiplist tokens dropped from documents, rows normalised in numpy."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from ..engine.multivector import read_colbert_config

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model.onnx_path), options, providers=["CPUExecutionProvider"])
    takes_types = any(i.name == "token_type_ids" for i in session.get_inputs())
    config = read_colbert_config(model.onnx_dir)
    tokenizer = Tokenizer.from_file(str(model.onnx_dir / "tokenizer.json"))
    tokenizer.no_padding()
    skiplist = np.array(
        [tokenizer.token_to_id(w) for w in config.skiplist_words if tokenizer.token_to_id(w) is not None]
    )
    mask_id = tokenizer.token_to_id("[MASK]")

    def encode(texts: list[str], is_query: bool) -> list[np.ndarray]:
        length = config.query_length if is_query else config.document_length
        marker = tokenizer.token_to_id(config.query_prefix if is_query else config.document_prefix)
        tokenizer.enable_truncation(length - 1)
        out: list[np.ndarray] = []
        for start in range(0, len(texts), PEER_BATCH):
            encodings = tokenizer.encode_batch([t.strip() for t in texts[start : start + PEER_BATCH]])
            sequences = [[e.ids[0], marker, *e.ids[1:]] for e in encodings]
            width = length if is_query else max(len(s) for s in sequences)
            ids = np.full((len(sequences), width), mask_id if is_query else 0, dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, s in enumerate(sequences):
                ids[r, : len(s)] = s
                mask[r, : len(s)] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if takes_types:
                feed["token_type_ids"] = np.zeros_like(ids)
            (states,) = session.run(["token_embeddings"], feed)
            keep = np.ones(ids.shape, bool) if is_query else mask.astype(bool) & ~np.isin(ids, skiplist)
            for r in range(len(sequences)):
                rows = states[r][keep[r]]
                out.append(rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12))
        return out

    return Contender(lambda t: encode(t, False), lambda t: encode(t, True))


#: The ColBERT models fastembed 0.9 knows, by projection width: (name, its ONNX file name).
FASTEMBED_MODELS = {96: ("answerdotai/answerai-colbert-small-v1", "vespa_colbert.onnx")}
FASTEMBED_DEFAULT = ("colbert-ir/colbertv2.0", "model.onnx")


def fastembed_dir(model: HeadModel) -> tuple[Path, str]:
    """The export as fastembed 0.9 loads a ColBERT (the ONNX file at the top under the known model's
    file name; ``model_max_length`` = ``document_length``): links to the export's files, made once
    beside it. Returns the folder and the model name to give fastembed."""
    assert isinstance(model.shape, ColbertShape)
    name, onnx_name = FASTEMBED_MODELS.get(model.shape.dim, FASTEMBED_DEFAULT)
    files = ("config.json", "special_tokens_map.json", "tokenizer.json", "vocab.txt")
    links = {file: model.onnx_dir / file for file in files}
    config = json.loads((model.onnx_dir / "tokenizer_config.json").read_text())
    config["model_max_length"] = model.shape.document_length
    texts = {"tokenizer_config.json": json.dumps(config, indent=2)}
    view = linked_view(
        model.onnx_dir.parent / "fastembed-view", model, {**links, onnx_name: model.onnx_path}, texts
    )
    return view, name


def make_fastembed(model: HeadModel, threads: int) -> Contender:
    """fastembed 0.9's ``LateInteractionTextEmbedding`` on :func:`fastembed_dir`, with its marker
    insertion extended to ``token_type_ids`` (a zero, as the other token types)."""
    from fastembed import LateInteractionTextEmbedding as FastembedLate

    view, name = fastembed_dir(model)
    encoder = FastembedLate(name, specific_model_path=str(view), threads=threads)
    colbert = encoder.model
    insert_marker = colbert._preprocess_onnx_input

    def preprocess(
        onnx_input: dict[str, np.ndarray], is_doc: bool = True, **kwargs: Any
    ) -> dict[str, np.ndarray]:
        if "token_type_ids" in onnx_input:
            onnx_input["token_type_ids"] = np.insert(onnx_input["token_type_ids"], 1, 0, axis=1)
        return insert_marker(onnx_input, is_doc=is_doc, **kwargs)

    colbert._preprocess_onnx_input = preprocess
    return Contender(lambda t: list(encoder.embed(t)), lambda t: list(encoder.query_embed(t)))


class PylateContender(Contender):
    """pylate's ``ColBERT`` in a child process of its own venv (:mod:`.pylate_worker`, a
    :class:`~.worker_protocol.Worker`): each call sends the texts, the child encodes them, times
    itself (``last_seconds``) and writes the arrays to a file read back here."""

    def __init__(self, model: HeadModel, threads: int, python: str) -> None:
        script = Path(__file__).with_name("pylate_worker.py")
        self.worker = Worker([python, str(script), str(model.checkpoint), str(threads)], "pylate")
        self.last_seconds: float | None = None
        self.version = self.worker.hello["pylate"]

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.worker.ask(request)

    def _encode(self, texts: list[str], is_query: bool) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "out.npz"
            reply = self._ask({"op": "encode", "texts": texts, "is_query": is_query, "out": str(path)})
            with np.load(path) as data:
                vectors, offsets = data["vectors"], data["offsets"]
        self.last_seconds = reply["seconds"]
        return [vectors[a:b] for a, b in itertools.pairwise(offsets)]

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts, False)

    def queries(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode(texts, True)

    def time_queries(self, texts: list[str]) -> list[float]:
        return self._ask({"op": "time_queries", "texts": texts})["seconds"]

    def maxsim(
        self, query: np.ndarray, documents: list[np.ndarray], repeats: int
    ) -> tuple[list[float], np.ndarray]:
        """pylate's ``colbert_scores`` of ``query`` against ``documents`` zero-padded to one length (as
        ``pylate.rank.rerank`` pads them), ``repeats`` times: each call's seconds, and the scores."""
        offsets = np.cumsum([0] + [len(d) for d in documents])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "maxsim.npz"
            np.savez(path, query=query, vectors=np.concatenate(documents), offsets=offsets)
            reply = self._ask({"op": "maxsim", "arrays": str(path), "repeats": repeats})
            with np.load(path) as data:
                scores = data["scores"]
        return reply["seconds"], scores

    def peak_rss_mb(self) -> float:
        return self.worker.peak_rss_mb()

    def close(self) -> None:
        self.worker.close()


def pylate_python(venv: str | os.PathLike[str]) -> str:
    """The interpreter of a venv (or the path itself, when it is an interpreter)."""
    path = Path(venv)
    return str(path if path.is_file() else path / "bin" / "python")


FACTORIES: dict[str, Callable[[HeadModel, int], Contender]] = {
    "naive_ort": make_naive_ort,
    "fastembed": make_fastembed,
    "fastembed_native": make_fastembed_native,
}


def make(name: str, model: HeadModel, threads: int, pylate: str | None = None) -> Contender:
    """Contender ``name`` (a key of :data:`FACTORIES`, or "pylate" with ``pylate`` the venv)."""
    if name == "pylate":
        if not pylate:
            raise ValueError("the pylate contender needs --pylate VENV")
        return PylateContender(model, threads, pylate_python(pylate))
    return FACTORIES[name](model, threads)
