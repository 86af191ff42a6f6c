"""Exporting an LLM reranker (Qwen3-Reranker style) to a graph that outputs one score per pair.

Such a model judges a pair by a prompt ("<Instruct>: ... <Query>: ... <Document>: ...", framed by a
chat template) and reads the language model's logits for "yes" and "no" at the last token: the score
is ``P(yes) = sigmoid(logit(yes) - logit(no))`` (the model card's ``log_softmax`` over the two, and
sentence-transformers 6's ``LogitScore``). Exported naively, the graph computes batch x tokens x
vocabulary logits (151,669 per token for Qwen3) to keep two numbers of the last row. The graph written
here gathers the last real token's hidden state (by the attention mask, so either padding side works)
and multiplies it by the one vector ``W[yes] - W[no]`` of the LM head: its output is ``(batch, 1)``
logits, which the engine's score head turns into ``P(yes)`` like any one-label cross-encoder.

The prompt frame goes into :data:`~fastembed_native.engine.scores.PROMPT_FILE` beside the graph, where
the score head finds it. Needs torch and transformers (the ``[export]`` extra).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.scores import PROMPT_FILE, Scorer
from ..errors import ModelLoadError
from .data_file import save_graph

#: Qwen3-Reranker's prompt, as its model card gives it.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
#: Longest prompt the model card uses; capped at the model's positions.
QWEN3_MAX_LENGTH = 8192
#: |P(yes) difference| allowed against the transformers computation on the parity pairs.
LLM_SCORE_TOLERANCE = 1e-4


def is_llm_reranker(checkpoint: Path) -> bool:
    """A causal LM checkpoint without sentence-transformers modules: scored as a yes/no reranker
    (a ``*ForCausalLM`` with ``modules.json`` is an embedding model, e.g. Qwen3-Embedding)."""
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    causal = any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or ())
    return causal and not (checkpoint / "modules.json").is_file()


def prompt_frame(tokenizer: Any, instruction: str | None = None) -> dict[str, Any]:
    """The prompt frame written to PROMPT_FILE: prefix, template, suffix, default instruction, and the
    "yes" / "no" tokens (each must be one token of the vocabulary)."""
    frame = {
        "format": "yes-no-last-token",
        "prefix": QWEN3_PREFIX,
        "template": QWEN3_TEMPLATE,
        "suffix": QWEN3_SUFFIX,
        "instruction": instruction or QWEN3_INSTRUCTION,
        "yes_token": "yes",
        "no_token": "no",
    }
    for key in ("yes_token", "no_token"):
        token_id = tokenizer.convert_tokens_to_ids(frame[key])
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ModelLoadError(
                f"the tokenizer has no single token {frame[key]!r}: not a yes/no LLM reranker"
            )
    return frame


def export_llm_reranker(source: Path, output: Path, *, instruction: str | None = None) -> float:
    """Export the causal LM checkpoint ``source`` as a yes/no reranker into ``output`` (which must not
    exist), checked against :func:`reference_scores`; returns the largest |P(yes) difference|.

    Raises:
        ModelLoadError: the export failed or disagrees with transformers past LLM_SCORE_TOLERANCE.
    """
    import onnx
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    frame = prompt_frame(tokenizer, instruction)
    lm = AutoModelForCausalLM.from_pretrained(str(source), local_files_only=True, attn_implementation="eager")
    lm.eval()
    positions = getattr(lm.config, "max_position_embeddings", QWEN3_MAX_LENGTH)
    frame["max_length"] = min(QWEN3_MAX_LENGTH, int(positions))
    yes = tokenizer.convert_tokens_to_ids(frame["yes_token"])
    no = tokenizer.convert_tokens_to_ids(frame["no_token"])

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        model_dir = staging / "model"
        (model_dir / "onnx").mkdir(parents=True)
        (staging / "torch").mkdir()
        graph = _yes_no_module(lm, yes, no).eval()
        example = tokenizer(["a b c", "a"], padding=True, return_tensors="pt")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer chatter from torch/transformers
            torch.onnx.export(
                graph,
                (example["input_ids"], example["attention_mask"]),
                str(staging / "torch" / "model.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                },
                opset_version=17,
                dynamo=False,
            )
        # torch writes a model past 2 GB as one file per tensor: one data file instead (data_file.py)
        save_graph(onnx.load(str(staging / "torch" / "model.onnx")), model_dir / "onnx" / "model.onnx")
        shutil.rmtree(staging / "torch")
        tokenizer.padding_side = (
            "left"  # as the model card runs it (the graph finds the last token either way)
        )
        tokenizer.save_pretrained(str(model_dir))
        shutil.copy2(source / "config.json", model_dir / "config.json")
        (model_dir / PROMPT_FILE).write_text(json.dumps(frame, indent=2))
        # One score per pair, P(yes): the engine's score head with its sigmoid.
        (model_dir / "config_sentence_transformers.json").write_text(
            json.dumps({"activation_fn": "torch.nn.modules.activation.Sigmoid", "model_type": "CrossEncoder"})
        )
        (model_dir / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": frame["max_length"], "transformer_task": "sequence-classification"})
        )
        pairs = parity_pairs()
        expected = reference_scores(lm, tokenizer, frame, pairs)
        got = Scorer(model_dir).predict(pairs)[:, 0]
        worst = float(np.abs(got - expected).max())
        if worst > LLM_SCORE_TOLERANCE:
            raise ModelLoadError(
                f"exported reranker disagrees with transformers on {source}: |P(yes) difference| "
                f"{worst:.2e} > {LLM_SCORE_TOLERANCE}"
            )
        model_dir.rename(output)
        return worst
    except ModelLoadError:
        raise
    except Exception as exc:  # whatever torch raises: one error type, with the cause chained
        raise ModelLoadError(f"exporting the reranker {source} failed: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parity_pairs() -> list[tuple[str, str]]:
    from .parity import parity_pairs as pairs

    return pairs()


def reference_scores(
    lm: Any, tokenizer: Any, frame: dict[str, Any], pairs: list[tuple[str, str]]
) -> np.ndarray:
    """P(yes) for ``pairs`` computed as the model card does, with transformers: the formatted pair
    tokenized and cut to what the frame leaves of ``max_length``, framed, left-padded, the full LM
    head's last-token logits, ``log_softmax`` over (no, yes), ``exp`` of yes."""
    import torch

    prefix = tokenizer.encode(frame["prefix"], add_special_tokens=False)
    suffix = tokenizer.encode(frame["suffix"], add_special_tokens=False)
    texts = [
        frame["template"].format(instruction=frame["instruction"], query=q, document=d) for q, d in pairs
    ]
    budget = frame["max_length"] - len(prefix) - len(suffix)
    encoded = tokenizer(
        texts, padding=False, truncation="longest_first", max_length=budget, add_special_tokens=False
    )
    encoded["input_ids"] = [prefix + ids + suffix for ids in encoded["input_ids"]]
    encoded["attention_mask"] = [[1] * len(ids) for ids in encoded["input_ids"]]
    tokenizer.padding_side = "left"
    batch = tokenizer.pad(encoded, padding=True, return_tensors="pt")
    yes = tokenizer.convert_tokens_to_ids(frame["yes_token"])
    no = tokenizer.convert_tokens_to_ids(frame["no_token"])
    with torch.no_grad():
        logits = lm(**batch).logits[:, -1, :]
        two = torch.nn.functional.log_softmax(torch.stack([logits[:, no], logits[:, yes]], dim=1), dim=1)
    return two[:, 1].exp().numpy()


def _yes_no_module(lm: Any, yes: int, no: int) -> Any:
    """The export graph as a torch module (defined here: torch is imported only for an export)."""
    import torch

    class YesNoScore(torch.nn.Module):
        """The LM's body, the last real token's hidden state, and ``W[yes] - W[no]``: (batch, 1)."""

        def __init__(self) -> None:
            super().__init__()
            self.body = lm.get_decoder()
            head = lm.get_output_embeddings()
            weight = head.weight.detach()
            self.register_buffer("direction", (weight[yes] - weight[no]).clone().unsqueeze(1))
            bias = 0.0 if head.bias is None else float(head.bias[yes] - head.bias[no])
            self.register_buffer("offset", torch.tensor(bias, dtype=weight.dtype))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # The causal + padding mask as the 4-D additive mask transformers' eager attention builds
            # (built here because its own mask builder does not trace to ONNX).
            tokens = input_ids.shape[1]
            causal = torch.ones(tokens, tokens, dtype=torch.bool, device=input_ids.device).tril()
            allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
            dtype = self.direction.dtype
            blocked = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            hidden = self.body(input_ids=input_ids, attention_mask=blocked, use_cache=False).last_hidden_state
            steps = torch.arange(1, hidden.shape[1] + 1, device=hidden.device)
            last = (attention_mask * steps).argmax(dim=1)  # the last position whose mask is 1
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            return hidden[rows, last] @ self.direction + self.offset

    return YesNoScore()
