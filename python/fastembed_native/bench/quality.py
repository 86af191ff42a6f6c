"""``fastembed-native bench quality``: does a model variant (int8, fp16, ...) retrieve like fp32?

A labeled retrieval task built from real text on this machine, plus cosine against fp32:

* **Evaluation set** (``docstrings-v1``): the docstrings of the installed Python packages and of the
  standard library (sorted files, ``ast``). Each docstring splits at its first blank line: the
  first paragraph is a *query*, the rest is its *answer* (whitespace folded, cut at
  ``BODY_CHARS`` on a word boundary). Kept: summaries of 25..300 characters and 4+ words, answers
  of 80+ characters that do not contain their summary verbatim; answers deduplicated, and a query
  only where its summary and its answer belong to each other alone (no summary with two answers,
  no answer with two summaries). Every distinct answer is a candidate (some 50,000); ``queries``
  of the queries are drawn with a fixed seed. Built once (parsing takes minutes) and cached under
  ``<model cache>/eval/``, with the sources' fingerprint.
* **Calibration** (:mod:`fastembed_native.models.calibration`) uses other text (Debian package
  descriptions, or licence files), so nothing ``quantize`` calibrated on is evaluated on.
* **Metrics** per variant: recall@1, recall@10 and MRR over all candidates (cosine of normalized
  vectors), the paired bootstrap 95% interval of the MRR difference against the reference (same
  queries, 10,000 resamples, fixed seed), and min / 1st-percentile / mean cosine against the
  reference's vectors over every text embedded (queries and candidates).

Vectors are cached per (set, ONNX file contents) under ``<model cache>/eval/vectors/``, so a
reference is embedded once. ``--quick`` runs a few hundred queries over a small set from a few
standard-library packages (a smoke test, not a measurement).

Rerankers and SPLADE models (``--kind rerank|sparse``, by default read from the model's files) are
judged on the same set by agreement with fp32: a reranker by NDCG@10 of its ordering against fp32's,
Spearman and max |score difference|; SPLADE by retrieval over a candidate pool and the share of
non-zero indices kept (:mod:`.quality_heads`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SET_NAME = "docstrings-v1"
BODY_CHARS = 320  # an answer's length cap: ~80 tokens, the size of a short passage
MIN_SUMMARY_CHARS, MAX_SUMMARY_CHARS, MIN_SUMMARY_WORDS = 25, 300, 4
MIN_BODY_CHARS = 80
DEFAULT_QUERIES = 5000
QUICK_QUERIES = 200
#: Standard-library packages the quick set reads (small, present in every CPython).
QUICK_PACKAGES = ("json", "email", "http", "logging", "urllib", "xml", "concurrent", "importlib")
SEED = 20
BOOTSTRAP_RESAMPLES = 10_000
MAX_FILE_BYTES = 2_000_000
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "testing", "__pycache__", "fastembed_native"}


@dataclass
class EvalSet:
    """Queries, candidates, and for each query the index of its one right candidate."""

    name: str
    queries: list[str]
    answers: np.ndarray
    candidates: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def texts(self) -> list[str]:
        """Every text of the set, queries first (what the cosine statistics run over)."""
        return self.queries + self.candidates

    def digest(self) -> str:
        h = hashlib.sha256()
        for text in self.texts():
            h.update(text.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()[:16]


def eval_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    from ..models import cache_root

    return cache_root(cache) / "eval"


# --- the evaluation set ------------------------------------------------------------------------


def _fold(text: str) -> str:
    return " ".join(text.split())


def _cap(text: str, limit: int = BODY_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


def source_files(quick: bool = False) -> list[Path]:
    """The .py files the set is read from, sorted: the standard library and the installed packages
    (tests and this package left out); ``quick``: a few standard-library packages."""
    paths = sysconfig.get_paths()
    stdlib = Path(paths["stdlib"])
    roots = [stdlib / name for name in QUICK_PACKAGES] if quick else [stdlib]
    if not quick:
        roots += sorted({Path(paths["purelib"]), Path(paths["platlib"])})
    files: list[Path] = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            files += [Path(folder) / n for n in sorted(names) if n.endswith(".py")]
    return files


def docstrings(path: Path) -> list[str]:
    """The docstrings of a file's module, classes and functions (none if it does not parse)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [d for node in ast.walk(tree) if isinstance(node, kinds) for d in [ast.get_docstring(node)] if d]


def split_docstring(doc: str) -> tuple[str, str] | None:
    """(summary, answer) of a docstring, or None when it is not a usable pair (see the module doc)."""
    parts = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    if len(parts) < 2:
        return None
    summary, body = _fold(parts[0]), _fold(parts[1])
    if not MIN_SUMMARY_CHARS <= len(summary) <= MAX_SUMMARY_CHARS or len(summary.split()) < MIN_SUMMARY_WORDS:
        return None
    if len(body) < MIN_BODY_CHARS or summary.lower() in body.lower():
        return None
    return summary, _cap(body)


def build_docstring_set(quick: bool = False, queries: int | None = None, seed: int = SEED) -> EvalSet:
    """Build the docstring retrieval set from this interpreter's files (minutes; see the module doc)."""
    files = source_files(quick)
    summaries_of: dict[str, set[str]] = {}
    answers_of: dict[str, set[str]] = {}
    order: dict[str, int] = {}  # candidates in first-seen order (files sorted, ast.walk's order)
    fingerprint = hashlib.sha256()
    for path in files:
        fingerprint.update(f"{path.name}:{path.stat().st_size}\n".encode())
        for doc in docstrings(path):
            pair = split_docstring(doc)
            if pair is None:
                continue
            summary, body = pair
            order.setdefault(body, len(order))
            summaries_of.setdefault(body, set()).add(summary)
            answers_of.setdefault(summary, set()).add(body)
    candidates = list(order)
    pairs = sorted(
        (next(iter(summaries)), order[body])
        for body, summaries in summaries_of.items()
        if len(summaries) == 1 and len(answers_of[next(iter(summaries))]) == 1
    )
    wanted = queries or (QUICK_QUERIES if quick else DEFAULT_QUERIES)
    picked = random.Random(seed).sample(pairs, min(wanted, len(pairs)))
    return EvalSet(
        name=SET_NAME + ("-quick" if quick else ""),
        queries=[q for q, _ in picked],
        answers=np.array([a for _, a in picked], dtype=np.int64),
        candidates=candidates,
        meta={
            "files": len(files),
            "sources_fingerprint": fingerprint.hexdigest()[:16],
            "python": sys.version.split()[0],
            "clean_pairs": len(pairs),
            "seed": seed,
            "body_chars": BODY_CHARS,
        },
    )


def load_eval_set(
    quick: bool = False, queries: int | None = None, cache: str | os.PathLike[str] | None = None
) -> EvalSet:
    """The cached evaluation set, built first if missing."""
    wanted = queries or (QUICK_QUERIES if quick else DEFAULT_QUERIES)
    path = eval_dir(cache) / f"{SET_NAME}{'-quick' if quick else ''}-q{wanted}.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return EvalSet(
            data["name"], data["queries"], np.array(data["answers"]), data["candidates"], data["meta"]
        )
    start = time.perf_counter()
    built = build_docstring_set(quick=quick, queries=wanted)
    built.meta["build_seconds"] = round(time.perf_counter() - start, 1)
    built.meta["digest"] = built.digest()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": built.name,
        "meta": built.meta,
        "queries": built.queries,
        "answers": built.answers.tolist(),
        "candidates": built.candidates,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return built


# --- metrics -----------------------------------------------------------------------------------


def ranks(queries: np.ndarray, candidates: np.ndarray, answers: np.ndarray, chunk: int = 512) -> np.ndarray:
    """1-based rank of each query's answer among all candidates by dot product (ties count against
    the answer: a candidate scoring equal to it ranks above it)."""
    out = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ candidates.T
        right = scores[np.arange(len(scores)), answers[start : start + chunk]]
        out[start : start + chunk] = (scores >= right[:, None]).sum(axis=1)
    return out


def retrieval(rank: np.ndarray) -> dict[str, float]:
    return {
        "recall@1": float((rank <= 1).mean()),
        "recall@10": float((rank <= 10).mean()),
        "mrr": float((1.0 / rank).mean()),
    }


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95% interval of mean(b) - mean(a) over the same items, resampled together."""
    diff = (b - a).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):
        idx = rng.integers(0, len(diff), size=(min(500, resamples - start), len(diff)))
        means[start : start + len(idx)] = diff[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def cosine_stats(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    from ..models import cosine_rows

    cos = cosine_rows(reference, other)
    return {
        "min_cosine": float(cos.min()),
        "p1_cosine": float(np.percentile(cos, 1)),
        "mean_cosine": float(cos.mean()),
        "cosine_texts": len(cos),
    }


# --- embedding, with a cache -------------------------------------------------------------------


def file_digest(onnx_path: Path) -> str:
    """sha256 of an ONNX file and of the external-data files beside it that it names."""
    h = hashlib.sha256()
    paths = [onnx_path]
    try:
        from ..models.data_file import data_files

        paths += data_files(onnx_path)
    except ImportError:
        pass
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def embed_set(
    model_dir: Path,
    onnx_file: str,
    eval_set: EvalSet,
    *,
    threads: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Vectors of every text of ``eval_set`` (queries first) with ``model_dir``'s ``onnx_file``."""
    from ..engine import Embedder

    path = Path(onnx_file) if Path(onnx_file).is_absolute() else model_dir / onnx_file
    key = f"{eval_set.name}-{eval_set.digest()}-{file_digest(path)}"
    stored = eval_dir(cache) / "vectors" / f"{key}.npy"
    if use_cache and stored.is_file():
        return np.load(stored)
    model = Embedder(model_dir, onnx_file=str(path), fused=False, threads=threads)
    vectors = model.embed(eval_set.texts())
    if use_cache:
        stored.parent.mkdir(parents=True, exist_ok=True)
        tmp = stored.with_name(stored.stem + ".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(stored)
    return vectors


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def evaluate(
    model_dir: Path,
    variants: list[str],
    eval_set: EvalSet,
    *,
    reference: str | None = None,
    threads: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """The reference file and each variant on ``eval_set``: retrieval metrics, the paired interval
    of each variant's MRR difference, and cosine against the reference's vectors."""
    from ..engine import find_onnx

    if reference is None:
        reference = str(find_onnx(model_dir).relative_to(model_dir))
    n = len(eval_set.queries)
    results: dict[str, Any] = {}
    base_rr: np.ndarray | None = None
    base_vectors: np.ndarray | None = None
    for name in [reference, *variants]:
        start = time.perf_counter()
        vectors = embed_set(model_dir, name, eval_set, threads=threads, cache=cache, use_cache=use_cache)
        unit = _unit(vectors)
        rank = ranks(unit[:n], unit[n:], eval_set.answers)
        rr = 1.0 / rank
        entry: dict[str, Any] = retrieval(rank)
        if base_rr is None or base_vectors is None:
            base_rr, base_vectors = rr, vectors
        else:
            low, high = paired_bootstrap(base_rr, rr)
            entry["mrr_difference"] = float(rr.mean() - base_rr.mean())
            entry["mrr_relative"] = entry["mrr_difference"] / float(base_rr.mean())
            entry["mrr_difference_95"] = [low, high]
            entry.update(cosine_stats(base_vectors, vectors))
        entry["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = entry
        print(f"{name}: {format_row(entry)}", file=sys.stderr, flush=True)
    return {
        "model": str(model_dir),
        "set": {"name": eval_set.name, "queries": n, "candidates": len(eval_set.candidates), **eval_set.meta},
        "reference": reference,
        "variants": results,
    }


def format_row(entry: dict[str, Any]) -> str:
    text = f"R@1 {entry['recall@1']:.4f} R@10 {entry['recall@10']:.4f} MRR {entry['mrr']:.4f}"
    if "mrr_difference" in entry:
        low, high = entry["mrr_difference_95"]
        text += (
            f" dMRR {entry['mrr_difference']:+.4f} ({entry['mrr_relative'] * 100:+.2f}%, 95% [{low:+.4f}, "
            f"{high:+.4f}]) cos min {entry['min_cosine']:.4f} p1 {entry['p1_cosine']:.4f}"
        )
    return text


def markdown(report: dict[str, Any]) -> str:
    s = report["set"]
    lines = [
        f"Set {s['name']}: {s['queries']} queries over {s['candidates']} candidates; reference "
        f"{report['reference']}; cosine over {s['queries'] + s['candidates']} texts.",
        "",
        "| variant | recall@1 | recall@10 | MRR | MRR diff (95% interval) | min cos | p1 cos |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in report["variants"].items():
        if "mrr_difference" in e:
            low, high = e["mrr_difference_95"]
            diff = f"{e['mrr_relative'] * 100:+.2f}% [{low:+.4f}, {high:+.4f}]"
            cos = f"{e['min_cosine']:.4f} | {e['p1_cosine']:.4f}"
        else:
            diff, cos = "(reference)", "1 | 1"
        lines.append(
            f"| {name} | {e['recall@1']:.4f} | {e['recall@10']:.4f} | {e['mrr']:.4f} | {diff} | {cos} |"
        )
    return "\n".join(lines) + "\n"


def record(model_dir: Path, report: dict[str, Any]) -> None:
    """Write each variant's retrieval results into the recipe file beside it (skipping files that
    have none: those ``quantize`` did not make)."""
    from ..models.quantize import read_recipe, record_quality

    s = report["set"]
    for name, entry in report["variants"].items():
        if name == report["reference"]:
            continue
        path = Path(name) if Path(name).is_absolute() else model_dir / name
        if read_recipe(path) is None:
            print(f"{name}: no recipe file beside it; not recorded", file=sys.stderr)
            continue
        record_quality(
            path,
            {
                "set": f"{s['name']} ({s['queries']} queries, {s['candidates']} candidates)",
                "reference": report["reference"],
                **{
                    k: entry[k] for k in ("recall@1", "recall@10", "mrr", "mrr_relative", "mrr_difference_95")
                },
                **{k: entry[k] for k in ("min_cosine", "p1_cosine", "mean_cosine", "cosine_texts")},
                "reference_recall@10": report["variants"][report["reference"]]["recall@10"],
                "reference_mrr": report["variants"][report["reference"]]["mrr"],
            },
        )
