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

from ..errors import ModelLoadError
from .parity import parity_check

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


@dataclass(frozen=True)
class ExportReport:
    """Where the model went and how closely it matches the source (cosine per parity text)."""

    model_dir: Path
    min_cosine: float
    cosines: tuple[float, ...]


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
    source: str | Path, output: str | Path, *, min_cosine: float = 0.9999, fuse: bool = True
) -> ExportReport:
    """Export ``source`` (a local checkpoint dir) to ``output``, with ``onnx/model.onnx`` and configs,
    plus ``onnx/model_fused.onnx`` for single-batch calls when ``fuse`` and the model type allows
    (see fastembed_native.fuse).

    The export is written to a temporary folder beside ``output`` and moved into place only after
    the parity check passes, so ``output`` never holds a half-written or wrong model.

    Raises:
        ModelLoadError: export dependencies missing, the export failed, or parity is below ``min_cosine``.
        FileExistsError: ``output`` exists already.
    """
    _require_export_deps()
    from optimum.exporters.onnx import main_export

    source = Path(source)
    output = Path(output)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face checkpoint directory (no config.json)")
    if output.exists():
        raise FileExistsError(f"{output} exists already")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        raw = staging / "optimum"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter from torch/transformers
            main_export(
                str(source),
                raw,
                task="feature-extraction",
                library_name="transformers",
                local_files_only=True,
                do_validation=False,
            )
        model = staging / "model"
        (model / "onnx").mkdir(parents=True)
        shutil.move(str(raw / "model.onnx"), model / "onnx" / "model.onnx")
        for extra in raw.glob("model.onnx_data"):  # external weights of models over 2 GB
            shutil.move(str(extra), model / "onnx" / extra.name)
        for name in _CONFIG_FILES:
            found = source / name if (source / name).is_file() else raw / name
            if found.is_file():
                shutil.copy2(found, model / name)
        for pooling_dir in source.glob("*_Pooling"):
            shutil.copytree(pooling_dir, model / pooling_dir.name)

        cosines = parity_check(model, source)
        worst = float(cosines.min())
        if worst < min_cosine:
            raise ModelLoadError(
                f"exported model disagrees with {source}: minimum cosine {worst:.6f} < {min_cosine} "
                f"(text {int(cosines.argmin())} of the parity set)"
            )
        if fuse:
            from .fuse import fuse_model

            fuse_model(model)
        model.rename(output)
        return ExportReport(output, worst, tuple(float(c) for c in cosines))
    except (ModelLoadError, FileNotFoundError, FileExistsError):
        raise
    except Exception as exc:  # whatever optimum/torch raise: one error type, with the cause chained
        raise ModelLoadError(f"exporting {source} failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
