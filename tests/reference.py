"""float64 numpy references for pooling: what the C++ kernels must reproduce."""

from __future__ import annotations

import numpy as np


def pool_reference(
    states: np.ndarray, mask: np.ndarray, mode: str, normalize: bool, skip_prefix: int = 0
) -> np.ndarray:
    """Pool [batch, seq, dim] states under a [batch, seq] mask, in float64.

    CLS is the first real token (sentence-transformers 5: the mask's argmax). ``skip_prefix`` drops
    each row's first real tokens (a prompt) from the pooling mask, as include_prompt=False does.
    A row with no real token (all-zero mask) pools to the zero vector in every mode.
    """
    states = states.astype(np.float64)
    real = mask != 0
    if skip_prefix:
        real = real & (np.cumsum(real, axis=1) > skip_prefix)
    has_token = real.any(axis=1)
    if mode == "mean":
        counts = np.maximum(real.sum(axis=1, keepdims=True), 1)
        out = (states * real[..., None]).sum(axis=1) / counts
    elif mode == "cls":
        out = states[np.arange(states.shape[0]), np.argmax(real, axis=1)]
    elif mode == "last_token":
        last = states.shape[1] - 1 - np.argmax(real[:, ::-1], axis=1)
        out = states[np.arange(states.shape[0]), last]
    else:
        raise ValueError(mode)
    out[~has_token] = 0.0
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.maximum(norms, 1e-12)
    return out
