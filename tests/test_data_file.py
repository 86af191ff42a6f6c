"""Where written graphs keep their weights (models/data_file.py): a data file beside the graph by
default, so the engine's sessions share them; every tensor there, or none, on request."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import build_onnx

from fastembed_native import _core
from fastembed_native.engine import runtime
from fastembed_native.models import data_file
from fastembed_native.models.data_file import data_file_of, move_weights_to_data_file, save_graph

IDS = np.array([[2, 4, 5, 3], [2, 6, 3, 0]], np.int64)


def _layout(path) -> dict[str, bool]:
    """Each initializer's name: whether it lives in the data file."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {t.name: t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer}


def _states(path) -> np.ndarray:
    session = _core.Session(str(path), intra_op_threads=1)
    return np.array(session.run(IDS, np.ones_like(IDS), None, ["last_hidden_state"])[0])


@pytest.fixture
def graph(tmp_path):
    runtime.ensure_loaded()
    path = tmp_path / "model.onnx"
    tiny = build_onnx(path, seed=3, vocab_rows=64)  # a word table past DATA_MIN_BYTES
    return path, tiny.word


def test_default_puts_large_tensors_in_the_data_file_and_sessions_share_them(graph):
    path, word = graph
    sizes = {t.name: t.ByteSize() for t in onnx.load(str(path)).graph.initializer}
    save_graph(onnx.load(str(path)), path)
    layout = _layout(path)
    assert layout == {name: size >= data_file.DATA_MIN_BYTES for name, size in sizes.items()}
    assert any(layout.values()) and data_file_of(path).is_file()
    assert oct(data_file_of(path).stat().st_mode & 0o777) == oct(path.stat().st_mode & 0o777)
    first, second = (_core.Session(str(path), intra_op_threads=1) for _ in range(2))
    assert first.shared_tensors == second.shared_tensors > 0
    np.testing.assert_array_equal(_states(path), word[IDS])
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".saving")]  # no staging left


def test_every_tensor_or_none_on_request(graph):
    path, word = graph
    save_graph(onnx.load(str(path)), path, external=True)
    assert all(_layout(path).values())
    np.testing.assert_array_equal(_states(path), word[IDS])
    # Back into one file: loaded whole first, then the data file it named is removed.
    save_graph(onnx.load(str(path)), path, external=False)
    assert not any(_layout(path).values()) and not data_file_of(path).exists()
    np.testing.assert_array_equal(_states(path), word[IDS])


def test_resaving_replaces_the_data_file_rather_than_appending_to_it(graph):
    path, word = graph
    save_graph(onnx.load(str(path)), path)
    size = data_file_of(path).stat().st_size
    save_graph(onnx.load(str(path)), path)  # onnx appends to a data file it finds: not here
    assert data_file_of(path).stat().st_size == size
    np.testing.assert_array_equal(_states(path), word[IDS])


def test_move_keeps_a_data_file_the_graph_has(graph):
    path, _ = graph
    assert move_weights_to_data_file(path) == data_file_of(path)
    stamp = data_file_of(path).stat().st_mtime_ns
    assert move_weights_to_data_file(path) == data_file_of(path)
    assert data_file_of(path).stat().st_mtime_ns == stamp  # not rewritten


def test_weights_past_protobufs_limit_cannot_stay_inline(graph, monkeypatch):
    path, _ = graph
    before = path.read_bytes()
    monkeypatch.setattr(data_file, "INLINE_MAX_BYTES", 1000)  # a 2 GB model, in miniature
    with pytest.raises(ValueError, match="cannot stay inside one ONNX file"):
        save_graph(onnx.load(str(path)), path, external=False)
    assert path.read_bytes() == before
