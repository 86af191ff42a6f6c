"""Sessions over one model file share its weights (cpp/shared_weights.h): an engine's single-batch and
bulk sessions hold one copy, and answer exactly as sessions that load the file by themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import build_onnx

from fastembed_native import _core
from fastembed_native.engine import runtime
from fastembed_native.errors import FastembedNativeError

IDS = np.array([[2, 4, 5, 3], [2, 6, 3, 0]], np.int64)


def _external(path: Path, seed: int, location: str) -> np.ndarray:
    """A tiny model at ``path`` with its weights in ``location`` beside it; returns its word table."""
    staging = path.with_name("staging-" + path.name)
    tiny = build_onnx(staging, seed=seed)
    proto = onnx.load(str(staging))
    onnx.save_model(
        proto,
        str(staging),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    os.replace(staging, path)  # a new file, as quantize and export put theirs in place
    return tiny.word


def _states(session: _core.Session) -> np.ndarray:
    return np.array(session.run(IDS, np.ones_like(IDS), None, ["last_hidden_state"])[0])


def test_sessions_over_one_file_share_its_weights_and_answer_as_unshared_ones(tmp_path):
    runtime.ensure_loaded()
    path = tmp_path / "model.onnx"
    word = _external(path, 0, "model.onnx_data")
    single = _core.Session(str(path), intra_op_threads=2)
    bulk = _core.Session(str(path), intra_op_threads=1)
    alone = _core.Session(str(path), share_weights=False)
    assert single.shared_tensors == bulk.shared_tensors == 1  # the word table, mapped once
    assert alone.shared_tensors == 0
    for session in (single, bulk, alone):
        np.testing.assert_array_equal(_states(session), word[IDS])
    del single, bulk  # the weights go with the last session that holds them
    again = _core.Session(str(path))
    assert again.shared_tensors == 1
    np.testing.assert_array_equal(_states(again), word[IDS])


def test_a_file_replaced_on_disk_is_read_afresh(tmp_path):
    runtime.ensure_loaded()
    path = tmp_path / "model.onnx"
    old_word = _external(path, 0, "old.onnx_data")
    old = _core.Session(str(path))
    new_word = _external(path, 1, "new.onnx_data")  # the graph replaced while `old` is alive
    new = _core.Session(str(path))
    assert not np.array_equal(old_word, new_word)
    np.testing.assert_array_equal(_states(new), new_word[IDS])
    np.testing.assert_array_equal(_states(old), old_word[IDS])


def test_inline_weights_still_load(tmp_path):
    """Weights inside the .onnx file sit where protobuf put them, usually unaligned: those are left to
    ORT to copy, and the answers are the same either way."""
    runtime.ensure_loaded()
    path = tmp_path / "model.onnx"
    tiny = build_onnx(path)
    for share in (True, False):
        np.testing.assert_array_equal(_states(_core.Session(str(path), share_weights=share)), tiny.word[IDS])


def test_a_damaged_file_is_an_error_not_a_crash(tmp_path):
    runtime.ensure_loaded()
    path = tmp_path / "model.onnx"
    _external(path, 0, "model.onnx_data")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FastembedNativeError):
        _core.Session(str(path))
    path.write_bytes(b"\xff" * 64)  # not protobuf at all
    with pytest.raises(FastembedNativeError):
        _core.Session(str(path))
