"""The benchmark corpus: mixed-length real text gathered from this machine (no download)."""

from __future__ import annotations

import inspect as pyinspect
from pathlib import Path

import numpy as np


def gather_corpus(size: int, seed: int = 0) -> list[str]:
    """Mixed-length real text from this machine: docstrings of the standard library and the licence
    files of installed packages, split into paragraphs, sampled reproducibly."""
    import importlib
    import pkgutil
    import sysconfig

    texts: list[str] = []
    for module_info in sorted(pkgutil.iter_modules([sysconfig.get_paths()["stdlib"]]), key=lambda m: m.name):
        if module_info.name.startswith(("_", "test", "idlelib", "tkinter", "turtle", "antigravity", "this")):
            continue
        try:
            module = importlib.import_module(module_info.name)
        except Exception:  # some stdlib modules need what this machine lacks
            continue
        for _, obj in sorted(vars(module).items())[:200]:
            doc = pyinspect.getdoc(obj) if callable(obj) else None
            if doc:
                texts.extend(p.strip() for p in doc.split("\n\n") if len(p.strip()) > 20)
    site = Path(np.__file__).parent.parent
    for licence in sorted(site.glob("*.dist-info/licenses/*")) + sorted(site.glob("*.dist-info/LICENSE*")):
        if licence.is_file() and licence.stat().st_size < 200_000:
            text = licence.read_text(errors="replace")
            texts.extend(p.strip() for p in text.split("\n\n") if len(p.strip()) > 20)
    texts = sorted(set(texts))
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), size=min(size, len(texts)), replace=False)]


QUERY_WORDS = (4, 16)  # a query is a corpus sentence of this many words


def query_sentences(corpus: list[str], count: int, rng: np.random.Generator | int = 0) -> list[str]:
    """``count`` distinct short single-line sentences of ``corpus`` (its paragraphs' first sentences of
    :data:`QUERY_WORDS` words), drawn reproducibly by ``rng`` (a generator, or its seed): the
    benchmarks' queries.

    Raises:
        ValueError: the corpus has fewer such sentences than ``count``.
    """
    sentences = sorted(
        {
            first
            for paragraph in corpus
            if "\n" not in (first := paragraph.split(". ")[0].strip())
            and QUERY_WORDS[0] <= len(first.split()) <= QUERY_WORDS[1]
        }
    )
    if len(sentences) < count:
        raise ValueError(f"the corpus has {len(sentences)} query sentences; asked for {count} queries")
    rng = np.random.default_rng(rng)  # a generator is passed through as it is
    return [sentences[i] for i in rng.choice(len(sentences), size=count, replace=False)]


def sample_texts(corpus: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` texts of ``corpus`` in a reproducible random order: every text once before any comes
    twice (a corpus smaller than ``count`` is gone through again, in a new order)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count and corpus:
        out.extend(corpus[i] for i in rng.permutation(len(corpus))[: count - len(out)])
    return out
