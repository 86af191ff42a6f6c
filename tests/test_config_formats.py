"""Both generations of sentence-transformers config files, include_prompt, and what is refused.

sentence-transformers < 5 wrote ``pooling_mode_*_token`` booleans and ``sentence_transformers.models.*``
module types; 5.x writes ``{"pooling_mode": ..., "embedding_dimension": ..., "include_prompt": ...}``
and ``sentence_transformers.sentence_transformer.modules.*`` / ``sentence_transformers.base.modules.*``.
The tiny lookup models of conftest.py give exact answers to compare with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECIAL, build_tokenizer, write_model_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import pool_reference

from fastembed_native import _core
from fastembed_native.engine import Embedder, read_model_dir, read_modules

NEW_TYPES = {
    "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
    "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    "Normalize": "sentence_transformers.sentence_transformer.modules.normalize.Normalize",
    "Dense": "sentence_transformers.base.modules.dense.Dense",
    "Dropout": "sentence_transformers.sentence_transformer.modules.dropout.Dropout",
}


def _special_tokenizer():
    """The tiny tokenizer with its special tokens registered, as a saved HF tokenizer has them."""
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens(SPECIAL)
    return tokenizer


def _write_modules(root: Path, names: list[str], pooling_config: dict) -> None:
    modules = [
        {"idx": i, "name": str(i), "path": "1_Pooling" if n == "Pooling" else "", "type": NEW_TYPES.get(n, n)}
        for i, n in enumerate(names)
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))


@pytest.mark.parametrize(
    ("mode", "expected"), [("cls", "cls"), ("mean", "mean"), ("lasttoken", "last_token")], ids=str
)
def test_sentence_transformers_5_pooling_config(tmp_path, mode, expected):
    write_model_dir(tmp_path / "m")
    _write_modules(
        tmp_path / "m",
        ["Transformer", "Pooling", "Normalize"],
        {"embedding_dimension": 7, "pooling_mode": mode, "include_prompt": True},
    )
    config = read_model_dir(tmp_path / "m")
    assert (config.pooling, config.normalize, config.include_prompt) == (expected, True, True)
    assert config.modules.pooling_format == "pooling_mode"
    assert config.modules.modules == ("Transformer", "Pooling", "Normalize")


@pytest.mark.parametrize(
    ("booleans", "expected"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_lasttoken": True}, "last_token"),
        # sentence-transformers reads booleans that are all false as mean; so do we.
        ({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False}, "mean"),
    ],
    ids=["cls", "lasttoken", "all-false"],
)
def test_legacy_pooling_booleans_and_module_paths(tmp_path, booleans, expected):
    write_model_dir(tmp_path / "m", normalize=True)  # conftest writes sentence_transformers.models.* types
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 7, **booleans})
    )
    config = read_model_dir(tmp_path / "m")
    assert (config.pooling, config.normalize) == (expected, True)
    assert config.modules.pooling_format == "pooling_mode_* booleans"


def test_pooling_mode_wins_over_booleans_and_missing_keys_mean_mean(tmp_path):
    write_model_dir(tmp_path / "m")
    pooling = tmp_path / "m" / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_mode": "cls", "pooling_mode_mean_tokens": True}))
    assert read_model_dir(tmp_path / "m").pooling == "cls"
    pooling.write_text(json.dumps({"embedding_dimension": 7}))
    config = read_model_dir(tmp_path / "m")
    assert (config.pooling, config.modules.pooling_format) == ("mean", "default")


@pytest.mark.parametrize(
    ("pooling_config", "message"),
    [
        ({"pooling_mode": "max"}, "pooling mode 'max' is not supported"),
        ({"pooling_mode": ["cls", "mean"]}, "pooling mode 'cls \\+ mean' is not supported"),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, "'cls \\+ mean'"),
        ({"pooling_mode": "weightedmean"}, "'weightedmean' is not supported"),
    ],
    ids=["max", "concatenated", "two-booleans", "weightedmean"],
)
def test_unsupported_pooling_is_refused_by_name(tmp_path, pooling_config, message):
    write_model_dir(tmp_path / "m")
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    with pytest.raises(ValueError, match=message):
        read_model_dir(tmp_path / "m")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["Transformer", "Pooling", "Dense", "Normalize"],
            r"entry 2 \('sentence_transformers.*Dense'\) is a Dense",
        ),
        (
            ["Transformer", "Pooling", "sentence_transformers.models.LayerNorm"],
            "is a LayerNorm module after pooling",
        ),
        (
            ["Transformer", "Pooling", "my_package.Projection"],
            "custom code from outside sentence-transformers",
        ),
        (["Transformer", "Pooling", "Pooling"], "a second Pooling module"),
    ],
    ids=["dense", "layernorm", "custom", "two-poolings"],
)
def test_modules_that_cannot_be_reproduced_are_refused_never_dropped(tmp_path, names, message):
    write_model_dir(tmp_path / "m")
    _write_modules(tmp_path / "m", names, {"pooling_mode": "mean"})
    with pytest.raises(ValueError, match=message):
        read_model_dir(tmp_path / "m")
    assert read_modules(tmp_path / "m").unsupported  # listed (for inspect) without raising


def test_dropout_is_inert_and_transformer_task_is_checked(tmp_path):
    write_model_dir(tmp_path / "m")
    _write_modules(tmp_path / "m", ["Transformer", "Dropout", "Pooling"], {"pooling_mode": "cls"})
    assert read_model_dir(tmp_path / "m").pooling == "cls"
    (tmp_path / "m" / "sentence_bert_config.json").write_text(
        json.dumps({"transformer_task": "text-generation"})
    )
    with pytest.raises(ValueError, match="transformer_task 'text-generation'"):
        read_model_dir(tmp_path / "m")


def test_do_lower_case_lowercases_like_sentence_transformers(tmp_path):
    write_model_dir(tmp_path / "m")  # a WordLevel tokenizer without a normaliser: case matters
    model = Embedder(tmp_path / "m")
    assert not np.allclose(model.embed("HELLO World"), model.embed("hello world"))
    (tmp_path / "m" / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 16, "do_lower_case": True})
    )
    lowered = Embedder(tmp_path / "m")
    np.testing.assert_array_equal(lowered.embed("HELLO World"), lowered.embed("hello world"))


# -- include_prompt: false ---------------------------------------------------------------------


def _expected(model, encodings, skip, mode, normalize):
    """Each text alone (no padding at all), pooled in float64 with its first `skip` tokens left out."""
    rows = []
    for enc in encodings:
        ids = np.array([enc.ids])
        positions = np.arange(len(enc.ids))[None, :] if model.position is not None else None
        states = model.states(ids, positions=positions)
        rows.append(pool_reference(states, np.ones_like(ids), mode, normalize, skip)[0])
    return np.array(rows)


@pytest.mark.parametrize(
    ("pooling", "padding_side"),
    [("mean", "right"), ("mean", "left"), ("cls", "right"), ("last_token", "left")],
    ids=lambda v: v,
)
def test_include_prompt_false_leaves_the_prompt_out_of_pooling_only(tmp_path, pooling, padding_side):
    model = write_model_dir(
        tmp_path / "m",
        pooling=pooling,
        padding_side=padding_side,
        normalize=True,
        positions=padding_side == "left",
        tokenizer=_special_tokenizer(),
    )
    _write_modules(
        tmp_path / "m",
        ["Transformer", "Pooling", "Normalize"],
        {"embedding_dimension": 7, "pooling_mode": pooling.replace("_", ""), "include_prompt": False},
    )
    embedder = Embedder(tmp_path / "m", threads=1)
    prompt = "the quick "
    # The prompt alone is [CLS] the quick [SEP]; without its trailing [SEP], 3 tokens.
    assert embedder.prompt_tokens(prompt) == 3
    texts = ["hello world flag embedding", "fox", "", "lazy dog over the brown fox jumps"]  # mixed lengths
    got = embedder.embed(texts, prompt=prompt, batch_size=4)
    encodings = embedder.tokenizer.encode([prompt + t for t in texts])
    want = _expected(model, encodings, 3, pooling, True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Attention is unaffected here (a lookup model), so the only difference is the pooling:
    with_prompt = Embedder(tmp_path / "m", include_prompt=True).embed(texts, prompt=prompt)
    np.testing.assert_allclose(
        with_prompt, _expected(model, encodings, 0, pooling, True), rtol=1e-5, atol=1e-6
    )
    if pooling != "last_token":  # the last token is the same either way
        assert not np.allclose(got, with_prompt, atol=1e-3)


def test_include_prompt_false_without_prompt_changes_nothing(tmp_path):
    write_model_dir(tmp_path / "m", tokenizer=_special_tokenizer())
    _write_modules(
        tmp_path / "m", ["Transformer", "Pooling"], {"pooling_mode": "mean", "include_prompt": False}
    )
    model = Embedder(tmp_path / "m")
    assert model.config.include_prompt is False and model.prompt_tokens("") == 0
    reference = Embedder(tmp_path / "m", include_prompt=True)
    np.testing.assert_array_equal(
        model.embed(["hello world", "fox"]), reference.embed(["hello world", "fox"])
    )


def test_include_prompt_false_on_a_pooled_graph_is_refused(tmp_path):
    write_model_dir(tmp_path / "m", pooled_output=True, tokenizer=_special_tokenizer())
    _write_modules(
        tmp_path / "m", ["Transformer", "Pooling"], {"pooling_mode": "mean", "include_prompt": False}
    )
    model = Embedder(tmp_path / "m")
    model.embed(["hello world"])  # no prompt: nothing to leave out
    with pytest.raises(ValueError, match="already pooled inside the graph"):
        model.embed(["hello world"], prompt="the quick ")


@settings(max_examples=80, deadline=None)
@given(
    batch=st.integers(1, 5),
    seq=st.integers(1, 10),
    dim=st.integers(1, 40),
    mode=st.sampled_from(["mean", "cls", "last_token"]),
    skip=st.integers(0, 6),
    normalize=st.booleans(),
    left=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_skip_prefix_matches_reference(batch, seq, dim, mode, skip, normalize, left, seed):
    """Padded rows of any length, left or right, with 0..6 prompt tokens left out, odd sizes."""
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((batch, seq, dim)).astype(np.float32)
    lengths = rng.integers(0, seq + 1, size=batch)
    positions = np.arange(seq)
    mask = (positions >= seq - lengths[:, None]) if left else (positions < lengths[:, None])
    mask = mask.astype(np.int64)
    for isa in _core.supported_isas():
        got = _core.pool(states, mask, mode, normalize, isa, skip_prefix=skip)
        want = pool_reference(states, mask, mode, normalize, skip)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_negative_skip_prefix_is_refused():
    with pytest.raises(ValueError, match="skip_prefix must be >= 0, got -1"):
        _core.pool(np.zeros((1, 2, 3), np.float32), np.ones((1, 2), np.int64), "mean", skip_prefix=-1)
