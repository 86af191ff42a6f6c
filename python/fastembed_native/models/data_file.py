"""Where a graph keeps its weights: in a data file beside it, or inside the ``.onnx`` protobuf.

Every graph this package writes keeps its weights in ``<graph>_data`` beside it by default (ONNX's
external data, which ONNX Runtime finds by itself). The engine's sessions over one such file share a
single read-only mapping of it and one pre-packed copy of each MatMul weight
(``cpp/shared_weights.*``): every tensor at an offset that is a multiple of 64 bytes, which is where
ONNX puts them when each tensor before it is a multiple of 64 bytes long, as the weight matrices of
these models are (a width of 384 floats is 1,536 bytes). Inside a protobuf the weights sit at
arbitrary offsets, so each session loads a copy of its own:
``python benchmarks/rerank_memory.py`` measured bge-reranker-base's benchmark model at a peak of
1,087 MB in one file and 822 MB with a data file. One protobuf also cannot pass 2 GB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: Tensors smaller than this stay inside the .onnx file (biases, LayerNorm weights, shapes).
DATA_MIN_BYTES = 1024
#: The most weights one protobuf holds: its 2 GB limit, less room for the graph itself.
INLINE_MAX_BYTES = 2**31 - 2**24


def data_file_of(onnx_path: Path) -> Path:
    """The data file this package writes beside ``onnx_path``."""
    return onnx_path.with_name(onnx_path.name + "_data")


def save_graph(proto: Any, onnx_path: Path, *, external: bool | None = None) -> None:
    """Write ``proto`` (with its weights loaded) to ``onnx_path``, replacing it.

    ``external``: None (default) puts every tensor of at least ``DATA_MIN_BYTES`` in
    :func:`data_file_of` the graph; True puts every tensor there (a small model then has the layout
    of a big one); False keeps them all in the graph file, which a model past 2 GB cannot do.
    The data file is in place before the graph that names it, and with ``external=False`` the data
    file an earlier version of the graph named is removed.
    """
    import onnx

    onnx_path = Path(onnx_path)
    data_file = data_file_of(onnx_path)
    if external is False:
        size = sum(t.ByteSize() for t in proto.graph.initializer)
        if size > INLINE_MAX_BYTES:
            raise ValueError(
                f"{onnx_path.name}: {size / 2**30:.1f} GB of weights cannot stay inside one ONNX file "
                "(protobuf's 2 GB limit); keep them in a data file"
            )
    # onnx appends to a data file it finds, so it writes into a fresh folder beside the graph.
    staging = Path(tempfile.mkdtemp(prefix=f".saving.{onnx_path.name}.", dir=onnx_path.parent))
    try:
        onnx.save_model(
            proto,
            str(staging / onnx_path.name),
            save_as_external_data=external is not False,
            all_tensors_to_one_file=True,
            location=data_file.name,
            size_threshold=0 if external else DATA_MIN_BYTES,
        )
        staged_graph, staged_data = staging / onnx_path.name, staging / data_file.name
        if staged_data.is_file():
            # onnx creates it owner-only; a shared cache needs the graph file's mode
            staged_data.chmod((onnx_path if onnx_path.is_file() else staged_graph).stat().st_mode & 0o777)
            os.replace(staged_data, data_file)
            os.replace(staged_graph, onnx_path)
        else:
            os.replace(staged_graph, onnx_path)
            data_file.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def data_files(onnx_path: Path) -> list[Path]:
    """The external data files ``onnx_path``'s graph reads its weights from."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    names = {
        entry.value
        for t in proto.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    return sorted(Path(onnx_path).parent / name for name in names)


def move_weights_to_data_file(onnx_path: Path) -> Path:
    """Store ``onnx_path``'s large tensors in :func:`data_file_of` it, unless the graph keeps its
    weights in a data file already (as past 2 GB); returns the data file."""
    import onnx

    onnx_path = Path(onnx_path)
    existing = data_files(onnx_path)
    if existing:
        if len(existing) > 1:
            raise ValueError(f"{onnx_path} keeps its weights in several files: {[p.name for p in existing]}")
        return existing[0]
    save_graph(onnx.load(str(onnx_path)), onnx_path)
    return data_file_of(onnx_path)
