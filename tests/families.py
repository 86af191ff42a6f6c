"""Small random models of each family on its real architecture, saved by sentence-transformers.

No weights can be downloaded here, so each family is rebuilt from its parts: a ``transformers``
architecture at a tiny size (2 layers, hidden 32), a tokenizer of the family's kind trained on local
text with ``tokenizers``, and the family's pooling, normalisation, padding side and prompts, wrapped
as a sentence-transformers model and saved by the installed sentence-transformers (5.x format).
The weights are random, so nothing here is a good embedding model; what is proven is that the
export graph, the tokenizer and the config files give the same vectors as sentence-transformers.

Used by tests/test_families.py (and by anyone who needs a checkpoint of a given family).
"""

from __future__ import annotations

import inspect
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

#: A mixed corpus: long texts past max_length, several scripts, emoji, empty and blank strings.
MIXED_TEXTS = (
    "hello world",
    "What is the capital of France?",
    "",
    "   ",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。富士山は日本で一番高い山です。",
    "Москва — столица России, крупнейший город страны.",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "नमस्ते दुनिया, यह हिंदी में एक वाक्य है।",
    "emoji 🙂🚀🇫🇷 and symbols ∑ ≠ ∞ — “quotes” and ‘more’",  # noqa: RUF001 (typographic quotes on purpose)
    "Ünïcödé àccents çà et là, naïve café.",
    "A paragraph of ordinary prose, long enough to span many word pieces, discussing embeddings, "
    "retrieval and the virtues of measuring before optimising. " * 6,
    " ".join(f"token{i}" for i in range(400)),
    "short",
    "x" * 3000,
)

MAX_SEQ_LENGTH = 64  # short, so the long texts above are truncated and truncation is compared too
HIDDEN = 32
LAYERS = 2
HEADS = 2

BGE_QUERY = "Represent this sentence for searching relevant passages: "
QWEN3_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


@dataclass(frozen=True)
class Family:
    """One family's recipe: architecture, tokenizer kind and sentence-transformers settings."""

    name: str
    architecture: str  # "bert", "xlm-roberta", "roberta", "qwen3"
    tokenizer: str  # "wordpiece", "unigram", "bytelevel-bpe"
    pooling: str  # sentence-transformers' pooling_mode: "cls", "mean", "lasttoken"
    padding_side: str = "right"
    prompts: dict[str, str] = field(default_factory=dict)
    include_prompt: bool = True
    legacy_format: bool = False  # rewrite the configs as sentence-transformers < 5 wrote them


FAMILIES = (
    Family("bge", "bert", "wordpiece", "cls", prompts={"query": BGE_QUERY}),
    Family(
        "e5",
        "xlm-roberta",
        "unigram",
        "mean",
        prompts={"query": "query: ", "passage": "passage: "},
        legacy_format=True,
    ),
    Family("gte", "roberta", "bytelevel-bpe", "mean"),
    Family(
        "qwen3", "qwen3", "bytelevel-bpe", "lasttoken", padding_side="left", prompts={"query": QWEN3_QUERY}
    ),
    Family(
        "instructor",
        "bert",
        "wordpiece",
        "mean",
        prompts={"query": "Represent the question for retrieval: "},
        include_prompt=False,
    ),
)


def training_text() -> list[str]:
    """Local text to train the tokenizers on: standard-library docstrings plus the mixed corpus."""
    import collections
    import json as json_module
    import pathlib

    lines: list[str] = []
    for module in (collections, json_module, pathlib, inspect, textwrap):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc:
                lines += [line for line in doc.splitlines() if line.strip()]
    return lines + list(MIXED_TEXTS) * 3


def _tokenizer(kind: str, architecture: str):
    """A trained ``tokenizers.Tokenizer`` and the special tokens the HF wrapper needs."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    text = training_text()
    if kind == "wordpiece":  # BERT: lowercasing normaliser, [CLS] text [SEP]
        specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
        specials["mask_token"] = "[MASK]"
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(
            text, trainers.WordPieceTrainer(vocab_size=1200, special_tokens=list(specials.values()))
        )
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
    elif kind == "unigram":  # XLM-R's SentencePiece-style: NFKC, Metaspace, <s> text </s>, <pad> = 1
        specials = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
        specials.update(cls_token="<s>", sep_token="</s>", mask_token="<mask>")
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=1200, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"
        )
        tok.train_from_iterator(text, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
    else:  # byte-level BPE: RoBERTa (<s> text </s>) or Qwen3 (text <|endoftext|>)
        if architecture == "qwen3":
            names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            specials = {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
        else:
            names = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            specials = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
            specials.update(cls_token="<s>", sep_token="</s>", mask_token="<mask>")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=1200, special_tokens=names, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator(text, trainer)
        if architecture == "qwen3":
            eos = tok.token_to_id("<|endoftext|>")
            tok.post_processor = processors.TemplateProcessing(
                single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)]
            )
        else:
            tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False)
    return tok, specials


def _model(architecture: str, vocab_size: int, pad_token_id: int):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        pad_token_id=pad_token_id,
    )
    if architecture == "bert":
        return tf.BertModel(tf.BertConfig(max_position_embeddings=128, **common), add_pooling_layer=False)
    if architecture in ("xlm-roberta", "roberta"):
        config_class = tf.XLMRobertaConfig if architecture == "xlm-roberta" else tf.RobertaConfig
        model_class = tf.XLMRobertaModel if architecture == "xlm-roberta" else tf.RobertaModel
        # RoBERTa's positions start after padding_idx, hence the + 2 (as the published configs do).
        config = config_class(max_position_embeddings=128 + 2, type_vocab_size=1, **common)
        return model_class(config, add_pooling_layer=False)
    if architecture == "qwen3":
        config = tf.Qwen3Config(
            num_key_value_heads=1, head_dim=HIDDEN // HEADS, max_position_embeddings=512, **common
        )
        return tf.Qwen3Model(config)
    raise ValueError(f"unknown architecture {architecture!r}")


def _write_legacy_format(model_dir: Path) -> None:
    """Rewrite modules.json and the pooling config as sentence-transformers < 5 wrote them."""
    modules = json.loads((model_dir / "modules.json").read_text())
    for module in modules:
        module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[-1]
    (model_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    pooling_path = model_dir / "1_Pooling" / "config.json"
    new = json.loads(pooling_path.read_text())
    old = {"word_embedding_dimension": new["embedding_dimension"]}
    for key, mode in (
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
        ("pooling_mode_weightedmean_tokens", "weightedmean"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ):
        old[key] = new["pooling_mode"] == mode
    old["include_prompt"] = new.get("include_prompt", True)
    pooling_path.write_text(json.dumps(old, indent=2))
    (model_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    )


def build_family(family: Family, root: Path) -> Path:
    """Build ``family`` and save it with sentence-transformers under ``root / family.name``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_modules
    from transformers import PreTrainedTokenizerFast

    tok, specials = _tokenizer(family.tokenizer, family.architecture)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side=family.padding_side, model_max_length=MAX_SEQ_LENGTH, **specials
    )
    model = _model(family.architecture, tok.get_vocab_size(), hf_tokenizer.pad_token_id)
    checkpoint = root / f".{family.name}-hf"
    model.save_pretrained(checkpoint)
    hf_tokenizer.save_pretrained(checkpoint)

    transformer = st_modules.Transformer(str(checkpoint), max_seq_length=MAX_SEQ_LENGTH)
    pooling = st_modules.Pooling(HIDDEN, pooling_mode=family.pooling, include_prompt=family.include_prompt)
    st = SentenceTransformer(
        modules=[transformer, pooling, st_modules.Normalize()], prompts=family.prompts, device="cpu"
    )
    out = root / family.name
    st.save(str(out))
    if family.legacy_format:
        _write_legacy_format(out)
    return out
