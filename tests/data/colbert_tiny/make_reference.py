"""Regenerate the tiny random ColBERT fixture (tests/data/colbert_tiny/) and pylate 1.6's outputs for it.

Runs in its OWN venv, not the project's (pylate pins versions the project venv must not take):

    python3 -m venv /work/venvs/pylate && . /work/venvs/pylate/bin/activate
    pip install torch==2.13.0
    pip install --no-deps pylate==1.6.0 sentence-transformers==5.3.0
    pip install transformers 'huggingface-hub<1.0' datasets pandas accelerate ujson scikit-learn scipy \
        tokenizers safetensors numpy
    python tests/data/colbert_tiny/make_reference.py          # from the repository root

(versions used: torch 2.13.0+cpu, transformers 4.57.6, tokenizers 0.22.2, sentence-transformers 5.3.0,
pylate 1.6.0).

What it makes, all deterministic (fixed seeds, fixed local training text):
  * a WordPiece tokenizer (``tokenizers``; lower-casing BERT normaliser, 1200 pieces incl. [PAD] [UNK]
    [CLS] [SEP] [MASK], every ASCII punctuation character in the vocabulary) whose vocabulary is picked
    deterministically from three Debian licence texts (/usr/share/common-licenses/{Apache-2.0,GPL-3,
    MPL-2.0}, from base-files; see train_tokenizer);
  * a random BertModel (hidden 32, 2 layers, 2 heads, intermediate 64, 128 positions; initializer_range
    0.5 so attention is far from uniform and masks matter, token-type embeddings scaled by 0.1 so the
    token vectors are diverse: some query tokens have a negative best similarity), wrapped as ``pylate.models.ColBERT`` with a
    Dense projection 32 -> 16 (no bias), query_length 12, document_length 24, the default skiplist
    (string.punctuation), do_query_expansion True, attend_to_expansion_tokens False; pylate adds the
    "[Q] " / "[D] " marker tokens to the tokenizer and resizes the embeddings; saved with ``model.save``;
  * reference.npz + reference.json: pylate's outputs from the model as RELOADED from the saved folder.

reference.npz: every ragged array X is stored flat with X_off (int64, len n+1): item i is
X[X_off[i]:X_off[i+1]].
  q_emb                 encode(queries, is_query=True), float32 (rows, 16): query_length rows each
  q_emb_attend          the same with attend_to_expansion_tokens=True
  q_emb_noexp           the same with do_query_expansion=False (ragged: padding removed)
  d_emb                 encode(documents, is_query=False), float32 (rows, 16)
  q_ids, q_attn         token ids and attention mask pylate fed the model for each query (one query
                        per batch; length query_length with expansion)
  q_ids_noexp, q_attn_noexp   the same without query expansion
  d_ids, d_keep         token ids fed for each document (one per batch, so unpadded) and which of those
                        positions become output rows (skiplist ids removed; the rest, [CLS], [D] and
                        [SEP] included, kept)
  scores                (n_queries, n_documents) MaxSim: pylate.scores.colbert_scores of each query
                        against each document alone (no padding: the exact MaxSim)
  scores_padded         colbert_scores of all queries against all documents zero-padded to one length
                        (what pylate.rank.rerank does): differs from ``scores`` only where a document's
                        best similarity for some query token is negative (zero rows win the max)
  skiplist_ids          the ids pylate skips in documents
reference.json: texts, settings, the marker / special ids and each text's tokens as strings.
"""

from __future__ import annotations

import json
import shutil
import string
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
LICENCES = [Path("/usr/share/common-licenses") / n for n in ("Apache-2.0", "GPL-3", "MPL-2.0")]
SEED = 0
HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 64, 128
EMBEDDING_SIZE, QUERY_LENGTH, DOCUMENT_LENGTH = 16, 12, 24

QUERIES = [
    "what is late interaction?",
    "colbert",
    "",
    "How do the licence terms apply to a covered work, and what must be distributed with it?",  # > 12
    "who?!",
    "Café naïve Zürich",
    "東京 tokyo 🙂",
    "  padded with spaces  ",
]
DOCUMENTS = [
    "Late interaction keeps one vector per token.",
    "!!! ... ??? ;;; ---",
    "",
    "a",
    "The licence applies to any program or other work which contains a notice placed by the copyright "
    "holder saying it may be distributed under the terms of this General Public License.",  # > 24 tokens
    "Hello, world! (parentheses), [brackets]; {braces}: \"quotes\" & 'apostrophes' -- the end.",
    "Ünïcödé àccents: çà et là, naïve café. 東京タワー 🙂🚀",
    "you may convey verbatim copies of the program's source code as you receive it",
    "no punctuation here at all just words words words",
]


def train_tokenizer():
    """A BERT WordPiece tokenizer whose vocabulary is chosen deterministically from local text.

    ``tokenizers``' WordPieceTrainer breaks ties in hash order, so its vocabulary changes from run to
    run; here the same normaliser and pre-tokeniser split the text, and the vocabulary is: the 5
    specials, every character seen (plus all ASCII punctuation and digits) alone and as ``##c``, the
    most frequent suffixes as ``##...`` and the most frequent words (ties broken alphabetically).
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    text = "\n".join(path.read_text(encoding="utf-8") for path in LICENCES)
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted(set("".join(words)) | set(string.punctuation) | set(string.digits))
    suffixes = Counter()
    for word, count in words.items():
        for k in (2, 3, 4):
            if len(word) > k + 1 and word.isalpha():
                suffixes[word[-k:]] += count
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + chars + ["##" + c for c in chars if c.isalnum()]
    vocab += ["##" + sfx for sfx, _ in sorted(suffixes.items(), key=lambda kv: (-kv[1], kv[0]))[:120]]
    seen = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= 1200:
            break
        if len(word) > 1 and word not in seen:
            vocab.append(word)
            seen.add(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    for ch in string.punctuation:
        assert tok.token_to_id(ch) is not None, ch
    return tok


def build(base: Path) -> None:
    """A random BERT + tokenizer saved in transformers' layout (the ColBERT's base encoder)."""
    import transformers as tf

    tok = train_tokenizer()
    hf_tok = tf.BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    torch.manual_seed(SEED)
    config = tf.BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=POSITIONS,
        initializer_range=0.5,
        pad_token_id=hf_tok.pad_token_id,
    )
    model = tf.BertModel(config, add_pooling_layer=False)
    with torch.no_grad():  # a token-type row shared by every token would make all vectors alike
        model.embeddings.token_type_embeddings.weight.mul_(0.1)
    model.save_pretrained(base)
    hf_tok.save_pretrained(base)


def flat(arrays, dtype):
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    off = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    tail = arrays[0].shape[1:] if arrays and arrays[0].ndim > 1 else ()
    return (np.concatenate(arrays) if arrays else np.zeros((0, *tail), dtype)), off


def main() -> None:
    from pylate import models, scores

    out = HERE
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        build(base)
        torch.manual_seed(SEED + 1)  # the Dense projection's random init
        model = models.ColBERT(
            model_name_or_path=str(base),
            device="cpu",
            embedding_size=EMBEDDING_SIZE,
            query_length=QUERY_LENGTH,
            document_length=DOCUMENT_LENGTH,
            do_query_expansion=True,
            attend_to_expansion_tokens=False,
        )
        for child in out.iterdir():  # keep this script, replace everything else
            if child.name != Path(__file__).name:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        model.save(str(out), create_model_card=False)
    # the model card / README is not wanted; neither is anything that is not needed to load
    for junk in ("README.md",):
        (out / junk).unlink(missing_ok=True)

    model = models.ColBERT(str(out), device="cpu")
    assert model.query_length == QUERY_LENGTH and model.document_length == DOCUMENT_LENGTH
    assert model.do_query_expansion and not model.attend_to_expansion_tokens
    tokenizer = model.tokenizer

    def ids_of(texts, is_query):
        ids, attn = [], []
        for text in texts:  # one text per batch: no batch padding
            feats = model.tokenize([text], is_query=is_query)
            ids.append(feats["input_ids"][0].numpy())
            attn.append(feats["attention_mask"][0].numpy())
        return ids, attn

    q_ids, q_attn = ids_of(QUERIES, True)
    d_ids, _ = ids_of(DOCUMENTS, False)
    skip = set(model.skiplist)
    d_keep = [np.array([t not in skip for t in ids], dtype=bool) for ids in d_ids]

    q_emb = model.encode(QUERIES, is_query=True, batch_size=4)
    d_emb = model.encode(DOCUMENTS, is_query=False, batch_size=4)
    for e, ids in zip(q_emb, q_ids, strict=True):
        assert e.shape == (len(ids), EMBEDDING_SIZE)
    for e, keep in zip(d_emb, d_keep, strict=True):
        assert e.shape == (int(keep.sum()), EMBEDDING_SIZE)
    # batch composition must not matter (padding is masked): one-at-a-time equals batched
    for text, e in zip(DOCUMENTS, d_emb, strict=True):
        np.testing.assert_allclose(model.encode([text], is_query=False)[0], e, atol=1e-5)

    model.attend_to_expansion_tokens = True
    q_emb_attend = model.encode(QUERIES, is_query=True, batch_size=4)
    model.attend_to_expansion_tokens = False
    model.do_query_expansion = False
    q_emb_noexp = model.encode(QUERIES, is_query=True, batch_size=4)
    q_ids_noexp, q_attn_noexp = ids_of(QUERIES, True)
    model.do_query_expansion = True

    score = np.zeros((len(QUERIES), len(DOCUMENTS)), np.float32)
    for i, q in enumerate(q_emb):
        for j, d in enumerate(d_emb):
            score[i, j] = scores.colbert_scores(
                torch.from_numpy(q)[None], torch.from_numpy(d)[None], backend="torch"
            )[0, 0].item()
    padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(d) for d in d_emb], batch_first=True)
    score_padded = scores.colbert_scores(torch.from_numpy(np.stack(q_emb)), padded, backend="torch").numpy()

    arrays = {}
    for name, data, dtype in (
        ("q_emb", q_emb, np.float32),
        ("q_emb_attend", q_emb_attend, np.float32),
        ("q_emb_noexp", q_emb_noexp, np.float32),
        ("d_emb", d_emb, np.float32),
        ("q_ids", q_ids, np.int64),
        ("q_attn", q_attn, np.int64),
        ("q_ids_noexp", q_ids_noexp, np.int64),
        ("q_attn_noexp", q_attn_noexp, np.int64),
        ("d_ids", d_ids, np.int64),
        ("d_keep", d_keep, bool),
    ):
        arrays[name], arrays[name + "_off"] = flat(data, dtype)
    arrays["scores"] = score
    arrays["scores_padded"] = score_padded.astype(np.float32)
    arrays["skiplist_ids"] = np.array(sorted(skip), dtype=np.int64)
    np.savez_compressed(out / "reference.npz", **arrays)

    import pylate
    import sentence_transformers
    import transformers

    meta = {
        "generated_by": "tests/data/colbert_tiny/make_reference.py",
        "versions": {
            "pylate": pylate.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "queries": QUERIES,
        "documents": DOCUMENTS,
        "embedding_size": EMBEDDING_SIZE,
        "query_length": model.query_length,
        "document_length": model.document_length,
        "query_prefix": model.query_prefix,
        "document_prefix": model.document_prefix,
        "query_prefix_id": model.query_prefix_id,
        "document_prefix_id": model.document_prefix_id,
        "mask_token_id": tokenizer.mask_token_id,
        "pad_token_id_in_pylate": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "unk_token_id": tokenizer.unk_token_id,
        "skiplist_words": model.skiplist_words,
        "skiplist_ids": sorted(skip),
        "query_tokens": [tokenizer.convert_ids_to_tokens(ids.tolist()) for ids in q_ids],
        "query_tokens_noexp": [tokenizer.convert_ids_to_tokens(ids.tolist()) for ids in q_ids_noexp],
        "document_tokens": [tokenizer.convert_ids_to_tokens(ids.tolist()) for ids in d_ids],
        "scores": score.tolist(),
    }
    (out / "reference.json").write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
