"""fastembed_native's compiled core (cpp/bindings.cpp): ONNX Runtime sessions and pooling kernels.

Kept true to the module by tests/test_layout.py (mypy's stubtest).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

#: ORT_API_VERSION of the headers the extension was built with; an older runtime is refused.
HEADERS_API_VERSION: int

def load_runtime(library_path: str) -> None:
    """Load ONNX Runtime's shared library from ``library_path`` (once per process)."""

def runtime_loaded() -> bool: ...
def runtime_version() -> str: ...
def runtime_library_path() -> str: ...
def available_providers() -> list[str]:
    """Execution providers compiled into the loaded ONNX Runtime, e.g. ['CPUExecutionProvider']."""

def simd_level() -> str:
    """The instruction set the pooling kernels use on this CPU."""

def supported_isas() -> list[str]: ...
def pool(
    states: npt.NDArray[np.float32],
    mask: npt.NDArray[np.int64],
    mode: str,
    normalize: bool = False,
    isa: str | None = None,
    skip_prefix: int = 0,
) -> npt.NDArray[np.float32]:
    """Pool float32 states [batch, seq, dim] under an int64 mask [batch, seq] into [batch, dim]; the first
    skip_prefix real tokens of each row (a prompt) are left out."""

def splade(
    logits: npt.NDArray[np.float32],
    mask: npt.NDArray[np.int64],
    pooling: str = "max",
    activation: str = "log1p_relu",
    max_active_dims: int = 0,
    isa: str | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """SPLADE pooling of float32 logits [batch, seq, vocab] under an int64 mask [batch, seq]: one sparse row
    per text as (offsets int64 [batch + 1], indices int32, values float32), indices ascending."""

def token_weights(
    weights: npt.NDArray[np.float32],
    input_ids: npt.NDArray[np.int64],
    mask: npt.NDArray[np.int64],
    dropped: list[int] = [],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """One weight per token (float32 [batch, seq]) into one sparse row per text: each id's largest weight,
    ids in `dropped` and weights <= 0 left out; (offsets, indices int32, values float32)."""

def pack_tokens(
    states: npt.NDArray[np.float32],
    keep: npt.NDArray[np.bool_],
    normalize: bool = True,
    isa: str | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The float32 states [batch, seq, dim] where the bool mask keep [batch, seq] is set, packed into one
    (n, dim) array (each row L2-normalised when normalize) and offsets [batch + 1] into it."""

def maxsim(
    query: npt.NDArray[np.float32],
    documents: npt.NDArray[np.float32],
    offsets: npt.NDArray[np.int64],
    isa: str | None = None,
) -> npt.NDArray[np.float32]:
    """MaxSim of a query's vectors (float32 [q, dim]) against each document of a packed array
    (documents [n, dim], offsets [count + 1]): float32 [count]."""

def tensor_data_address(arg0: npt.NDArray[np.int64], /) -> int:
    """Address of the data of the ORT tensor created over an int64 [rows, cols] array."""

class Session:
    """One ONNX Runtime session over a model file; ``embed`` runs a padded batch and pools it."""

    def __init__(
        self,
        model_path: str,
        *,
        graph_optimization_level: int = 99,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        providers: list[tuple[str, dict[str, Any]]] = [],
        optimized_model_path: str = "",
        cpu_mem_arena: bool = True,
        mem_pattern: bool = True,
        config_entries: dict[str, Any] = {},
        profile_prefix: str = "",
        share_weights: bool = True,
    ) -> None:
        """``profile_prefix``: ONNX Runtime profiles every node into ``<prefix>_<date>.json``, written
        when the session is released (for reading where the time goes, not for production).
        ``share_weights``: CPU sessions over one file in this process share its weights and their
        pre-packed copies (cpp/shared_weights.h)."""
    @property
    def providers(self) -> list[str]: ...
    @property
    def shared_tensors(self) -> int:
        """Tensors shared with the process's other sessions over the same file (0: none)."""
    def stats(self) -> dict[str, Any]:
        """Totals since creation or reset_stats(): runs, seconds in ORT Run and in pooling, tokens."""

    def reset_stats(self) -> None: ...
    @property
    def input_names(self) -> list[str]: ...
    @property
    def input_roles(self) -> dict[str, str]: ...
    @property
    def output_names(self) -> list[str]: ...
    @property
    def output_name(self) -> str: ...
    @property
    def output_is_pooled(self) -> bool: ...
    @property
    def dim(self) -> int | None: ...
    def run(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64] | None,
        outputs: list[str],
        vocab_size: int = 0,
    ) -> list[npt.NDArray[Any]]:
        """Run one padded batch and return the named outputs as numpy arrays over ONNX Runtime's buffers
        (no copy), for the heads that do not pool into one vector."""

    def embed(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64] | None,
        out: npt.NDArray[np.float32],
        rows: npt.NDArray[np.int64] | None = None,
        pooling: str = "mean",
        normalize: bool = False,
        vocab_size: int = 0,
        skip_prefix: int = 0,
    ) -> None:
        """Run one padded batch and pool row i into out[rows[i]] (out[i] when rows is None); the first
        skip_prefix real tokens of each row (a prompt) are left out of the pooling, not of attention."""
