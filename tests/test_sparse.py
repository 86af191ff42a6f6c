"""SPLADE on the engine's sparse head, against sentence-transformers' SparseEncoder (5.7).

Tiny random ``BertForMaskedLM`` models saved by the installed sentence-transformers as a
``SparseEncoder`` (Transformer + SpladePooling), exported with ``export_model``, then encoded by both
on texts past max length, several scripts and empty texts: the same non-zero indices, values within
1e-4 of the row's largest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from families import MAX_SEQ_LENGTH, MIXED_TEXTS, _tokenizer

from fastembed_native import SparseEmbedding, SparseTextEmbedding, TextEmbedding
from fastembed_native.models.parity import SPARSE_TOLERANCE, sparse_difference

#: (pooling, activation, first module, architecture): sentence-transformers 5.7's Transformer(fill-mask)
#: and the MLMTransformer that 5.0-5.6 saved (the layout of the SPLADE models on the hub); BERT,
#: DistilBERT (no token type ids) and XLM-R (Unigram tokenizer, <s> </s>).
CONFIGS = [
    ("max", "relu", "Transformer", "bert"),
    ("sum", "log1p_relu", "MLMTransformer", "bert"),
    ("max", "relu", "Transformer", "distilbert"),
    ("max", "relu", "Transformer", "xlm-roberta"),
]


def _splade(root: Path, pooling: str, activation: str, first_module: str, architecture: str = "bert") -> Path:
    """A tiny random fill-mask checkpoint (BERT with WordPiece, DistilBERT without token types, or
    XLM-R with a Unigram tokenizer) saved by sentence-transformers' SparseEncoder."""
    import warnings

    import torch
    import transformers as tf
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    tok, specials = _tokenizer("unigram" if architecture == "xlm-roberta" else "wordpiece", architecture)
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if architecture == "bert" else None
    hf_tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=MAX_SEQ_LENGTH,
        model_input_names=inputs or ["input_ids", "attention_mask"],  # DistilBERT and XLM-R: no types
        **specials,
    )
    sizes = dict(vocab_size=tok.get_vocab_size(), max_position_embeddings=130)
    torch.manual_seed(2)
    if architecture == "bert":
        config = tf.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **sizes
        )
        model = tf.BertForMaskedLM(config)
        bias = model.cls.predictions.bias
    elif architecture == "distilbert":
        config = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **sizes)
        model = tf.DistilBertForMaskedLM(config)
        bias = model.vocab_projector.bias
    else:
        config = tf.XLMRobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            type_vocab_size=1, pad_token_id=hf_tokenizer.pad_token_id, **sizes,
        )  # fmt: skip
        model = tf.XLMRobertaForMaskedLM(config)
        bias = model.lm_head.bias
    with torch.no_grad():  # a random MLM head activates every word; shift it so that each text keeps
        if architecture == "bert":  # a few to a hundred words (logits here: std 0.11)
            bias.sub_(0.25)
        else:  # the same share of this model's logits: their 99.5th percentile on real text
            sample = hf_tokenizer(list(MIXED_TEXTS[:6]), padding=True, return_tensors="pt")
            sample.pop("token_type_ids", None)
            bias.sub_(torch.quantile(model.eval()(**sample).logits.flatten(), 0.995))
    checkpoint = root / ".hf"
    model.save_pretrained(checkpoint)
    hf_tokenizer.save_pretrained(checkpoint)
    if first_module == "Transformer":
        transformer = Transformer(str(checkpoint), transformer_task="fill-mask")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            transformer = MLMTransformer(str(checkpoint))
    pooling_module = SpladePooling(pooling, activation_function=activation)
    encoder = SparseEncoder(modules=[transformer, pooling_module], device="cpu")
    out = root / "st"
    encoder.save(str(out))
    return out


@pytest.fixture(scope="module", params=CONFIGS, ids=["-".join(c) for c in CONFIGS])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    from fastembed_native.models import export_model

    root = tmp_path_factory.mktemp("splade")
    source = _splade(root, *request.param)
    report = export_model(source, root / "onnx-model")
    assert report.max_score_difference is not None and report.max_score_difference <= SPARSE_TOLERANCE
    return source, report.model_dir


def _reference(source: Path, texts, **kwargs) -> np.ndarray:
    from sentence_transformers import SparseEncoder

    encoded = SparseEncoder(str(source), device="cpu").encode(list(texts), convert_to_tensor=True, **kwargs)
    return encoded.to_dense().numpy()


def _dense(embeddings: list[SparseEmbedding], size: int) -> np.ndarray:
    return np.stack([e.to_dense(size) for e in embeddings])


def test_sparse_vectors_equal_sentence_transformers(exported):
    source, model_dir = exported
    model = SparseTextEmbedding(model_dir)
    ours = model.embed(list(MIXED_TEXTS))
    reference = _reference(source, MIXED_TEXTS)
    assert len(ours) == len(MIXED_TEXTS)
    for e in ours:
        assert e.indices.dtype == np.int32 and e.values.dtype == np.float32
        assert np.all(np.diff(e.indices) > 0) and np.all(e.values > 0)
    assert sparse_difference(_dense(ours, model.vocab_size), reference) <= SPARSE_TOLERANCE
    # Every text activates some words and leaves most off: really sparse, neither empty nor dense.
    assert all(0 < len(e) < model.vocab_size // 2 for e in ours), [len(e) for e in ours]


def test_max_active_dims_keeps_the_largest_values(exported):
    source, model_dir = exported
    model = SparseTextEmbedding(model_dir)
    ours = model.embed(list(MIXED_TEXTS), max_active_dims=7)
    assert all(len(e) <= 7 for e in ours)
    reference = _reference(source, MIXED_TEXTS, max_active_dims=7)
    assert sparse_difference(_dense(ours, model.vocab_size), reference) <= SPARSE_TOLERANCE


def test_logits_budget_cuts_batches_not_results(exported):
    """With room for 40 tokens of logits per Run, every batch is small, and the vectors are the same."""
    _, model_dir = exported
    whole = SparseTextEmbedding(model_dir)
    vocab = whole.vocab_size
    small = SparseTextEmbedding(model_dir, logits_budget_bytes=40 * vocab * 4, parallel_runs=1)
    texts = list(MIXED_TEXTS) * 3
    expected = _dense(whole.embed(texts), vocab)
    small.engine.stats(reset=True)
    got = _dense(small.embed(texts), vocab)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    stats = small.engine.stats()
    # A batch is one text at least; every text here has at most MAX_SEQ_LENGTH tokens.
    assert stats["computed_tokens"] <= stats["runs"] * max(40, MAX_SEQ_LENGTH)
    assert stats["runs"] >= stats["real_tokens"] / max(40, MAX_SEQ_LENGTH)


def test_fastembed_shapes_and_names(exported):
    _, model_dir = exported
    model = SparseTextEmbedding(model_name=str(model_dir))
    (one,) = model.embed("hello world")
    assert isinstance(one, SparseEmbedding)
    assert one.as_dict() == dict(zip(one.indices.tolist(), one.values.tolist(), strict=True))
    assert set(one.as_object()) == {"indices", "values"}
    queries = model.query_embed(["hello world"])
    passages = model.passage_embed(["hello world"])
    np.testing.assert_array_equal(queries[0].indices, one.indices)
    np.testing.assert_array_equal(passages[0].values, one.values)
    assert model.embed([]) == []
    empty = model.embed([""])[0]  # [CLS] [SEP] alone still activate words, as in sentence-transformers
    assert empty.indices.dtype == np.int32


def test_bad_input_names_the_problem(exported):
    _, model_dir = exported
    model = SparseTextEmbedding(model_dir)
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, not int"):
        model.embed(["ok", 3])
    with pytest.raises(ValueError, match="max_active_dims must be a positive int"):
        model.embed(["ok"], max_active_dims=0)
    with pytest.raises(TypeError, match="no 'pooling' option"):
        SparseTextEmbedding(model_dir, pooling="mean")
    with pytest.raises(ValueError, match="load it with SparseTextEmbedding"):
        TextEmbedding(model_dir)


def test_inference_free_queries_run_no_model(tmp_path):
    """An inference-free model (sentence-transformers' Router: SparseStaticEmbedding for queries,
    SPLADE for documents): queries are a lookup of static weights, equal to ``encode_query``, and
    documents equal ``encode_document``."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer

    from fastembed_native.models import export_model

    splade = _splade(tmp_path, "max", "relu", "Transformer")
    tokenizer = AutoTokenizer.from_pretrained(str(splade))
    torch.manual_seed(3)
    weights = torch.rand(tokenizer.vocab_size) * (
        torch.rand(tokenizer.vocab_size) > 0.3
    )  # some words weigh 0
    query = SparseStaticEmbedding(tokenizer=tokenizer, weight=weights, frozen=True)
    document = [Transformer(str(splade), transformer_task="fill-mask"), SpladePooling("max")]
    source = tmp_path / "inference-free"
    router = Router.for_query_document(query_modules=[query], document_modules=document)
    SparseEncoder(modules=[router], device="cpu").save(str(source))

    report = export_model(source, tmp_path / "exported")
    assert report.max_score_difference is not None and report.max_score_difference <= SPARSE_TOLERANCE
    model = SparseTextEmbedding(report.model_dir, parallel_runs=1)
    assert model.static_query is not None
    reference = SparseEncoder(str(source), device="cpu")
    model.engine.stats(reset=True)
    queries = model.query_embed(list(MIXED_TEXTS))
    assert model.engine.stats()["runs"] == 0
    expected = reference.encode_query(list(MIXED_TEXTS), convert_to_tensor=True).to_dense().numpy()
    assert sparse_difference(_dense(queries, model.vocab_size), expected) <= SPARSE_TOLERANCE
    documents = model.passage_embed(list(MIXED_TEXTS))
    expected = reference.encode_document(list(MIXED_TEXTS), convert_to_tensor=True).to_dense().numpy()
    assert sparse_difference(_dense(documents, model.vocab_size), expected) <= SPARSE_TOLERANCE
    top = model.query_embed(["hello world, what is the capital of France?"], max_active_dims=2)[0]
    assert len(top) == 2
    with pytest.raises(ValueError, match=r"texts\[1\] cannot be encoded as UTF-8"):
        model.query_embed(["fine", "\ud800"])


def test_the_registry_knows_common_sparse_and_multi_vector_models():
    from fastembed_native import LateInteractionTextEmbedding
    from fastembed_native.models import canonical_model_name

    sparse = {m["model"]: m for m in SparseTextEmbedding.list_supported_models()}
    assert sparse["naver/splade-v3"]["vocab_size"] == 30522
    assert sparse["opensearch-project/opensearch-neural-sparse-encoding-doc-v3-distill"]["inference_free"]
    late = {m["model"]: m for m in LateInteractionTextEmbedding.list_supported_models()}
    assert late["colbert-ir/colbertv2.0"]["dim"] == 128
    assert canonical_model_name("SPLADE-v3") == "naver/splade-v3"
    assert canonical_model_name("answerai-colbert-small-v1") == "answerdotai/answerai-colbert-small-v1"


def test_fastembed_layout_without_modules_is_read_as_splade(exported, tmp_path):
    """fastembed's SPLADE directories hold the graph and the tokenizer, no sentence-transformers
    files: read as max pooling of log1p(relu) (what fastembed computes), and refused by
    TextEmbedding instead of mean-pooling vocabulary logits."""
    import shutil

    from fastembed_native.engine.sparse import is_sparse_model

    _, model_dir = exported
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copytree(model_dir / "onnx", bare / "onnx")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(model_dir / name, bare / name)
    assert is_sparse_model(bare)
    model = SparseTextEmbedding(bare)
    assert (model.splade.pooling, model.splade.activation) == ("max", "relu")
    full = SparseTextEmbedding(model_dir)
    if (full.splade.pooling, full.splade.activation) == ("max", "relu"):  # same rule: same vectors
        for ours, want in zip(model.embed(list(MIXED_TEXTS)), full.embed(list(MIXED_TEXTS)), strict=True):
            np.testing.assert_array_equal(ours.indices, want.indices)
    with pytest.raises(ValueError, match="outputs vocabulary logits .* load it with SparseTextEmbedding"):
        TextEmbedding(bare)


def test_sparse_difference_sees_values_and_indices():
    """The parity measure itself: a moved value counts relative to the row's largest, an index that
    is on in one vector and off in the other is infinitely far."""
    a = np.array([[0.0, 2.0, 1.0, 0.0]], dtype=np.float32)
    assert sparse_difference(a, a.copy()) == 0.0
    assert sparse_difference(a, a + np.float32([[0, 0, 0.02, 0]])) == pytest.approx(0.01)
    assert sparse_difference(a, a + np.float32([[0, 0, 0, 0.5]])) == float("inf")
