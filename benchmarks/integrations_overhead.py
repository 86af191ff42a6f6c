"""What each framework adapter adds to in-process embedding, at batch 32.

    python benchmarks/integrations_overhead.py                     # defaults: 40 batches of 32, 5 rounds
    python benchmarks/integrations_overhead.py --out benchmarks/results

Every contender embeds the same batches of 32 real texts of this machine (the benchmark corpus:
standard-library docstrings and licence files) on one shared TextEmbedding (the default model,
all-MiniLM-L6-v2, one ONNX Runtime session), through the call its framework makes when it embeds
documents:

- ``direct``: ``TextEmbedding.embed_passage(batch)`` (a float32 array), the baseline;
- ``langchain``: ``FastembedNativeEmbeddings.embed_documents`` (lists of floats, what vector stores call);
- ``llama_index``: ``FastembedNativeEmbedding.get_text_embedding_batch`` (with LlamaIndex's callback
  and instrumentation events);
- ``haystack``: ``FastembedNativeDocumentEmbedder.run`` on Haystack ``Document`` objects (copies with
  the embedding set);
- ``chroma``: the registered ``EmbeddingFunction`` called as Chroma calls it (its validation wrapper);
- ``lancedb``: ``compute_source_embeddings_with_retry`` (what ``table.add`` calls);
- ``qdrant``: ``Dense.documents`` (the vectors ``FastembedNativeQdrant.add`` upserts).

Rounds are interleaved: each round runs every batch through every contender, in a shuffled order, so
a busy neighbour slows all alike. The overhead of a contender is the median over (round, batch) of
its time over ``direct``'s time on the same batch in the same round, minus one; the totals' ratio is
reported too. Both carry the noise of the model's own run time (hundreds of ms a batch on 2 cores),
which is larger than any adapter's work; so the same calls are then timed with ``embed_passage``
stubbed to return a ready array: what remains is the adapter's and its framework's own time per
batch, given in ms and as a share of ``direct``'s median. A framework missing here is left out
(its extra is not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fastembed_native import TextEmbedding
from fastembed_native.bench.corpus import gather_corpus

BATCH = 32


def contenders(
    model: TextEmbedding, name: str | None, options: dict[str, Any]
) -> dict[str, Callable[[list[str]], Any]]:
    """name -> a call embedding one batch the way that framework does, all on ``model`` (the one
    the adapters' shared cache holds for ``name`` and ``options``)."""
    calls: dict[str, Callable[[list[str]], Any]] = {"direct": lambda texts: model.embed_passage(texts)}
    try:
        from fastembed_native.integrations.langchain import FastembedNativeEmbeddings

        calls["langchain"] = FastembedNativeEmbeddings(model=model).embed_documents
    except ImportError:
        pass
    try:
        from fastembed_native.integrations.llama_index import FastembedNativeEmbedding

        llama = FastembedNativeEmbedding(model=model, embed_batch_size=BATCH)
        calls["llama_index"] = llama.get_text_embedding_batch
    except ImportError:
        pass
    try:
        os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
        from haystack import Document

        from fastembed_native.integrations.haystack import FastembedNativeDocumentEmbedder

        haystack = FastembedNativeDocumentEmbedder(model_name=name, **options)
        haystack.warm_up()
        assert haystack._model is model, "the Haystack embedder loaded a model of its own"
        calls["haystack"] = lambda texts: haystack.run([Document(content=t) for t in texts])
    except ImportError:
        pass
    try:
        from fastembed_native.integrations.chroma import FastembedNativeEmbeddingFunction

        chroma = FastembedNativeEmbeddingFunction(model_name=name, **options)
        assert chroma.model is model, "the Chroma function loaded a model of its own"
        calls["chroma"] = chroma
    except ImportError:
        pass
    try:
        from lancedb.embeddings import get_registry

        from fastembed_native.integrations.lancedb import NAME

        lance = get_registry().get(NAME).create(model_name=name, **options)
        assert lance.model is model, "the LanceDB function loaded a model of its own"
        calls["lancedb"] = lance.compute_source_embeddings_with_retry
    except ImportError:
        pass
    try:
        from fastembed_native.integrations.qdrant import Dense

        calls["qdrant"] = Dense(model).documents
    except ImportError:
        pass
    return calls


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="distinct batches of 32 texts")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over every batch")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all)")
    parser.add_argument("--model", default=None, help="model directory, id or short name (default model)")
    parser.add_argument("--out", type=Path, default=None, help="write integrations.{md,json} here")
    args = parser.parse_args(argv)

    from fastembed_native.integrations._shared import embedding_model

    options = {"threads": args.threads} if args.threads else {}
    model = embedding_model(args.model, options)  # the instance every adapter's shared cache returns
    calls = contenders(model, args.model, options)
    corpus = gather_corpus(args.batches * BATCH)
    batches = [corpus[i : i + BATCH] for i in range(0, len(corpus) - BATCH + 1, BATCH)]
    for call in calls.values():  # warm-up: first calls, imports, allocations
        call(batches[0])

    reference = model.embed_passage(batches[0])
    for name, call in calls.items():
        got = call(batches[0])
        if name == "haystack":
            got = [d.embedding for d in got["documents"]]
        np.testing.assert_allclose(np.asarray(got, dtype=np.float32), reference, rtol=0, atol=1e-6)

    load_before = load_average()
    rng = np.random.default_rng(0)
    times: dict[str, list[list[float]]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name in calls:
            times[name].append([])
        for batch in batches:
            for name in rng.permutation(list(calls)):
                start = time.perf_counter()
                calls[name](batch)
                times[name][-1].append(time.perf_counter() - start)
    load_after = load_average()

    # The adapters' own time, apart from the model: embed_passage stubbed to return the batch's
    # precomputed vectors, so what is left is the framework's and the adapter's work alone.
    vectors = model.embed_passage(batches[0])  # every batch has 32 texts: one (32, dim) array fits all
    stub_times: dict[str, list[float]] = {name: [] for name in calls}
    real_embed = model.embed_passage
    model.embed_passage = lambda texts, *a, **k: vectors.copy()  # type: ignore[method-assign]
    try:
        for _ in range(args.rounds):
            for batch in batches:
                for name in rng.permutation(list(calls)):
                    start = time.perf_counter()
                    calls[name](batch)
                    stub_times[name].append(time.perf_counter() - start)
    finally:
        model.embed_passage = real_embed  # type: ignore[method-assign]

    direct = np.array(times["direct"])
    rows = []
    for name in calls:
        ours = np.array(times[name])
        rows.append(
            {
                "contender": name,
                "median_ms_per_batch": round(float(np.median(ours)) * 1e3, 2),
                "texts_per_s": round(ours.size * BATCH / float(ours.sum()), 1),
                "overhead_median_pct": round((float(np.median(ours / direct)) - 1) * 100, 2),
                "overhead_total_pct": round((float(ours.sum() / direct.sum()) - 1) * 100, 2),
                "own_ms_per_batch": round(float(np.median(stub_times[name])) * 1e3, 3),
                "own_pct_of_direct": round(
                    float(np.median(stub_times[name])) / float(np.median(direct)) * 100, 2
                ),
            }
        )
    result = {
        "batch": BATCH,
        "batches": len(batches),
        "rounds": args.rounds,
        "threads": args.threads,
        "model": str(model.model_dir.name),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": rows,
    }
    table = [
        "| contender | median ms / batch of 32 | texts/s | overhead vs direct (median of paired ratios) "
        "| overhead (totals) | own ms / batch (model stubbed) | own time / direct's median |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['contender']} | {r['median_ms_per_batch']} | {r['texts_per_s']} | "
            f"{r['overhead_median_pct']:+.2f}% | {r['overhead_total_pct']:+.2f}% | "
            f"{r['own_ms_per_batch']} | {r['own_pct_of_direct']:.2f}% |"
            for r in rows
        ),
    ]
    text = "\n".join(
        [
            "# Framework adapters: overhead over in-process embedding at batch 32",
            "",
            f"{len(batches)} batches x {args.rounds} interleaved rounds, model {result['model']}, "
            f"threads {args.threads or 'all'}, {result['machine']}; load average before "
            f"{load_before}, after {load_after}.",
            "",
            *table,
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "integrations.md").write_text(text)
        (args.out / "integrations.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
