"""The names fastembed users write, short registry names, and limits refused up front (issue 16).

Each case here failed before its fix: a TypeError naming the internal ``Embedder``, a short name
refused as a missing directory, a ``max_length`` past the position table accepted and then failing
inside ONNX Runtime on the first long text.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import MAX_POSITIONS

from fastembed_native import TextEmbedding
from fastembed_native.models import DEFAULT_MODEL, canonical_model_name, model_info, resolve_model

TEXTS = ["hello world", "the quick brown fox", "flag"]


# -- fastembed's names ------------------------------------------------------------------------------
def test_query_and_passage_embed_are_embed_query_and_embed_passage(encoder_dir):
    model = TextEmbedding(encoder_dir.path, prompts={"query": "flag ", "passage": "dog "})
    np.testing.assert_array_equal(model.query_embed(TEXTS), model.embed_query(TEXTS))
    np.testing.assert_array_equal(model.query_embed(TEXTS), model.embed(TEXTS, prompt="flag "))
    np.testing.assert_array_equal(model.passage_embed(TEXTS), model.embed(TEXTS, prompt="dog "))
    # fastembed yields one array per text; iterating ours gives the same rows.
    rows = list(model.passage_embed(TEXTS))
    assert len(rows) == 3 and rows[0].shape == (model.dim,)


def test_query_and_passage_take_dimensions(encoder_dir):
    model = TextEmbedding(encoder_dir.path, prompts={"query": "flag ", "passage": "dog "})
    full = model.embed(TEXTS, prompt="flag ")
    short = model.embed_query(TEXTS, dimensions=3)
    expected = full[:, :3] / np.linalg.norm(full[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, rtol=1e-6)
    assert model.embed_passage(TEXTS, dimensions=2).shape == (3, 2)
    assert model.query_embed("hello", dimensions=4).shape == (1, 4)
    with pytest.raises(ValueError, match="dimensions must be an int from 1 to 7"):
        model.embed_passage(TEXTS, dimensions=8)


def test_embedding_size_and_get_embedding_size(encoder_dir):
    model = TextEmbedding(encoder_dir.path)
    assert model.embedding_size == model.dim == 7
    assert TextEmbedding.get_embedding_size("BAAI/bge-small-en-v1.5") == 384
    assert TextEmbedding.get_embedding_size("all-MiniLM-L6-v2") == 384
    with pytest.raises(ValueError, match="not in the registry"):
        TextEmbedding.get_embedding_size("org/unknown")


def test_list_supported_models_has_fastembed_keys():
    models = TextEmbedding.list_supported_models()
    default = next(m for m in models if m["model"] == DEFAULT_MODEL)
    assert default["dim"] == 384 and default["description"]


def test_cache_dir_is_the_model_cache(encoder_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("FASTEMBED_NATIVE_CACHE", raising=False)
    cache = tmp_path / "cache"
    entry = cache / "org--tiny"
    entry.parent.mkdir()
    entry.symlink_to(encoder_dir.path, target_is_directory=True)
    model = TextEmbedding("org/tiny", cache_dir=cache)
    assert model.model_dir == entry
    with pytest.raises(Exception, match="not found"):
        TextEmbedding("org/tiny", cache_dir=tmp_path / "elsewhere")


def test_specific_model_path_is_a_local_directory(encoder_dir):
    model = TextEmbedding("org/any-name", specific_model_path=encoder_dir.path)
    assert model.model_dir == encoder_dir.path
    np.testing.assert_array_equal(model.embed(TEXTS), TextEmbedding(encoder_dir.path).embed(TEXTS))


def test_lazy_load_defers_the_session(encoder_dir, monkeypatch):
    from fastembed_native import _core

    expected = TextEmbedding(encoder_dir.path).embed(TEXTS)
    made = []
    real = _core.Session

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(_core, "Session", counting)
    model = TextEmbedding(encoder_dir.path, lazy_load=True, parallel_runs=1)
    assert made == []
    assert model.max_length == 16  # what the directory says needs no session
    vectors = model.embed(TEXTS)
    assert len(made) == 1
    assert model.dim == 7 and model.embedding_size == 7
    np.testing.assert_array_equal(vectors, expected)
    model.embed(TEXTS)
    assert len(made) == 1


def test_lazy_load_still_checks_the_directory_up_front(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        TextEmbedding(tmp_path / "missing", lazy_load=True)


def test_parallel_has_fastembed_meaning_or_says_what_to_use(encoder_dir):
    model = TextEmbedding(encoder_dir.path, threads=2, parallel_runs=2)
    expected = model.embed(TEXTS)
    for parallel in (None, 0, 2):  # default threading / all cores / the runs it was made with
        np.testing.assert_array_equal(model.embed(TEXTS, parallel=parallel), expected)
    with pytest.raises(ValueError, match=r"parallel=3.*TextEmbedding\(\.\.\., parallel_runs=3\)"):
        model.embed(TEXTS, parallel=3)
    with pytest.raises(ValueError, match="parallel must be None or an int >= 0"):
        model.embed(TEXTS, parallel=-1)


def test_cuda_flag_asks_for_the_cuda_provider(encoder_dir):
    # No GPU here: the request must reach provider resolution, which names the missing package.
    with pytest.raises(Exception, match="CUDAExecutionProvider"):
        TextEmbedding(encoder_dir.path, cuda=True)
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider"):
        model = TextEmbedding(encoder_dir.path, cuda=True, device_id=0, fallback=True)
    assert model.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="one device per TextEmbedding"):
        TextEmbedding(encoder_dir.path, cuda=True, device_ids=[0, 1])


def test_unknown_option_names_the_public_class_and_its_options(encoder_dir):
    with pytest.raises(TypeError) as info:
        TextEmbedding(encoder_dir.path, batchsize=8)
    message = str(info.value)
    assert "TextEmbedding" in message and "Embedder" not in message
    assert "'batchsize'" in message and "batch_size" in message


# -- short names ------------------------------------------------------------------------------------
def test_short_registry_names_resolve_to_the_full_id():
    assert canonical_model_name("all-MiniLM-L6-v2") == DEFAULT_MODEL
    assert canonical_model_name("ALL-minilm-l6-V2") == DEFAULT_MODEL
    assert canonical_model_name("bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert canonical_model_name("sentence-transformers/all-MiniLM-L6-v2") == DEFAULT_MODEL
    assert canonical_model_name("some-dir") == "some-dir"
    assert model_info("all-MiniLM-L6-v2").model == DEFAULT_MODEL


def test_short_name_resolves_through_the_cache(minilm_dir, model_cache):
    assert resolve_model("all-MiniLM-L6-v2", cache=model_cache) == minilm_dir
    model = TextEmbedding("all-MiniLM-L6-v2", cache_dir=model_cache)
    assert model.dim == 384


def test_a_local_directory_wins_over_a_short_name(encoder_dir, tmp_path, monkeypatch):
    local = tmp_path / "all-MiniLM-L6-v2"
    local.symlink_to(encoder_dir.path, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("all-MiniLM-L6-v2").resolve() == local.resolve()


def test_an_unknown_short_name_is_still_a_missing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_model("not-a-model")


# -- max_length past the model's positions ----------------------------------------------------------
def test_max_length_above_the_position_table_is_refused_up_front(encoder_dir):
    with pytest.raises(ValueError, match=rf"max_length={MAX_POSITIONS + 1}.*{MAX_POSITIONS} positions"):
        TextEmbedding(encoder_dir.path, max_length=MAX_POSITIONS + 1)
    assert TextEmbedding(encoder_dir.path, max_length=MAX_POSITIONS).max_length == MAX_POSITIONS


def test_roberta_position_offset_counts(encoder_dir):
    # RoBERTa / XLM-R number positions from pad_token_id + 1: 514 table rows hold 512 tokens.
    config_path = encoder_dir.path / "config.json"
    config = json.loads(config_path.read_text())
    config.update(model_type="xlm-roberta", max_position_embeddings=MAX_POSITIONS, pad_token_id=1)
    config_path.write_text(json.dumps(config))
    limit = MAX_POSITIONS - 2
    with pytest.raises(ValueError, match=rf"{limit} tokens"):
        TextEmbedding(encoder_dir.path, max_length=limit + 1)
    assert TextEmbedding(encoder_dir.path, max_length=limit).max_length == limit


@pytest.mark.real_model
def test_real_model_max_length_past_512_is_refused_before_a_long_text(minilm_dir):
    with pytest.raises(ValueError, match="512"):
        TextEmbedding(minilm_dir, max_length=1000)
    # The limit itself works end to end on a long text (the old failure was inside ORT here).
    model = TextEmbedding(minilm_dir, max_length=512)
    assert model.embed(["word " * 2000]).shape == (1, 384)
