"""Hybrid search over Python's own documentation, in an embedded Qdrant.

    python examples/hybrid_search.py                                   # the standard library, demo queries
    python examples/hybrid_search.py --query "split a string like a shell does"
    python examples/hybrid_search.py --corpus stdlib --corpus site-packages --db pydocs.qdrant
    python examples/hybrid_search.py --sparse-model prithivida/Splade_PP_en_v1 \\
        --reranker cross-encoder/ms-marco-MiniLM-L-6-v2                 # where the hub is reachable

The corpus is read from this machine: every public module, class, function and method docstring of
the standard library (its ``.py`` files parsed with ``ast``, nothing imported, plus the built-in and C
modules' docstrings), of the installed packages (``--corpus site-packages``), or of a package or folder
you name. Each docstring is one passage, ``name(signature): docstring``.

Each passage goes into one Qdrant collection (qdrant-client's local mode: in memory, or a folder with
``--db``; a server with ``--url``) with up to three named vectors, filled and searched by
``fastembed_native.integrations.qdrant.FastembedNativeQdrant``:

- ``dense``: a ``TextEmbedding`` (the default model, all-MiniLM-L6-v2, built offline from its packaged
  weights; ``--dense-model`` for another);
- ``bm25``: lexical BM25, named as what it is: words counted here (lower-cased, identifiers split,
  English stop words and a plural ``s`` dropped, BM25's saturation of the count by document length),
  weighted at query time by Qdrant's inverse document frequency (``Modifier.IDF``). No model, nothing
  learned; ``--no-bm25`` leaves it out;
- ``splade``: a learned sparse model (``SparseTextEmbedding``), only with ``--sparse-model``.

A query fetches ``--candidates`` points by each vector, fuses the lists by reciprocal rank fusion and,
with ``--reranker`` (a cross-encoder, ``TextCrossEncoder``), reranks the fused candidates. A stage
without a model is skipped and the header says so: nothing is ever filled in with an untrained model.
Model names go through the package's model store (a directory, our cache, the Hugging Face cache on
disk, the packaged default model, then a download where the hub is reachable).

Each hit prints its rank by every vector (``dense #1  bm25 #4``), so what the fusion did is visible.
``--json`` prints one JSON object per query instead.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import random
import re
import sys
import sysconfig
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastembed_native import FastembedNativeError, SparseTextEmbedding, TextCrossEncoder, TextEmbedding
from fastembed_native.integrations.qdrant import FastembedNativeQdrant, Sparse

#: Asked when no --query is given; each has an answer in the standard library.
DEMO_QUERIES = (
    "remove the common indentation from every line of a text block",
    "copy a file together with its permission bits",
    "greatest common divisor of integers",
    "split a command line into words the way a shell does",
    "find the files whose names match a wildcard pattern",
)
#: C and built-in modules whose docstrings are read by importing them (they have no .py file).
C_MODULES = (
    "builtins", "sys", "itertools", "time", "gc", "errno", "marshal", "math", "cmath", "array",
    "binascii", "zlib", "select", "fcntl", "mmap", "resource", "unicodedata", "termios", "grp", "pwd",
    "syslog",
)  # fmt: skip
#: Folders that hold tests, GUIs, vendored copies or other interpreters' files, not documentation.
SKIP_DIRS = {
    "test", "tests", "testing", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip",
    "site-packages", "dist-packages", "_vendor", "vendor", "__pycache__",
}  # fmt: skip
MAX_DOC_CHARS = 1500  # a passage keeps this much of its docstring (the models read 256-512 tokens)


# -- the corpus ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Passage:
    """One docstring: ``name`` is dotted (``textwrap.dedent``), ``where`` is its file and line."""

    name: str
    kind: str  # module, class, function, method
    signature: str
    doc: str
    where: str

    @property
    def text(self) -> str:
        return f"{self.name}{self.signature}: {self.doc}"

    @property
    def summary(self) -> str:
        """The docstring's first paragraph on one line."""
        return " ".join(self.doc.split("\n\n", 1)[0].split())


def _clean(doc: str) -> str:
    return inspect.cleandoc(doc)[:MAX_DOC_CHARS].strip()


def _public(name: str) -> bool:
    return not name.startswith("_")


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> str:
    args = node.args
    if (
        method
        and (args.posonlyargs or args.args)
        and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
    ):
        args = ast.arguments(  # drop self / cls
            posonlyargs=args.posonlyargs[1:],
            args=args.args[1:] if not args.posonlyargs else args.args,
            vararg=args.vararg,
            kwonlyargs=args.kwonlyargs,
            kw_defaults=args.kw_defaults,
            kwarg=args.kwarg,
            defaults=args.defaults,  # they belong to the last parameters, never to self
        )
    try:
        text = ast.unparse(args)
    except Exception:  # an unusual default the unparser refuses: the name alone then
        return ""
    return f"({text})" if len(text) <= 120 else "(...)"


def _from_source(module: str, path: Path, shown: str) -> Iterator[Passage]:
    """The public docstrings of one ``.py`` file, without importing it."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):  # another Python's syntax, a bad encoding, unreadable
        return
    doc = ast.get_docstring(tree)
    if doc:
        yield Passage(module, "module", "", _clean(doc), f"{shown}:1")

    def walk(body: list[ast.stmt], prefix: str, in_class: bool) -> Iterator[Passage]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
                doc = ast.get_docstring(node)
                if doc:
                    kind = "method" if in_class else "function"
                    signature = _signature(node, in_class)
                    yield Passage(
                        f"{prefix}.{node.name}", kind, signature, _clean(doc), f"{shown}:{node.lineno}"
                    )
            elif isinstance(node, ast.ClassDef) and _public(node.name):
                doc = ast.get_docstring(node)
                if doc:
                    yield Passage(f"{prefix}.{node.name}", "class", "", _clean(doc), f"{shown}:{node.lineno}")
                yield from walk(node.body, f"{prefix}.{node.name}", True)

    yield from walk(tree.body, module, False)


def _python_files(root: Path, package: str | None = None) -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every public module under ``root``, sorted."""
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and d.isidentifier() and _public(d))
        parts = [package] if package else []
        parts += list(rel.parts)
        for name in sorted(files):
            stem = name[:-3]
            if not name.endswith(".py") or not stem.isidentifier():
                continue
            if stem == "__init__":
                if parts:
                    yield ".".join(parts), Path(folder) / name
            elif _public(stem) and not stem.startswith("test"):
                yield ".".join([*parts, stem]), Path(folder) / name


def _from_c_module(name: str) -> Iterator[Passage]:
    """Docstrings of a built-in or C module (and its public classes' methods), read by importing it."""
    try:
        module = importlib.import_module(name)
    except ImportError:  # not built on this platform
        return
    where = f"{name} (built-in)"
    if module.__doc__:
        yield Passage(name, "module", "", _clean(module.__doc__), where)

    def signature(obj: Any) -> str:
        try:
            text = str(inspect.signature(obj))
        except (TypeError, ValueError):
            return ""
        return text.replace("(self, ", "(").replace("(self)", "()")

    for member, obj in sorted(vars(module).items()):
        if not _public(member) or getattr(obj, "__module__", name) not in (name, None):
            continue
        if inspect.isroutine(obj) and obj.__doc__:
            yield Passage(f"{name}.{member}", "function", signature(obj), _clean(obj.__doc__), where)
        elif inspect.isclass(obj) and obj.__doc__:
            yield Passage(f"{name}.{member}", "class", "", _clean(obj.__doc__), where)
            for attr, value in sorted(vars(obj).items()):
                if _public(attr) and inspect.isroutine(value) and value.__doc__:
                    doc = _clean(value.__doc__)
                    yield Passage(f"{name}.{member}.{attr}", "method", signature(value), doc, where)


def _wanted(name: str, modules: Sequence[str] | None) -> bool:
    return modules is None or any(name == m or name.startswith(m + ".") for m in modules)


def gather(
    sources: Sequence[str], modules: Sequence[str] | None = None, max_passages: int | None = None
) -> list[Passage]:
    """The passages of ``sources`` (``stdlib``, ``site-packages``, a package name or a folder), those of
    ``modules`` only if given (a name keeps its submodules too), deduplicated; at most
    ``max_passages``, sampled reproducibly in corpus order."""
    passages: list[Passage] = []
    for source in sources:
        if source == "stdlib":
            root = Path(sysconfig.get_paths()["stdlib"])
            files = list(_python_files(root))
            passages += [p for m in C_MODULES if _wanted(m, modules) for p in _from_c_module(m)]
        elif source == "site-packages":
            roots = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
            root = Path(next(iter(roots)))
            files = [f for r in roots for f in _python_files(Path(r))]
        elif Path(source).is_dir():
            root = Path(source).resolve().parent
            files = list(_python_files(Path(source), Path(source).resolve().name))
        else:
            spec = importlib.util.find_spec(source)
            if spec is None or not (spec.submodule_search_locations or spec.origin):
                raise SystemExit(
                    f"--corpus {source!r}: not stdlib, site-packages, a folder or a package here"
                )
            if spec.submodule_search_locations:
                package_dir = Path(next(iter(spec.submodule_search_locations)))
                root = package_dir.parent
                files = list(_python_files(package_dir, source))
            else:
                root = Path(spec.origin).parent  # type: ignore[arg-type]
                files = [(source, Path(spec.origin))]  # type: ignore[arg-type]
        for module, path in files:
            if _wanted(module, modules):
                shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
                passages += _from_source(module, path, shown)
    seen: set[str] = set()
    unique = [p for p in passages if not (p.text in seen or seen.add(p.text))]
    if max_passages is not None and len(unique) > max_passages:
        keep = sorted(random.Random(0).sample(range(len(unique)), max_passages))
        unique = [unique[i] for i in keep]
    return unique


# -- BM25: lexical term weights, no model ----------------------------------------------------------
STOP_WORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "been", "by", "can", "for", "from", "has", "have", "if",
        "in", "into", "is", "it", "its", "may", "no", "not", "of", "on", "or", "than", "that", "the", "then",
        "this", "to", "was", "were", "when", "where", "whether", "which", "will", "with",
    }
)  # fmt: skip


@dataclass
class SparseVector:
    indices: np.ndarray
    values: np.ndarray


class Bm25:
    """BM25 as sparse vectors (what fastembed's ``Qdrant/bm25`` does, without a stemmer model):
    a document's vector holds, per word, BM25's saturated count
    ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length))``; a query's holds 1 per word; the
    collection's ``Modifier.IDF`` multiplies each word by its inverse document frequency at search
    time, so the dot product is the document's BM25 score. Words are hashed to indices (CRC32)."""

    name = "bm25 (lexical: word counts with BM25 saturation, IDF by Qdrant; no model)"

    def __init__(self, avg_length: float = 40.0, k1: float = 1.2, b: float = 0.75) -> None:
        self.avg_length, self.k1, self.b = avg_length, k1, b

    @staticmethod
    def words(text: str) -> list[str]:
        # identifiers split (snake_case, CamelCase, digits), lower-cased, a plural "s" dropped
        found = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", text)
        words = [w.lower() for w in found]
        words = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]
        return [w for w in words if w not in STOP_WORDS]

    def fit(self, texts: Sequence[str]) -> Bm25:
        """Set the average document length from ``texts`` (the corpus being indexed)."""
        if texts:
            self.avg_length = max(1.0, sum(len(self.words(t)) for t in texts) / len(texts))
        return self

    def _vector(self, words: list[str], weight: Any) -> SparseVector:
        counts: dict[int, float] = {}
        for word in words:
            index = zlib.crc32(word.encode())
            counts[index] = counts.get(index, 0.0) + 1.0
        indices = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        tf = np.array([counts[i] for i in indices], dtype=np.float32)
        return SparseVector(indices, weight(tf, len(words)).astype(np.float32))

    def embed_passage(self, texts: Sequence[str]) -> list[SparseVector]:
        def saturate(tf: np.ndarray, length: int) -> np.ndarray:
            norm = self.k1 * (1 - self.b + self.b * length / self.avg_length)
            return tf * (self.k1 + 1) / (tf + norm)

        return [self._vector(self.words(t), saturate) for t in texts]

    def embed_query(self, texts: Sequence[str]) -> list[SparseVector]:
        return [self._vector(self.words(t), lambda tf, _: np.ones_like(tf)) for t in texts]


# -- the index -------------------------------------------------------------------------------------
def _say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def open_store(
    args: argparse.Namespace, passages: Sequence[Passage]
) -> tuple[FastembedNativeQdrant, dict[str, str]]:
    """The collection's models, and what each stage is (for the header); loads every model asked for."""
    options = {"threads": args.threads} if args.threads else {}
    dense = TextEmbedding(args.dense_model, **options)  # None: the default model
    stages = {
        "dense": f"{args.dense_model or 'default model'} -> {Path(dense.model_dir).name} ({dense.dim} dims)"
    }
    sparse: list[Sparse] = []
    if args.bm25:
        sparse.append(Sparse(Bm25().fit([p.text for p in passages]), name="bm25", idf=True))
        stages["bm25"] = Bm25.name
    else:
        stages["bm25"] = "off (--no-bm25)"
    if args.sparse_model:
        splade = SparseTextEmbedding(args.sparse_model, **options)
        sparse.append(Sparse(splade, name="splade"))
        stages["splade"] = f"{args.sparse_model} ({splade.vocab_size} words)"
    else:
        stages["splade"] = (
            "none: no --sparse-model given (e.g. --sparse-model prithivida/Splade_PP_en_v1 where the hub "
            "is reachable, or a SPLADE directory)"
        )
    reranker = TextCrossEncoder(args.reranker, **options) if args.reranker else None
    stages["rerank"] = (
        f"{args.reranker}"
        if reranker
        else "none: no --reranker given, hits are in fused order (e.g. --reranker "
        "cross-encoder/ms-marco-MiniLM-L-6-v2 where the hub is reachable, or a reranker directory)"
    )
    if args.url:
        from qdrant_client import QdrantClient

        client: Any = QdrantClient(url=args.url)
    else:
        client = args.db
    store = FastembedNativeQdrant(client, args.collection, model=dense, sparse=sparse, reranker=reranker)
    heads = store.vector_names
    stages["fusion"] = (
        f"reciprocal rank fusion of {' + '.join(heads)}, {args.candidates} candidates each"
        if len(heads) > 1
        else f"none (one vector: {heads[0]})"
    )
    return store, stages


def fingerprint(args: argparse.Namespace, passages: Sequence[Passage]) -> str:
    digest = hashlib.sha256(
        json.dumps([args.dense_model, args.sparse_model, args.bm25, len(passages)]).encode()
    )
    for p in passages:
        digest.update(p.text.encode())
    return digest.hexdigest()[:16]


def ingest(store: FastembedNativeQdrant, passages: Sequence[Passage], args: argparse.Namespace) -> None:
    """Fill the collection, or keep it when a folder already holds this corpus with these models."""
    marker = Path(args.db) / "hybrid_search.json" if args.db != ":memory:" and not args.url else None
    stamp = fingerprint(args, passages)
    known = json.loads(marker.read_text()) if marker and marker.is_file() else {}
    if known.get(args.collection) == stamp and store.client.collection_exists(args.collection):
        store.create_collection()  # checks the vectors fit
        _say(f"reusing {len(passages):,} passages already in {args.db} (collection {args.collection!r})")
        return
    store.create_collection(recreate=True)
    started, chunk = time.perf_counter(), 512
    for start in range(0, len(passages), chunk):
        part = passages[start : start + chunk]
        store.add(
            [p.text for p in part],
            metadata=[
                {"name": p.name, "signature": p.signature, "kind": p.kind, "where": p.where} for p in part
            ],
            ids=range(start, start + len(part)),
        )
        done = start + len(part)
        rate = done / (time.perf_counter() - started)
        _say(f"  indexed {done:,} / {len(passages):,} passages ({rate:.0f}/s)")
    _say(f"indexed {len(passages):,} passages in {time.perf_counter() - started:.1f} s")
    if marker:
        marker.write_text(json.dumps({**known, args.collection: stamp}))


# -- searching -------------------------------------------------------------------------------------
def search(store: FastembedNativeQdrant, query: str, top: int, candidates: int) -> dict[str, Any]:
    """The ``top`` hits for ``query`` (fused, then reranked when there is a reranker) with each hit's
    rank by every named vector (None: not among that vector's candidates)."""
    started = time.perf_counter()
    hits = store.query(query, limit=top, candidates=candidates)
    elapsed = time.perf_counter() - started
    ranks: dict[str, dict[Any, int]] = {}
    if len(store.vector_names) > 1:  # each vector's own list, to show what the fusion did
        for name in store.vector_names:
            points = store.query(query, limit=candidates, using=[name], rerank=False)
            ranks[name] = {p.id: i + 1 for i, p in enumerate(points)}
    return {
        "query": query,
        "ms": round(elapsed * 1000, 1),
        "fused": len(store.vector_names) > 1,
        "reranked": store.reranker is not None,
        "hits": [
            {
                "rank": i + 1,
                "id": h.id,
                "name": h.payload["name"],
                "signature": h.payload.get("signature", ""),
                "kind": h.payload["kind"],
                "where": h.payload["where"],
                "score": h.score,
                "ranks": {name: by_id.get(h.id) for name, by_id in ranks.items()},
                "document": h.payload["document"],
            }
            for i, h in enumerate(hits)
        ],
    }


def show(result: dict[str, Any]) -> None:
    print(f"\nQ: {result['query']}   ({result['ms']:.0f} ms)")
    score_name = "rerank" if result["reranked"] else "rrf" if result["fused"] else "score"
    for hit in result["hits"]:
        ranks = "  ".join(f"{n} #{r}" if r else f"{n} -" for n, r in hit["ranks"].items())
        title = hit["name"] + hit["signature"]
        doc = hit["document"][len(title) + 2 :]  # the passage is "title: docstring"
        print(f"  {hit['rank']:2d}. {title}  [{score_name} {hit['score']:.4f}]  {ranks}")
        summary = " ".join(doc.split())
        print(f"      {summary[:150]}{'...' if len(summary) > 150 else ''}")
        print(f"      {hit['where']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus",
        action="append",
        help="stdlib (default), site-packages, a package or a folder; repeat to add",
    )
    parser.add_argument("--modules", help="comma-separated module names to keep (with their submodules)")
    parser.add_argument("--max-passages", type=int, help="at most this many passages (a reproducible sample)")
    parser.add_argument("--query", action="append", help="a query (repeat); default: a few demo queries")
    parser.add_argument("--top", type=int, default=5, help="hits per query (default 5)")
    parser.add_argument(
        "--candidates", type=int, default=50, help="points each vector contributes (default 50)"
    )
    parser.add_argument("--db", default=":memory:", help="a folder to keep the index in (default: in memory)")
    parser.add_argument("--url", help="a Qdrant server instead of local mode (http://localhost:6333)")
    parser.add_argument("--collection", default="pydocs")
    parser.add_argument(
        "--dense-model", help="dense model: id, short name or directory (default: the default model)"
    )
    parser.add_argument("--sparse-model", help="a SPLADE model (id or directory) for a learned sparse vector")
    parser.add_argument(
        "--no-bm25", dest="bm25", action="store_false", help="leave out the lexical BM25 vector"
    )
    parser.add_argument("--reranker", help="a cross-encoder (id or directory) to rerank the fused candidates")
    parser.add_argument("--threads", type=int, help="threads per model (default: ONNX Runtime's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per query")
    args = parser.parse_args(argv)
    if not args.bm25 and not args.sparse_model:
        _say("note: --no-bm25 without --sparse-model: dense search only, no fusion")

    started = time.perf_counter()
    modules = [m.strip() for m in args.modules.split(",")] if args.modules else None
    passages = gather(args.corpus or ["stdlib"], modules, args.max_passages)
    if not passages:
        raise SystemExit("no passages: check --corpus and --modules")
    _say(
        f"corpus: {len(passages):,} docstrings from {', '.join(args.corpus or ['stdlib'])}"
        f"{' (' + args.modules + ')' if args.modules else ''} in {time.perf_counter() - started:.1f} s"
    )
    with warnings.catch_warnings():  # qdrant-client's local mode warns past 20,000 points
        warnings.simplefilter("ignore", UserWarning)
        try:
            store, stages = open_store(args, passages)
        except (FastembedNativeError, OSError) as exc:  # a model that is not here and cannot be fetched
            raise SystemExit(f"hybrid_search: cannot load a model: {exc}") from None
        where = args.url or ("memory" if args.db == ":memory:" else args.db)
        _say(f"Qdrant ({'server' if args.url else 'local mode'}: {where}), collection {args.collection!r}")
        for stage, what in stages.items():
            _say(f"  {stage:7s}: {what}")
        ingest(store, passages, args)
        for query in args.query or DEMO_QUERIES:
            result = search(store, query, args.top, args.candidates)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                show(result)
    store.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
