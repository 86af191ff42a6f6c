"""Exporting a Hugging Face / sentence-transformers checkpoint to a model directory this package
embeds with, declared good only after a parity check against the source model.

Needs the ``[export]`` extra (torch, optimum-onnx, sentence-transformers); embedding never does.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..engine.m3 import is_m3_model
from ..engine.multivector import is_colbert
from ..engine.sparse import ROUTER_FILE, find_static_query
from ..errors import ModelLoadError
from .data_file import move_weights_to_data_file, save_graph
from .llm_reranker import export_llm_reranker, is_llm_reranker
from .parity import (
    SCORE_TOLERANCE,
    SPARSE_TOLERANCE,
    inference_free_parity,
    parity_check,
    score_parity,
    sparse_parity,
)

#: Files copied from the source checkout next to onnx/model.onnx (those that exist).
_CONFIG_FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)

EXPORT_EXTRA_HINT = "pip install 'fastembed-native[export]'  (install torch first: pip install torch==2.13.0)"

#: Where external weights go, beside onnx/model.onnx (optimum's name for them, too).
EXTERNAL_DATA_FILE = "model.onnx_data"

#: Largest |difference| of an exported ColBERT model's unit token vectors against the checkpoint's
#: own computation (transformers + the Dense weights) on the same tokens: pylate's bar is 1e-5.
COLBERT_TOLERANCE = 1e-5

#: Parity bar of an fp16 export against the float32 source. Half precision keeps ~3 significant
#: digits per value and the error grows through the layers. On a CPU, ONNX Runtime runs most fp16
#: ops through float32 casts, and the family test models (tests/test_families.py) stay above
#: 0.99999; a GPU or Core ML computes in real half precision, so the bar sits at 0.999: it still
#: flags a broken graph (an overflow, a misplaced Cast) without failing on rounding. fp32: 0.9999.
FP16_MIN_COSINE = 0.999
DTYPES = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportReport:
    """Where the model went and how closely it matches the source: the cosine per parity text
    (embeddings), or the largest |score difference| over the parity pairs (cross-encoders), or the
    largest relative difference of a sparse vector (SPLADE), in ``max_score_difference``."""

    model_dir: Path
    min_cosine: float
    cosines: tuple[float, ...]
    max_score_difference: float | None = None

    def parity(self) -> str:
        """The parity result in words."""
        if self.max_score_difference is not None:
            return f"parity max |score difference| {self.max_score_difference:.2e}"
        return f"parity min cosine {self.min_cosine:.6f}"


def _require_export_deps() -> None:
    missing = []
    for module in ("torch", "optimum.exporters.onnx", "sentence_transformers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.split(".")[0])
    if missing:
        raise ModelLoadError(
            f"exporting a model needs {', '.join(missing)}, which is not installed; run: {EXPORT_EXTRA_HINT}"
        )


def export_model(
    source: str | Path,
    output: str | Path,
    *,
    min_cosine: float | None = None,
    fuse: bool = True,
    external_data: bool | None = None,
    dtype: str = "fp32",
) -> ExportReport:
    """Export ``source`` (a local checkpoint dir) to ``output``, with ``onnx/model.onnx`` and configs,
    plus ``onnx/model_fused.onnx`` for single-batch calls when ``fuse`` and the model type allows
    (see fastembed_native.fuse).

    ``external_data``: None (default) puts the weights in ``onnx/model.onnx_data`` beside the graph
    (ONNX's external data, which ONNX Runtime finds by itself, and the layout that lets the engine's
    sessions share one copy of them: :mod:`~fastembed_native.models.data_file`), small tensors
    staying in the graph; True puts every tensor there; False keeps them inside ``model.onnx``,
    which a model past protobuf's 2 GB limit cannot do (e.g. Qwen3-Embedding-0.6B, 2.4 GB in float32). ``dtype="fp16"``
    stores weights and arithmetic in half precision for GPUs and Core ML, with float32 inputs and
    outputs kept, and is checked at ``FP16_MIN_COSINE`` unless ``min_cosine`` says otherwise
    (float32: 0.9999); fp16 graphs are not fused, and on a CPU they run correctly but slowly.
    ``dtype="int8"`` (embedding, reranker and SPLADE models) exports float32 as usual, checks it, and
    adds ``onnx/model_int8.onnx`` with its recipe (:func:`~fastembed_native.models.quantize.quantize_model`,
    the rowwise recipe), which ``TextEmbedding`` / ``TextCrossEncoder`` / ``SparseTextEmbedding``
    load with ``quantized=True``.

    The export is written to a temporary folder beside ``output`` and moved into place only after
    the parity check passes, so ``output`` never holds a half-written or wrong model.

    Raises:
        ModelLoadError: export dependencies missing, the export failed, or parity is below ``min_cosine``.
        FileExistsError: ``output`` exists already.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if min_cosine is None:
        min_cosine = FP16_MIN_COSINE if dtype == "fp16" else 0.9999
    _require_export_deps()
    from optimum.exporters.onnx import main_export

    source = Path(source)
    output = Path(output)
    if find_static_query(source) is not None:  # an inference-free sparse model (a Router)
        return _export_inference_free(source, output)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face checkpoint directory (no config.json)")
    if output.exists():
        raise FileExistsError(f"{output} exists already")
    scores = is_cross_encoder(source)
    sparse = is_sparse_encoder(source)
    colbert = is_colbert(source)
    m3 = is_m3_model(source)
    if dtype == "int8" and (colbert or m3):
        raise ValueError(
            "--dtype int8 is for embedding, reranker and SPLADE models; this checkpoint is "
            + ("BGE-M3" if m3 else "ColBERT")
        )
    if is_llm_reranker(source):  # a yes/no LLM reranker: its own graph (see llm_reranker.py)
        worst = export_llm_reranker(source, output)
        if dtype == "int8":
            _quantize(output)
        return ExportReport(output, float("nan"), (), worst)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        raw = staging / "optimum"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter from torch/transformers
            main_export(
                str(source),
                raw,
                task="text-classification" if scores else "fill-mask" if sparse else "feature-extraction",
                library_name="transformers",
                local_files_only=True,
                do_validation=False,
            )
        model = staging / "model"
        (model / "onnx").mkdir(parents=True)
        shutil.move(str(raw / "model.onnx"), model / "onnx" / "model.onnx")
        for extra in raw.glob(EXTERNAL_DATA_FILE):  # external weights of models over 2 GB
            shutil.move(str(extra), model / "onnx" / extra.name)
        for name in _CONFIG_FILES:
            found = source / name if (source / name).is_file() else raw / name
            if found.is_file():
                shutil.copy2(found, model / name)
        for pooling_dir in [*source.glob("*_Pooling"), *source.glob("*_SpladePooling")]:
            shutil.copytree(pooling_dir, model / pooling_dir.name)
        if m3:  # BGE-M3's sparse and ColBERT heads appended to the graph: three outputs per Run
            from .bge_m3 import append_heads

            append_heads(source, model)
        if colbert:  # pylate's Dense folded into the graph: one projected vector per token
            from .colbert import append_projection

            append_projection(source, model)
        _rewrite_graph(model / "onnx" / "model.onnx", external_data, "fp16" if dtype == "fp16" else "fp32")

        if m3:
            from .bge_m3 import m3_parity

            worst = m3_parity(model, source)
            if worst > COLBERT_TOLERANCE:
                raise ModelLoadError(
                    f"exported BGE-M3 model disagrees with {source}: difference {worst:.2e} > {COLBERT_TOLERANCE}"
                )
            model.rename(output)
            return ExportReport(output, float("nan"), (), worst)

        if colbert:
            from .colbert import colbert_parity

            worst = colbert_parity(model, source)
            if worst > COLBERT_TOLERANCE:
                raise ModelLoadError(
                    f"exported ColBERT model disagrees with {source}: vector difference {worst:.2e} "
                    f"> {COLBERT_TOLERANCE}"
                )
            model.rename(output)
            return ExportReport(output, float("nan"), (), worst)

        if sparse:  # a SPLADE model: its sparse vectors against sentence-transformers' SparseEncoder
            worst = sparse_parity(model, source)
            if worst > SPARSE_TOLERANCE:
                raise ModelLoadError(
                    f"exported sparse model disagrees with {source}: relative difference {worst:.2e} "
                    f"> {SPARSE_TOLERANCE}"
                )
            if dtype == "int8":
                _quantize(model)
            model.rename(output)
            return ExportReport(output, float("nan"), (), worst)

        if scores:  # a cross-encoder: its logits against sentence-transformers' CrossEncoder
            differences = score_parity(model, source).max(axis=1)
            if float(differences.max()) > SCORE_TOLERANCE:
                raise ModelLoadError(
                    f"exported cross-encoder disagrees with {source}: score difference "
                    f"{float(differences.max()):.2e} > {SCORE_TOLERANCE} (pair {int(differences.argmax())})"
                )
            if dtype == "int8":
                _quantize(model)
            model.rename(output)
            return ExportReport(output, float("nan"), (), float(differences.max()))
        cosines = parity_check(model, source)
        worst = float(cosines.min())
        if worst < min_cosine:
            raise ModelLoadError(
                f"exported model disagrees with {source}: minimum cosine {worst:.6f} < {min_cosine} "
                f"(text {int(cosines.argmin())} of the parity set)"
            )
        if fuse and dtype != "fp16":
            from .fuse import fuse_model

            fuse_model(model)
        if dtype == "int8":
            _quantize(model)
        model.rename(output)
        return ExportReport(output, worst, tuple(float(c) for c in cosines))
    except (ModelLoadError, FileNotFoundError, FileExistsError):
        raise
    except Exception as exc:  # whatever optimum/torch raise: one error type, with the cause chained
        raise ModelLoadError(f"exporting {source} failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _quantize(model_dir: Path) -> None:
    """``--dtype int8``: the rowwise int8 file and its recipe beside the checked float32 export."""
    from .quantize import quantize_model

    quantize_model(model_dir, measure_speed=False)


def is_sparse_encoder(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is a SPLADE model: sentence-transformers' SpladePooling in its modules,
    or a bare ``*ForMaskedLM`` checkpoint."""
    import json

    modules = checkpoint / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text(encoding="utf-8"))
        return any(str(e.get("type", "")).endswith("SpladePooling") for e in entries)
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return any(str(a).endswith("ForMaskedLM") for a in config.get("architectures") or ())


def is_cross_encoder(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is a sequence-classification model (a cross-encoder or classifier)."""
    import json

    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or ())


def _rewrite_graph(path: Path, external_data: bool | None, dtype: str) -> None:
    """Convert ``path`` to fp16 and lay out its weights as ``external_data`` says
    (:func:`~fastembed_native.models.data_file.save_graph`), in place."""
    import onnx

    if dtype == "fp32" and external_data is None:
        move_weights_to_data_file(path)  # unless optimum wrote one already, past 2 GB
        return
    proto = onnx.load(str(path))  # with its external weights, if any
    if dtype == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs are token ids and the output stays float32, so the core reads it unchanged.
        proto = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=True)
    save_graph(proto, path, external=external_data)


def _export_inference_free(source: Path, output: Path) -> ExportReport:
    """Export an inference-free sparse model (sentence-transformers' Router: SparseStaticEmbedding
    for queries, a SPLADE Transformer + SpladePooling for documents): the document side as a SPLADE
    model, the query module and the routes copied beside it, and both sides checked against
    ``SparseEncoder.encode_query`` / ``encode_document``."""
    import json

    router = json.loads((source / ROUTER_FILE).read_text(encoding="utf-8"))
    document = router["structure"].get("document") or []
    types = router["types"]
    if len(document) != 2 or not str(types[document[1]]).endswith("SpladePooling"):
        raise ModelLoadError(
            f"{source}: the document route {document} is not a Transformer and a SpladePooling"
        )
    if output.exists():
        raise FileExistsError(f"{output} exists already")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        flat = staging / "checkpoint"  # the document side laid out as a plain SPLADE checkpoint
        shutil.copytree(source / document[0], flat)
        shutil.copytree(source / document[1], flat / "1_SpladePooling")
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": types[document[0]]},
            {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": types[document[1]]},
        ]
        (flat / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
        shutil.copy2(source / "config_sentence_transformers.json", flat)
        model = staging / "model"
        export_model(flat, model)
        query = find_static_query(source)
        assert query is not None
        shutil.copytree(query, model / query.name)
        shutil.copy2(source / ROUTER_FILE, model / ROUTER_FILE)
        worst = inference_free_parity(model, source)
        if worst > SPARSE_TOLERANCE:
            raise ModelLoadError(
                f"exported inference-free model disagrees with {source}: relative difference {worst:.2e} "
                f"> {SPARSE_TOLERANCE}"
            )
        model.rename(output)
        return ExportReport(output, float("nan"), (), worst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
