"""Regenerate the tiny random BGE-M3 fixture (tests/data/bge_m3_tiny/) and FlagEmbedding's outputs for it.

Runs in its OWN venv, not the project's (FlagEmbedding's requirements would move the project venv's
fsspec and others):

    python3 -m venv /work/venvs/flag && . /work/venvs/flag/bin/activate
    pip install torch==2.13.0
    pip install FlagEmbedding==1.4.2
    pip install 'transformers==4.57.6' 'huggingface-hub<1.0' 'tokenizers==0.22.2' \
        'sentence-transformers==5.7.0' 'datasets<4.2'     # the project venv's transformers/tokenizers
    python tests/data/bge_m3_tiny/make_reference.py          # from the repository root

(versions used: torch 2.13.0+cpu, transformers 4.57.6, tokenizers 0.22.2, FlagEmbedding 1.4.2).

The folder has BGE-M3's repository layout (BAAI/bge-m3): config.json + model.safetensors (a random
XLMRobertaModel: hidden 32, 2 layers, 2 heads, intermediate 64, 130 positions, initializer_range 0.5,
token-type embedding scaled by 0.1 so token vectors are diverse),
the tokenizer files of an XLMRobertaTokenizerFast (SentencePiece-style Unigram, NFKC + collapse runs of
spaces, Metaspace; <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last; the vocabulary is picked
deterministically from three Debian licence texts, see train_tokenizer), colbert_linear.pt
(torch.save of a Linear(32, 32) state dict) and sparse_linear.pt (Linear(32, 1)), and the
sentence-transformers files the real repository also ships (modules.json, sentence_bert_config.json,
1_Pooling/config.json: CLS pooling + Normalize, which give the dense vector).

reference.npz / reference.json hold ``BGEM3FlagModel(dir, use_fp16=False, devices="cpu").encode(TEXTS,
max_length=MAX_LENGTH, return_dense=True, return_sparse=True, return_colbert_vecs=True)`` (one batch, so
texts are padded to the longest):
  dense            (n, 32) float32, CLS, L2-normalised
  sparse_ids, sparse_values, sparse_off   lexical_weights of text i as ids ascending / weights
                   (float32), rows sparse_off[i]:sparse_off[i+1]; reference.json has the dicts exactly
                   as FlagEmbedding returns them (keys are str(token id))
  colbert, colbert_off   colbert_vecs of text i: rows colbert_off[i]:colbert_off[i+1] (n_tokens - 1 rows:
                   every token after <s>, </s> included), float32 (rows, 32)
  ids, ids_off     the token ids FlagEmbedding fed for each text (truncated to MAX_LENGTH, unpadded)
  token_weights    relu(sparse_linear(h)) for every position of ids (same offsets as ids)
  lexical_scores   (n, n) compute_lexical_matching_score(lw, lw)
  colbert_scores   (n, n) colbert_score(colbert_vecs[i], colbert_vecs[j]) (FlagEmbedding divides the
                   MaxSim sum by the number of query vectors)
  dense_fp16_default  dense vectors with FlagEmbedding's default use_fp16=True (weights rounded to fp16
                   at load, then run in fp32 on CPU): shows what the flag changes
"""

from __future__ import annotations

import json
import math
import shutil
import string
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
LICENCES = [Path("/usr/share/common-licenses") / n for n in ("Apache-2.0", "GPL-3", "MPL-2.0")]
SEED = 0
HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 64, 128
VOCAB = 1000
MAX_LENGTH = 16

TEXTS = [
    "the license the license the license",  # repeated words: max over repeated ids
    "",
    "Copyright holders distribute copies of the program under these terms and conditions, "
    "provided that the notice is kept intact in each copy.",  # > MAX_LENGTH tokens: truncated
    "a",  # its one weight is 0 after relu: an empty lexical_weights dict
    "work, work and work",
    "Café naïve Zürich — ÉTÉ",
    "東京 tokyo 🙂 terms <mask> conditions",  # <unk>s (dropped from sparse); <mask> (kept, lstrip)
    "  spaces   between    words  ",
    "!!! ??? ... ;;;",
    "source code, object code; and modifications.",
]


def train_tokenizer():
    """A SentencePiece-style Unigram tokenizer whose pieces and scores are picked deterministically.

    ``tokenizers``' UnigramTrainer gives a different vocabulary on each run, so the pieces here are:
    the specials, every character seen (plus ASCII punctuation and digits), and the substrings of the
    pre-tokenised words (``▁word``) that save most (count x (length - 1), ties alphabetical); each
    piece's score is log(count / total), as a unigram language model's would be.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    text = "\n".join(path.read_text(encoding="utf-8") for path in LICENCES)
    words = Counter()
    for line in text.splitlines():
        if line.strip():
            words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    pieces = Counter()
    for word, count in words.items():
        for i in range(len(word)):
            for j in range(i + 1, min(len(word), i + 10) + 1):
                pieces[word[i:j]] += count
    for ch in string.punctuation + string.digits + "▁":
        pieces[ch] += 1
    total = sum(pieces.values())
    chars = sorted(p for p in pieces if len(p) == 1)
    longer = sorted((p for p in pieces if len(p) > 1), key=lambda p: (-pieces[p] * (len(p) - 1), p))
    chosen = chars + longer[: VOCAB - 5 - len(chars)]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, math.log(pieces[p] / total)) for p in chosen]
    vocab += [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    from tokenizers import AddedToken

    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<s>", "<pad>", "</s>", "<unk>")]
    )
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    assert tok.get_vocab_size() == VOCAB and tok.token_to_id("<mask>") == VOCAB - 1
    return tok


def build(out: Path) -> None:
    import transformers as tf

    tok = train_tokenizer()
    hf_tok = tf.XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=POSITIONS,
    )
    torch.manual_seed(SEED)
    config = tf.XLMRobertaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=POSITIONS + 2,  # positions start after padding_idx (1), as XLM-R's do
        type_vocab_size=1,
        initializer_range=0.5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    model = tf.XLMRobertaModel(config, add_pooling_layer=False)
    with torch.no_grad():  # a token-type row shared by every token would make all vectors alike
        model.embeddings.token_type_embeddings.weight.mul_(0.1)
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    torch.manual_seed(SEED + 1)
    colbert_linear = torch.nn.Linear(HIDDEN, HIDDEN)
    sparse_linear = torch.nn.Linear(HIDDEN, 1)
    torch.save(colbert_linear.state_dict(), out / "colbert_linear.pt")
    torch.save(sparse_linear.state_dict(), out / "sparse_linear.pt")
    # the sentence-transformers files BAAI/bge-m3 also ships (dense = CLS + Normalize)
    (out / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ],
            indent=2,
        )
        + "\n"
    )
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": POSITIONS, "do_lower_case": False}, indent=2) + "\n"
    )
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": HIDDEN,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
        + "\n"
    )


def flat(arrays, dtype, tail=()):
    arrays = [np.asarray(a, dtype=dtype).reshape(-1, *tail) for a in arrays]
    off = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    return np.concatenate(arrays), off


def main() -> None:
    from FlagEmbedding import BGEM3FlagModel

    out = HERE
    for child in out.iterdir():  # keep this script, replace everything else
        if child.name != Path(__file__).name:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        for child in Path(tmp).iterdir():
            shutil.move(str(child), out / child.name)

    m3 = BGEM3FlagModel(str(out), use_fp16=False, devices="cpu")
    res = m3.encode(
        TEXTS, max_length=MAX_LENGTH, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    dense = np.asarray(res["dense_vecs"], np.float32)
    lexical = res["lexical_weights"]
    colbert = [np.asarray(c, np.float32) for c in res["colbert_vecs"]]

    tokenizer = m3.tokenizer
    ids = [tokenizer(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] for t in TEXTS]
    token_weights = []
    with torch.no_grad():
        for row in ids:  # one text at a time: the per-position weights, for debugging
            feats = {
                "input_ids": torch.tensor([row]),
                "attention_mask": torch.ones(1, len(row), dtype=torch.long),
            }
            w = m3.model(feats, return_dense=False, return_sparse=True)["sparse_vecs"]
            token_weights.append(w[0, :, 0].numpy())
    for row, c in zip(ids, colbert, strict=True):
        assert c.shape == (len(row) - 1, HIDDEN)

    sparse_ids, sparse_values = [], []
    for lw in lexical:
        keys = sorted(lw, key=int)
        sparse_ids.append([int(k) for k in keys])
        sparse_values.append([float(lw[k]) for k in keys])

    lexical_scores = np.asarray(m3.compute_lexical_matching_score(lexical, lexical), np.float32)
    colbert_scores = np.array(
        [[float(m3.colbert_score(a, b)) for b in colbert] for a in colbert], dtype=np.float32
    )

    m3_fp16 = BGEM3FlagModel(str(out), devices="cpu")  # the default: use_fp16=True
    dense_fp16 = np.asarray(m3_fp16.encode(TEXTS, max_length=MAX_LENGTH)["dense_vecs"], np.float32)

    arrays = {"dense": dense, "lexical_scores": lexical_scores, "colbert_scores": colbert_scores}
    arrays["dense_fp16_default"] = dense_fp16
    arrays["sparse_ids"], arrays["sparse_off"] = flat(sparse_ids, np.int64)
    arrays["sparse_values"], _ = flat(sparse_values, np.float32)
    arrays["colbert"], arrays["colbert_off"] = flat(colbert, np.float32, (HIDDEN,))
    arrays["ids"], arrays["ids_off"] = flat(ids, np.int64)
    arrays["token_weights"], _ = flat(token_weights, np.float32)
    np.savez_compressed(out / "reference.npz", **arrays)

    import FlagEmbedding
    import transformers

    meta = {
        "generated_by": "tests/data/bge_m3_tiny/make_reference.py",
        "versions": {
            "FlagEmbedding": getattr(FlagEmbedding, "__version__", "1.4.2"),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "call": f"BGEM3FlagModel(dir, use_fp16=False, devices='cpu').encode(texts, max_length={MAX_LENGTH}, "
        "return_dense=True, return_sparse=True, return_colbert_vecs=True)",
        "max_length": MAX_LENGTH,
        "texts": TEXTS,
        "special_ids": {
            "cls/bos <s>": tokenizer.cls_token_id,
            "pad <pad>": tokenizer.pad_token_id,
            "eos/sep </s>": tokenizer.eos_token_id,
            "unk <unk>": tokenizer.unk_token_id,
            "mask <mask>": tokenizer.mask_token_id,
        },
        "tokens": [tokenizer.convert_ids_to_tokens(row) for row in ids],
        "lexical_weights": [{k: float(v) for k, v in lw.items()} for lw in lexical],
        "dense_fp16_default_max_abs_diff": float(np.abs(dense_fp16 - dense).max()),
    }
    (out / "reference.json").write_text(
        json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
