"""Cross-encoder rerankers on the engine's score head, against sentence-transformers' CrossEncoder.

Tiny random ``*ForSequenceClassification`` models of two families (BERT with WordPiece and token type
ids; XLM-R with a Unigram tokenizer and the double separator), saved by the installed
sentence-transformers 5.7 as a ``CrossEncoder``, exported with ``export_model``, then scored by both on
pairs with documents past max length, several scripts and empty texts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from families import MAX_SEQ_LENGTH, MIXED_TEXTS, _tokenizer

from fastembed_native import TextCrossEncoder, TextEmbedding
from fastembed_native.engine.scores import activate, read_score_config

QUERIES = ("what is the capital of France?", "emoji 🙂 and prose " * 20, "")
PAIRS = [(q, d) for q in QUERIES for d in MIXED_TEXTS]
SCORE_TOLERANCE = 1e-4


#: Reference scores closer than this are ties: identical inputs (an empty document and one of spaces,
#: documents cut to nothing after a long query), whose order is float rounding. The test models'
#: scores of different inputs lie further apart than 5e-5; our scores are within 3e-6 of theirs.
TIE = 1e-5


def assert_same_ranking(ours: np.ndarray, expected: np.ndarray) -> None:
    """The reference's ranking, ties aside: every two documents it scores more than TIE apart are in
    the same order in ``ours``."""
    apart = expected[:, None] - expected[None, :] > TIE
    flipped = np.argwhere(apart & ~(ours[:, None] > ours[None, :]))
    assert not len(flipped), f"documents ranked the other way round: {flipped.tolist()}"


def assert_ranked_as(indices: list[int], expected: np.ndarray) -> None:
    """``indices`` (an answer's order, or its top n) is the ranking of the scores ``expected``, ties
    aside: the k-th document listed has the k-th best expected score, or one within TIE of it."""
    assert len(set(indices)) == len(indices), indices
    best = np.sort(expected)[::-1]
    for k, index in enumerate(indices):
        assert abs(expected[index] - best[k]) <= TIE, (k, indices, expected.tolist())


def _cross_encoder(root: Path, architecture: str, num_labels: int = 1) -> Path:
    """A tiny random sequence-classification checkpoint saved by sentence-transformers' CrossEncoder."""
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder
    from tokenizers import processors

    kind = "wordpiece" if architecture == "bert" else "unigram"
    tok, specials = _tokenizer(kind, architecture)
    if kind == "wordpiece":
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    else:  # XLM-R: <s> A </s></s> B </s>
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    hf_tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=MAX_SEQ_LENGTH, **specials
    )
    common = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=hf_tokenizer.pad_token_id,
        num_labels=num_labels,
        initializer_range=0.1,
    )
    torch.manual_seed(1)
    if architecture == "bert":
        model = tf.BertForSequenceClassification(tf.BertConfig(max_position_embeddings=128, **common))
    else:
        config = tf.XLMRobertaConfig(max_position_embeddings=130, type_vocab_size=1, **common)
        model = tf.XLMRobertaForSequenceClassification(config)
    # A random model scores every pair about alike, and then the order of two documents is float
    # noise. Wider weights and a scaled last layer spread the logits; a bias that centers them keeps
    # the sigmoid out of saturation, where scores would all be near 0 or 1.
    last = model.classifier if architecture == "bert" else model.classifier.out_proj
    with torch.no_grad():
        last.weight.mul_(50)
        encoded = hf_tokenizer(
            [q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True, return_tensors="pt"
        )
        last.bias.sub_(model.eval()(**encoded).logits.mean(dim=0))
    if num_labels > 1:
        model.config.id2label = {i: f"class_{i}" for i in range(num_labels)}
        model.config.label2id = {f"class_{i}": i for i in range(num_labels)}
    checkpoint = root / f".{architecture}-{num_labels}-hf"
    model.save_pretrained(checkpoint)
    hf_tokenizer.save_pretrained(checkpoint)
    out = root / f"{architecture}-{num_labels}"
    CrossEncoder(str(checkpoint), device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    from fastembed_native.models import export_model

    root = tmp_path_factory.mktemp(request.param)
    source = _cross_encoder(root, request.param)
    report = export_model(source, root / "onnx-model")
    assert report.max_score_difference is not None and report.max_score_difference <= SCORE_TOLERANCE
    return source, report.model_dir


def test_scores_equal_sentence_transformers(exported):
    from sentence_transformers import CrossEncoder

    source, model_dir = exported
    reference = CrossEncoder(str(source), device="cpu")
    expected = reference.predict(PAIRS, convert_to_numpy=True, batch_size=7)
    ours = TextCrossEncoder(model_dir).rerank_pairs(PAIRS, batch_size=5)
    assert ours.dtype == np.float32 and ours.shape == (len(PAIRS),)
    np.testing.assert_allclose(ours, expected, atol=SCORE_TOLERANCE, rtol=0)
    for q in range(len(QUERIES)):
        block = slice(q * len(MIXED_TEXTS), (q + 1) * len(MIXED_TEXTS))
        assert np.ptp(expected[block]) > 1000 * SCORE_TOLERANCE  # spread: the bound means something
        assert_same_ranking(ours[block], expected[block])


def test_export_keeps_the_weights_in_a_data_file_the_sessions_share(exported):
    _, model_dir = exported
    assert (model_dir / "onnx" / "model.onnx_data").is_file()
    model = TextCrossEncoder(model_dir)
    model.rerank_pairs(PAIRS, batch_size=4)  # several batches: the bulk session is made too
    engine = model.engine
    assert engine._single is not None and engine._bulk_session is not None
    assert engine._single.shared_tensors == engine._bulk_session.shared_tensors > 0


def test_raw_scores_are_the_logits(exported):
    from sentence_transformers import CrossEncoder
    from torch import nn

    source, model_dir = exported
    logits = CrossEncoder(str(source), device="cpu").predict(PAIRS, activation_fn=nn.Identity())
    ours = TextCrossEncoder(model_dir).rerank_pairs(PAIRS, raw_scores=True)
    np.testing.assert_allclose(ours, logits, atol=SCORE_TOLERANCE, rtol=0)
    assert np.all((ours < 0) | (ours > 0))  # logits, not probabilities in (0, 1) only


def test_rerank_and_rank_match_cross_encoder_rank(exported):
    from sentence_transformers import CrossEncoder

    source, model_dir = exported
    query, documents = QUERIES[0], list(MIXED_TEXTS)
    reference = CrossEncoder(str(source), device="cpu")
    expected = reference.rank(query, documents, top_k=5, return_documents=True)
    model = TextCrossEncoder(model_dir)
    ranked = model.rank(query, documents, top_k=5, return_documents=True)
    assert_ranked_as([h["corpus_id"] for h in ranked], reference.predict([(query, d) for d in documents]))
    for ours, theirs in zip(ranked, expected, strict=True):
        assert (
            ours["text"] == documents[ours["corpus_id"]] and theirs["text"] == documents[theirs["corpus_id"]]
        )
        assert abs(ours["score"] - float(theirs["score"])) <= SCORE_TOLERANCE
    scores = model.rerank(query, documents)
    np.testing.assert_array_equal(scores, model.rerank_pairs([(query, d) for d in documents]))
    assert [h["corpus_id"] for h in model.rank(query, documents)] == list(np.argsort(-scores, kind="stable"))


def test_pairs_are_cut_longest_first_never_refused(exported):
    _, model_dir = exported
    model = TextCrossEncoder(model_dir)
    long_document = "word " * 20_000
    encoding = model.engine.tokenizer.encode_pairs([("short query", long_document)])[0]
    assert len(encoding) == model.max_length == MAX_SEQ_LENGTH
    assert np.isfinite(model.rerank("short query", [long_document, "x" * 100_000])).all()


def test_pair_tokens_equal_the_reference_tokenizer_whatever_is_clipped(exported):
    from transformers import AutoTokenizer

    source, model_dir = exported
    reference = AutoTokenizer.from_pretrained(str(source))
    tokenizer = TextCrossEncoder(model_dir).engine.tokenizer
    long_words, commas = " ".join(f"token{i}" for i in range(3000)), "," * 5000
    # Longest-first gives the longer side the odd token: clipping must keep which side is longer.
    pairs = [*PAIRS, (MIXED_TEXTS[11], long_words), (long_words, MIXED_TEXTS[11]), (long_words, commas)]
    pairs += [(long_words[:n], long_words) for n in (600, 1000, 3000)] + [(commas, "short")]
    ours = tokenizer.encode_pairs(pairs)
    for i, (query, document) in enumerate(pairs):
        # As CrossEncoder.predict calls it: a batch of pairs (an empty document is still a pair).
        expected = reference([query], [document], truncation=True, max_length=tokenizer.max_length)
        assert ours[i].ids == expected["input_ids"][0], f"pair {i}"
        if "token_type_ids" in expected:
            assert ours[i].type_ids == expected["token_type_ids"][0], f"pair {i}"


def test_a_classifier_gives_every_label(tmp_path):
    from sentence_transformers import CrossEncoder

    from fastembed_native.models import export_model

    source = _cross_encoder(tmp_path, "bert", num_labels=3)
    model_dir = export_model(source, tmp_path / "classifier").model_dir
    model = TextCrossEncoder(model_dir)
    assert model.labels == ("class_0", "class_1", "class_2")
    assert model.activation == "identity"  # sentence-transformers' default for several labels
    expected = CrossEncoder(str(source), device="cpu").predict(PAIRS)
    ours = model.predict(PAIRS)
    assert ours.shape == (len(PAIRS), 3)
    np.testing.assert_allclose(ours, expected, atol=SCORE_TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"config_sentence_transformers.json": {"activation_fn": "torch.nn.modules.linear.Identity"}},
            "identity",
        ),
        (
            {"config.json": {"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Tanh"}}},
            "tanh",
        ),
        (
            {"config.json": {"sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"}},
            "identity",
        ),
        ({"config.json": {"id2label": {"0": "LABEL_0"}}}, "sigmoid"),
        ({"config.json": {"id2label": {"0": "a", "1": "b"}}}, "identity"),
    ],
)
def test_activation_read_as_sentence_transformers_reads_it(tmp_path, files, expected):
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    assert read_score_config(tmp_path).activation == expected


def test_an_unknown_activation_is_refused_by_name(tmp_path):
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"activation_fn": "my.Custom"}))
    with pytest.raises(ValueError, match=r"'my.Custom'; supported: Sigmoid"):
        read_score_config(tmp_path)


def test_activations_match_torch():
    import torch

    logits = np.random.default_rng(0).normal(0, 30, (50, 3)).astype(np.float32)
    for name, function in (
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("softmax", lambda t: t.softmax(1)),
    ):
        ours = activate(logits.copy(), name)
        np.testing.assert_allclose(ours, function(torch.from_numpy(logits)).numpy(), atol=1e-6, rtol=1e-5)
        assert np.isfinite(ours).all()


def test_bad_input_names_the_problem(exported):
    _, model_dir = exported
    model = TextCrossEncoder(model_dir)
    with pytest.raises(TypeError, match=r"pairs\[1\] document must be str, not int"):
        model.rerank_pairs([("q", "d"), ("q", 3)])
    with pytest.raises(TypeError, match=r"pairs\[0\] must be a \(query, document\) pair"):
        model.rerank_pairs([("q", "d", "e")])
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        model.rerank("q", ["d", None])
    with pytest.raises(TypeError, match="query must be str"):
        model.rerank(None, ["d"])
    with pytest.raises(ValueError, match=r"pairs\[0\] document cannot be encoded as UTF-8"):
        model.rerank("q", ["\ud800"])
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        model.rank("q", ["d"], top_k=0)
    assert model.rerank("q", []).shape == (0,)
    with pytest.raises(ValueError, match="instruction= is for LLM rerankers"):
        model.rerank("q", ["d"], instruction="x")


def test_models_loaded_as_the_wrong_kind_say_what_they_are(exported, encoder_dir):
    _, model_dir = exported
    with pytest.raises(ValueError, match="load it with TextCrossEncoder"):
        TextEmbedding(model_dir)
    with pytest.raises(ValueError, match="it is an embedding model"):
        TextCrossEncoder(encoder_dir.path)


# -- LLM rerankers (Qwen3-Reranker style) -----------------------------------------------------------
def _qwen3_reranker(root: Path) -> Path:
    """A tiny random Qwen3ForCausalLM with a byte-level BPE tokenizer that has "yes" and "no" tokens
    and adds no special tokens (as Qwen3-Reranker's), saved as a plain transformers checkpoint."""
    import torch
    import transformers as tf
    from tokenizers import AddedToken, processors

    tok, specials = _tokenizer("bytelevel-bpe", "qwen3")
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_tokens([AddedToken("yes", normalized=False), AddedToken("no", normalized=False)])
    hf_tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    config = tf.Qwen3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=hf_tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(2)
    model = tf.Qwen3ForCausalLM(config).eval()
    _spread_yes_no(model, hf_tokenizer)
    out = root / "qwen3-reranker"
    model.save_pretrained(out)
    hf_tokenizer.save_pretrained(out)
    return out


def _spread_yes_no(model, tokenizer) -> None:
    """Spread a random LM's yes - no logit over the test pairs and center it on 0: the scores are then
    far apart, and none is so near 1 that float32 rounds two of them to the same value."""
    import torch

    from fastembed_native.models.llm_reranker import prompt_frame, reference_scores

    frame = {**prompt_frame(tokenizer), "max_length": 256}
    pairs = [(q, d) for q in QUERIES for d in MIXED_TEXTS]
    no = tokenizer.convert_tokens_to_ids(frame["no_token"])
    head = model.lm_head.weight
    with torch.no_grad():
        head.mul_(30)
        last: list[torch.Tensor] = []  # what the LM head reads at each pair's last token
        hook = model.lm_head.register_forward_hook(lambda _m, args, _out: last.append(args[0][:, -1]))
        p_yes = torch.from_numpy(reference_scores(model, tokenizer, frame, pairs)).double()
        hook.remove()
        margin = torch.log(p_yes) - torch.log1p(-p_yes)  # logit(yes) - logit(no) per pair
        center = last[0].double().mean(dim=0)
        # Adding c * center to the "no" row lowers each margin by about c * |center|^2.
        head[no] += (margin.mean() * center / center.dot(center)).to(head.dtype)


@pytest.fixture(scope="module")
def llm_reranker(tmp_path_factory) -> tuple[Path, Path]:
    from fastembed_native.models import export_model

    root = tmp_path_factory.mktemp("llm")
    source = _qwen3_reranker(root)
    report = export_model(source, root / "exported")
    assert report.max_score_difference is not None and report.max_score_difference <= SCORE_TOLERANCE
    return source, report.model_dir


def test_llm_reranker_graph_outputs_one_logit_per_pair(llm_reranker):
    import onnx

    _, model_dir = llm_reranker
    graph = onnx.load(str(model_dir / "onnx" / "model.onnx"), load_external_data=False).graph
    (output,) = graph.output
    dims = [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim]
    assert output.name == "logits" and len(dims) == 2 and dims[1] == 1  # not batch x tokens x vocabulary


def test_llm_reranker_equals_the_model_card_formula(llm_reranker):
    import transformers as tf

    from fastembed_native.engine.scores import PROMPT_FILE
    from fastembed_native.models.llm_reranker import reference_scores

    source, model_dir = llm_reranker
    lm = tf.AutoModelForCausalLM.from_pretrained(str(source)).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(str(source))
    frame = json.loads((model_dir / PROMPT_FILE).read_text())
    model = TextCrossEncoder(model_dir)
    assert model.prompt is not None and model.activation == "sigmoid"
    pairs = [(q, d) for q in QUERIES[:2] for d in MIXED_TEXTS]
    expected = reference_scores(lm, tokenizer, frame, pairs)
    ours = model.rerank_pairs(
        pairs, batch_size=4
    )  # batches of other widths than the reference's: left padding
    np.testing.assert_allclose(ours, expected, atol=SCORE_TOLERANCE, rtol=0)
    assert np.ptp(expected) > 1000 * SCORE_TOLERANCE  # spread, not all near 0 or 1
    assert_same_ranking(ours, expected)
    # Another instruction changes the prompt, as the reference computes it.
    frame["instruction"] = "Find the sentence in German"
    other = model.rerank_pairs(pairs, instruction=frame["instruction"])
    np.testing.assert_allclose(
        other, reference_scores(lm, tokenizer, frame, pairs), atol=SCORE_TOLERANCE, rtol=0
    )
    assert not np.allclose(other, ours)


def test_llm_reranker_cuts_the_pair_text_never_the_frame(llm_reranker):
    _, model_dir = llm_reranker
    model = TextCrossEncoder(model_dir, max_length=96)
    prefix, suffix = model._frame
    (tokens,) = model.engine.tokenizer.encode_framed(["word " * 5000], prefix, suffix)
    assert len(tokens) == 96 and tokens.ids[: len(prefix)] == prefix and tokens.ids[-len(suffix) :] == suffix
    with pytest.raises(ValueError, match="leaves no room inside the prompt"):
        TextCrossEncoder(model_dir, max_length=len(prefix) + len(suffix)).rerank("q", ["d"])


def test_the_registry_knows_common_rerankers():
    models = {m["model"]: m for m in TextCrossEncoder.list_supported_models()}
    assert models["cross-encoder/ms-marco-MiniLM-L-6-v2"]["max_length"] == 512
    assert models["Qwen/Qwen3-Reranker-0.6B"]["kind"] == "llm"
    from fastembed_native.models import canonical_model_name

    assert canonical_model_name("bge-reranker-base") == "BAAI/bge-reranker-base"


@pytest.mark.parametrize("reference", ["numpy", "sentence-transformers"])
def test_the_torch_free_builder_builds_bert_cross_encoders(tmp_path, reference):
    from sentence_transformers import CrossEncoder

    from fastembed_native.models import build_bert_model

    source = _cross_encoder(tmp_path, "bert")
    report = build_bert_model(source, tmp_path / "built", reference=reference)
    assert report.reference == reference and report.max_score_difference <= SCORE_TOLERANCE
    expected = CrossEncoder(str(source), device="cpu").predict(PAIRS)
    ours = TextCrossEncoder(report.model_dir).rerank_pairs(PAIRS)
    np.testing.assert_allclose(ours, expected, atol=SCORE_TOLERANCE, rtol=0)
