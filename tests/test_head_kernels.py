"""The C++ kernels of the sparse and multi-vector heads against numpy, on every instruction set."""

from __future__ import annotations

import numpy as np
import pytest

from fastembed_native import _core
from fastembed_native.engine import ensure_loaded

ensure_loaded()
ISAS = _core.supported_isas()


def _dense_rows(offsets, indices, values, width):
    rows = np.zeros((len(offsets) - 1, width), dtype=np.float32)
    for b in range(len(offsets) - 1):
        rows[b, indices[offsets[b] : offsets[b + 1]]] = values[offsets[b] : offsets[b + 1]]
    return rows


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("activation", ["log1p_relu", "log1p_log1p_relu"])
def test_splade_equals_the_formula(isa, pooling, activation):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 37)).astype(np.float32)  # 37: the SIMD tails
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6, [0] * 6, [1, 0, 0, 0, 0, 0]], dtype=np.int64)
    x = np.log1p(np.maximum(logits.astype(np.float64), 0))
    if activation == "log1p_log1p_relu":
        x = np.log1p(x)
    x = x * mask[:, :, None]
    expected = x.max(axis=1) if pooling == "max" else x.sum(axis=1)
    offsets, indices, values = _core.splade(logits, mask, pooling, activation, isa=isa)
    assert offsets.tolist()[0] == 0 and offsets[-1] == len(indices) == len(values)
    assert offsets[3] == offsets[2]  # the row without a real token is empty
    for b in range(4):
        assert np.all(np.diff(indices[offsets[b] : offsets[b + 1]]) > 0)
    np.testing.assert_allclose(_dense_rows(offsets, indices, values, 37), expected, rtol=1e-6, atol=1e-6)


def test_max_active_dims_keeps_the_largest():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 50)).astype(np.float32)
    mask = np.ones((2, 3), dtype=np.int64)
    full = _dense_rows(*_core.splade(logits, mask), 50)
    offsets, indices, values = _core.splade(logits, mask, max_active_dims=5)
    assert np.diff(offsets).tolist() == [5, 5]
    for b in range(2):
        top = np.sort(np.argsort(-full[b], kind="stable")[:5])
        assert indices[offsets[b] : offsets[b + 1]].tolist() == top.tolist()
        np.testing.assert_array_equal(values[offsets[b] : offsets[b + 1]], full[b, top])


def test_token_weights_keep_each_ids_largest_positive_weight():
    ids = np.array([[0, 7, 5, 7, 2, 1], [0, 9, 2, 1, 1, 1]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=np.int64)
    weights = np.array([[0.9, 0.2, -0.5, 0.4, 0.3, 0.8], [0.1, 0.0, 0.6, 0.7, 0.7, 0.7]], dtype=np.float32)
    offsets, indices, values = _core.token_weights(weights, ids, mask, [0, 2, 1, 3])
    assert offsets.tolist() == [0, 1, 1]  # id 5 has a negative weight, id 9 a zero one; 0 and 2 dropped
    assert indices.tolist() == [7]
    np.testing.assert_array_equal(values, np.float32([0.4]))


@pytest.mark.parametrize("isa", ISAS)
def test_pack_and_maxsim_equal_numpy(isa):
    rng = np.random.default_rng(2)
    states = rng.normal(size=(3, 5, 19)).astype(np.float32)
    keep = np.array([[1, 1, 0, 1, 0], [0] * 5, [1] * 5], dtype=bool)
    vectors, offsets = _core.pack_tokens(states, keep, True, isa=isa)
    assert offsets.tolist() == [0, 3, 3, 8]
    expected = states[keep] / np.linalg.norm(states[keep], axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    raw, _ = _core.pack_tokens(states, keep, False, isa=isa)
    np.testing.assert_array_equal(raw, states[keep])

    query = vectors[:4]
    scores = _core.maxsim(query, vectors, offsets, isa=isa)
    for d in range(3):
        doc = vectors[offsets[d] : offsets[d + 1]]
        want = (query @ doc.T).max(axis=1).sum() if len(doc) else 0.0
        assert scores[d] == pytest.approx(want, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("query_rows", [1, 16, 17, 32, 33, 40])
def test_maxsim_every_query_block_and_document_remainder(isa, query_rows):
    """Query widths that use 32-row blocks, a trailing 16-row block or both (after zero padding), and
    documents of 0 to 9 vectors (the 4-vector steps and every remainder), against numpy."""
    rng = np.random.default_rng(query_rows)
    dim = 24
    lengths = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    vectors = rng.normal(size=(int(offsets[-1]), dim)).astype(np.float32)
    query = rng.normal(size=(query_rows, dim)).astype(np.float32)
    scores = _core.maxsim(query, vectors, offsets, isa=isa)
    for d, n in enumerate(lengths):
        doc = vectors[offsets[d] : offsets[d + 1]].astype(np.float64)
        want = (query.astype(np.float64) @ doc.T).max(axis=1).sum() if n else 0.0
        assert scores[d] == pytest.approx(want, rel=1e-5, abs=1e-5), (d, n)


def test_kernels_name_bad_arguments():
    with pytest.raises(ValueError, match="unknown sparse pooling 'mean'"):
        _core.splade(np.zeros((1, 1, 2), np.float32), np.ones((1, 1), np.int64), "mean")
    with pytest.raises(ValueError, match="mask has shape"):
        _core.splade(np.zeros((1, 2, 2), np.float32), np.ones((1, 1), np.int64))
    with pytest.raises(ValueError, match="vector widths differ"):
        _core.maxsim(np.zeros((1, 3), np.float32), np.zeros((2, 4), np.float32), np.int64([0, 2]))
    with pytest.raises(ValueError, match="offsets must start at 0"):
        _core.maxsim(np.zeros((1, 4), np.float32), np.zeros((2, 4), np.float32), np.int64([0, 1]))
    with pytest.raises(TypeError, match="keep must have dtype bool"):
        _core.pack_tokens(np.zeros((1, 2, 2), np.float32), np.ones((1, 2), np.int64))
