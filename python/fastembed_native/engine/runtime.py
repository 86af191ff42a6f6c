"""Locating and loading ONNX Runtime's shared library for the compiled core."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
from pathlib import Path

from .. import _core
from ..errors import RuntimeLoadError

#: Environment variable naming a libonnxruntime to load instead of the onnxruntime wheel's
#: (a GPU build, a custom build, or a system library).
LIBRARY_ENV = "FASTEMBED_NATIVE_ORT_LIBRARY"

_lock = threading.Lock()


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def find_library() -> Path:
    """Path of the libonnxruntime to load: $FASTEMBED_NATIVE_ORT_LIBRARY, else the onnxruntime wheel's.

    The wheel is located with ``importlib.util.find_spec`` so onnxruntime's own Python module (which
    carries a second copy of ORT) is never imported.
    """
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise RuntimeLoadError(f"{LIBRARY_ENV}={override} does not name a file")
        return path

    # Any package that ships capi/libonnxruntime.* is fine: onnxruntime, onnxruntime-gpu, ...
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeLoadError(
            "the onnxruntime package is not installed; `pip install 'onnxruntime>=1.21'` "
            f"(or set {LIBRARY_ENV} to a libonnxruntime shared library)"
        )
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    pattern = "libonnxruntime*.dylib" if sys.platform == "darwin" else "libonnxruntime.so*"
    candidates = sorted(
        (p for p in capi.glob(pattern) if "providers" not in p.name), key=_version_key, reverse=True
    )
    if not candidates:
        raise RuntimeLoadError(
            f"no ONNX Runtime shared library ({pattern}) in {capi}; the onnxruntime wheel must be "
            f">= 1.21, which ships it (or set {LIBRARY_ENV})"
        )
    return candidates[0]


def ensure_loaded() -> None:
    """Load ONNX Runtime into the compiled core once per process (thread-safe)."""
    if _core.runtime_loaded():
        return
    with _lock:
        if not _core.runtime_loaded():
            _core.load_runtime(str(find_library()))


def runtime_info() -> dict[str, object]:
    """Version, library path and providers of the loaded ONNX Runtime (loading it if needed)."""
    ensure_loaded()
    return {
        "version": _core.runtime_version(),
        "library": _core.runtime_library_path(),
        "headers_api_version": _core.HEADERS_API_VERSION,
        "available_providers": _core.available_providers(),
        "simd": _core.simd_level(),
    }
