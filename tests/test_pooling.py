"""Pooling kernels (every instruction set this CPU runs) against the float64 numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import pool_reference

from fastembed_native import _core

ISAS = _core.supported_isas()
MODES = ["mean", "cls", "last_token"]


def random_batch(rng: np.random.Generator, batch: int, seq: int, dim: int, side: str = "right"):
    states = rng.standard_normal((batch, seq, dim)).astype(np.float32)
    lengths = rng.integers(1, seq + 1, size=batch)
    positions = np.arange(seq)
    real = positions < lengths[:, None] if side == "right" else positions >= (seq - lengths)[:, None]
    return states, real.astype(np.int64)


def test_best_isa_is_used_by_default():
    assert _core.simd_level() == ISAS[-1]
    assert ISAS[0] == "scalar"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("dim", [1, 7, 16, 17, 33, 384, 385], ids=lambda d: f"dim{d}")
def test_kernels_match_reference(isa, mode, normalize, dim):
    rng = np.random.default_rng(dim)
    side = "left" if mode == "last_token" else "right"
    states, mask = random_batch(rng, batch=5, seq=9, dim=dim, side=side)
    got = _core.pool(states, mask, mode, normalize, isa)
    np.testing.assert_allclose(got, pool_reference(states, mask, mode, normalize), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode", MODES)
def test_single_token_rows(isa, mode):
    rng = np.random.default_rng(1)
    states = rng.standard_normal((3, 1, 19)).astype(np.float32)
    mask = np.ones((3, 1), dtype=np.int64)
    np.testing.assert_allclose(_core.pool(states, mask, mode, False, isa), states[:, 0, :], rtol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_all_zero_mask_gives_zero_vector_not_nan(isa, mode, normalize):
    rng = np.random.default_rng(2)
    states = rng.standard_normal((2, 4, 21)).astype(np.float32)
    mask = np.array([[0, 0, 0, 0], [1, 1, 0, 0]], dtype=np.int64)
    got = _core.pool(states, mask, mode, normalize, isa)
    assert np.isfinite(got).all()
    assert not got[0].any()
    np.testing.assert_allclose(got, pool_reference(states, mask, mode, normalize), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_last_token_right_and_left_padding_agree(isa):
    """The same tokens, padded on either side, pool to the same last-token state."""
    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((4, 11)).astype(np.float32)
    right = np.zeros((1, 6, 11), dtype=np.float32)
    left = np.zeros((1, 6, 11), dtype=np.float32)
    right[0, :4] = tokens
    left[0, 2:] = tokens
    got_right = _core.pool(right, np.array([[1, 1, 1, 1, 0, 0]]), "last_token", False, isa)
    got_left = _core.pool(left, np.array([[0, 0, 1, 1, 1, 1]]), "last_token", False, isa)
    np.testing.assert_array_equal(got_right[0], tokens[-1])
    np.testing.assert_array_equal(got_left[0], tokens[-1])


def test_mean_counts_only_masked_tokens():
    states = np.arange(2 * 3 * 2, dtype=np.float32).reshape(1, 6, 2)
    mask = np.array([[1, 0, 1, 0, 0, 1]], dtype=np.int64)
    got = _core.pool(states, mask, "mean", False)
    np.testing.assert_allclose(got[0], states[0, [0, 2, 5]].mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize(
    ("states", "mask", "message"),
    [
        (np.zeros((2, 3, 4), np.float64), np.ones((2, 3), np.int64), "dtype float32"),
        (np.zeros((2, 3), np.float32), np.ones((2, 3), np.int64), "3 dimensions"),
        (np.zeros((2, 3, 4), np.float32), np.ones((2, 4), np.int64), "mask has shape"),
        (np.zeros((2, 3, 4), np.float32), np.ones((2, 3), np.int32), "dtype int64"),
        (np.zeros((2, 4, 3), np.float32).transpose(0, 2, 1), np.ones((2, 4), np.int64), "C-contiguous"),
        ([[1.0]], np.ones((1, 1), np.int64), "numpy array"),
    ],
    ids=["float64-states", "2d-states", "mask-shape", "int32-mask", "non-contiguous", "list"],
)
def test_bad_arguments_are_named(states, mask, message):
    with pytest.raises((TypeError, ValueError), match=message):
        _core.pool(states, mask, "mean", False)


def test_unknown_mode_and_isa():
    states = np.zeros((1, 1, 4), np.float32)
    mask = np.ones((1, 1), np.int64)
    with pytest.raises(ValueError, match="unknown pooling mode 'max'"):
        _core.pool(states, mask, "max", False)
    with pytest.raises(ValueError, match="not available on this CPU"):
        _core.pool(states, mask, "mean", False, "sse9")


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 6),
    seq=st.integers(1, 12),
    dim=st.integers(1, 70),
    mode=st.sampled_from(MODES),
    normalize=st.booleans(),
    isa=st.sampled_from(ISAS),
    seed=st.integers(0, 2**32 - 1),
    mask_density=st.floats(0.0, 1.0),
)
def test_property_kernels_match_reference(batch, seq, dim, mode, normalize, isa, seed, mask_density):
    """Random shapes and arbitrary masks (holes, all-zero rows) agree with the reference."""
    rng = np.random.default_rng(seed)
    states = (rng.standard_normal((batch, seq, dim)) * rng.uniform(0.01, 100)).astype(np.float32)
    mask = (rng.random((batch, seq)) < mask_density).astype(np.int64)
    got = _core.pool(states, mask, mode, normalize, isa)
    want = pool_reference(states, mask, mode, normalize)
    assert np.isfinite(got).all()
    scale = np.abs(want).max(initial=0.0) + 1e-30
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
