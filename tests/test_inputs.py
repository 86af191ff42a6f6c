"""Hostile and odd input: every case gets a result or a clear exception, never a crash."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from conftest import build_tokenizer, write_model_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastembed_native import TextEmbedding

WORDS = ["hello", "world", "flag", "embedding", "the", "quick", "brown", "fox", "unknownword", "!"]


@pytest.fixture
def model(encoder_dir) -> TextEmbedding:
    return TextEmbedding(encoder_dir.path)


def test_empty_list_gives_empty_array(model):
    out = model.embed([])
    assert out.shape == (0, model.dim) and out.dtype == np.float32


def test_a_bare_string_is_one_text(model):
    one = model.embed("hello world")
    assert one.shape == (1, model.dim)
    np.testing.assert_array_equal(one, model.embed(["hello world"]))


def test_any_iterable_of_strings(model):
    np.testing.assert_array_equal(model.embed(t for t in ("a", "b")), model.embed(["a", "b"]))


@pytest.mark.parametrize(
    ("item", "type_name"),
    [(None, "NoneType"), (3, "int"), (2.5, "float"), (b"bytes", "bytes"), (["nested"], "list")],
    ids=["None", "int", "float", "bytes", "list"],
)
def test_non_string_items_name_index_and_type(model, item, type_name):
    with pytest.raises(TypeError, match=rf"texts\[2\] must be str, not {type_name}"):
        model.embed(["ok", "fine", item, "never reached"])


@pytest.mark.parametrize("texts", [None, 42, b"raw bytes"], ids=["None", "int", "bytes"])
def test_texts_that_are_not_a_sequence(model, texts):
    with pytest.raises(TypeError, match="texts must be a string or a sequence of strings"):
        model.embed(texts)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_bad_batch_size(model, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.embed(["hello"], batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        TextEmbedding(model.model_dir, batch_size=batch_size)


def test_empty_and_whitespace_strings_embed(model):
    out = model.embed(["", " ", "\n\t  ", "hello"])
    assert np.isfinite(out).all()
    # [CLS] [SEP] only: the same tokens, so the same vector, and not zero.
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    assert np.linalg.norm(out[0]) == pytest.approx(1.0, rel=1e-5)


def test_text_with_no_tokens_is_the_zero_vector(tmp_path):
    tiny = write_model_dir(
        tmp_path / "m", tokenizer=build_tokenizer(with_special_tokens=False), normalize=True
    )
    out = TextEmbedding(tiny.path).embed(["", "hello", "   "])
    assert not out[0].any() and not out[2].any() and np.isfinite(out).all()
    assert np.linalg.norm(out[1]) == pytest.approx(1.0, rel=1e-5)


def test_lone_surrogate_is_a_value_error_naming_the_index(model):
    with pytest.raises(ValueError, match=r"texts\[1\] cannot be encoded as UTF-8"):
        model.embed(["fine", "bad \udc80 text", "fine"])
    assert model.embed(["fine"]).shape == (1, model.dim)  # and the model still works


def test_huge_string_is_truncated(model):
    text = "hello world " * 1_000_000  # 12 MB
    np.testing.assert_allclose(model.embed([text]), model.embed(["hello world " * 20]), rtol=1e-6)


def test_max_length_too_small_for_special_tokens(encoder_dir):
    with pytest.raises(ValueError, match="max_length=2 leaves no room for text"):
        TextEmbedding(encoder_dir.path, max_length=2)


def test_loading_never_executes_code_from_the_model_dir(encoder_dir, tmp_path):
    """Pickles, Python files and remote-code configs in a model dir are never run."""
    witness = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(witness), "w"))

    for name in ("pytorch_model.bin", "model.pkl", "tokenizer.pkl"):
        (encoder_dir.path / name).write_bytes(pickle.dumps(Payload()))
    (encoder_dir.path / "modeling_evil.py").write_text(f"open({str(witness)!r}, 'w')\n")
    config = json.loads((encoder_dir.path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (encoder_dir.path / "config.json").write_text(json.dumps(config))
    model = TextEmbedding(encoder_dir.path)
    model.embed(["hello world"])
    assert not witness.exists()


def test_config_files_that_are_not_json(encoder_dir):
    (encoder_dir.path / "modules.json").write_text("{not json")
    with pytest.raises(ValueError, match="modules.json is not valid JSON"):
        TextEmbedding(encoder_dir.path)


# -- invariants of embed, on random texts ----------------------------------------------------------

texts_strategy = st.lists(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=20).map(" ".join), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts_strategy, batch_size=st.integers(1, 13), seed=st.integers(0, 1000))
def test_property_embed_invariants(model, texts, batch_size, seed):
    """Each row equals its text embedded alone; any permutation of the input permutes the rows;
    the batch size changes nothing beyond float tolerance."""
    batched = model.embed(texts, batch_size=batch_size)
    alone = np.vstack([model.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
    order = np.random.default_rng(seed).permutation(len(texts))
    permuted = model.embed([texts[i] for i in order], batch_size=batch_size)
    np.testing.assert_allclose(permuted, batched[order], rtol=1e-5, atol=1e-6)
