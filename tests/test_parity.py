"""Parity with sentence-transformers on the real all-MiniLM-L6-v2, over a varied corpus of real text."""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fastembed_native.models import cosine_rows

pytestmark = pytest.mark.real_model


def real_corpus() -> list[str]:
    """Texts of every kind, built from real text on this machine (docstrings and licences of
    installed packages) plus hand-written edge cases."""
    import json as json_module
    import os
    import pathlib

    docs = [
        inspect.getdoc(obj) or ""
        for obj in (json_module, os.path, pathlib.Path, inspect.signature, textwrap.wrap)
    ]
    paragraphs = [p.strip() for doc in docs for p in doc.split("\n\n") if len(p.strip()) > 40]
    import numpy

    licence = Path(numpy.__file__).parent.parent.glob("numpy-*.dist-info/LICENSE*")
    licence_text = next((p.read_text(errors="replace") for p in licence if p.is_file()), "")
    return [
        "hello world",
        "What is the capital of France?",
        "how do I reset my password",
        "",
        " ",
        "\n\t",
        "a",
        *paragraphs[:12],
        " ".join(paragraphs),  # far past max_seq_length (256) and the tokenizer file's own 128
        licence_text[:5000],
        "Der schnelle braune Fuchs springt über den faulen Hund. Größe, Maß, Straße.",
        "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
        "Москва — столица и крупнейший город России.",
        "القاهرة هي عاصمة مصر وأكبر مدنها.",
        "नमस्ते दुनिया, यह एक परीक्षण वाक्य है।",
        "emoji 🙂🚀🔥 and flags 🇫🇷🇯🇵, symbols ∑ ≠ ∞ ≤ µ",
        "MiXeD CaSe and ACCENTS: café, naïve, résumé",
        "word " * 600,
        json.dumps({"key": [1, 2, 3], "nested": {"a": "b"}}),
    ]


def test_parity_with_sentence_transformers(minilm, sentence_transformer):
    texts = real_corpus()
    ours = minilm.embed(texts, batch_size=8)
    reference = sentence_transformer.encode(texts, convert_to_numpy=True, batch_size=8)
    cosines = cosine_rows(ours, reference)
    worst = int(cosines.argmin())
    print(f"parity: min cosine {cosines.min():.7f} over {len(texts)} texts")
    assert cosines.min() >= 0.9999, f"text {worst} ({texts[worst][:60]!r}) has cosine {cosines[worst]}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_model_facts(minilm):
    assert (minilm.dim, minilm.max_length, minilm.pooling, minilm.normalize) == (384, 256, "mean", True)
    assert minilm.providers == ["CPUExecutionProvider"]


def test_truncation_matches_sentence_transformers_at_max_seq_length(minilm, sentence_transformer):
    """Texts of 250..300 tokens straddle max_seq_length=256: each must be cut exactly where ST cuts."""
    texts = [" ".join(["embedding"] * n) for n in (250, 254, 255, 256, 300)]
    cos = cosine_rows(minilm.embed(texts), sentence_transformer.encode(texts))
    assert cos.min() >= 0.9999


def test_huge_string_is_cut_before_tokenization(minilm_dir):
    """A 10 MB string: only a prefix reaches the tokenizer, and the result equals embedding the
    start of the text (which is truncated at 256 tokens anyway)."""
    from fastembed_native import TextEmbedding

    model = TextEmbedding(minilm_dir)
    seen: list[int] = []
    real_tokenizer = model.tokenizer._tokenizer

    class Recorder:  # tokenizers.Tokenizer cannot be subclassed from Python; wrap it instead
        def encode_batch_fast(self, texts):
            seen.extend(len(t) for t in texts)
            return real_tokenizer.encode_batch_fast(texts)

    model.tokenizer._tokenizer = Recorder()
    paragraph = "Embeddings map text to vectors so that similar meanings land close together. "
    huge = paragraph * (10_000_000 // len(paragraph))
    got = model.embed([huge])
    # The clip (engine/tokens.py clip_text) cuts a few pre-tokenizer pieces after the 256th token,
    # found within a window of 256 x 8 characters: the tokenizer sees about the kept tokens' text,
    # never the whole text.
    assert len(seen) == 1 and 256 <= seen[0] <= 256 * 8, f"the tokenizer saw {seen} characters"
    prefix = model.embed([paragraph * 60])  # ~780 tokens: also truncated to 256
    assert cosine_rows(got, prefix)[0] >= 0.99999


def test_single_text_calls_run_on_the_fused_graph_with_parity(minilm, sentence_transformer):
    """One text per call takes the single-batch session, which loads onnx/model_fused.onnx."""
    assert minilm.single_batch_onnx_path.name == "model_fused.onnx"
    texts = real_corpus()
    alone = np.vstack([minilm.embed([text]) for text in texts])
    cosines = cosine_rows(alone, sentence_transformer.encode(texts, convert_to_numpy=True))
    assert cosines.min() >= 0.9999
