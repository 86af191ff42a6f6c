"""``fastembed-native bench serve --rerank``: this server's TEI ``/rerank`` under concurrent
keep-alive clients against in-process ``TextCrossEncoder.rerank``, on the same ONNX file, the same
threads and the same (query, documents) items, interleaved; and with ``--soak N`` a long varied
rerank run with the server's RSS sampled along the way.

The model is ``bench rerank``'s (:mod:`.rerank_models`: random weights at a real reranker's shape,
built once into ``--models-dir``), the items are ``bench rerank``'s workload (:func:`.rerank.build_workload`:
a short real query against ``--docs`` real corpus paragraphs of mixed length), served by
``fastembed-native serve --model model=<its ONNX folder>``.

Interleaved: for each ``--clients`` value, ``--rounds`` rounds; in each round the server answers
``--requests`` items (one request each, ``clients`` at a time, stopping early at ``--limit-seconds``),
and in-process ``TextCrossEncoder.rerank`` reranks the first ``--in-process`` of the same items one by
one, in alternating order, after a pause that lets the other go idle. Reported: pairs/s of each
(pairs over the summed seconds of all rounds), their ratio (goal: server >= 0.8x in-process), p50/p99
of one request (the server's under ``clients`` concurrent requests: it includes the wait for the
others), what the server's metrics say about engine calls, and the max |logit difference| between the
server's and the in-process scores of the same items.

``--soak N`` (with ``--rerank``): N requests of varied shapes (1-200 documents, real paragraphs and
random word runs up to far past the max length, TEI's and Cohere's routes, ``top_n``,
``return_documents``, raw scores, and about one request in fifty hostile: the 4xx it should get is
checked), with the server's RSS sampled (:func:`.soak.soak_run`).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .corpus import gather_corpus
from .load import Call, percentiles_ms, rerank_call, run_rerank_load
from .rerank import Workload, build_workload
from .rerank_models import RerankerModel, ensure_model
from .servers import Peer, engine_split, make_peers
from .soak import soak_run

#: ``--limit-seconds`` of one rerank run when not given (a request of 100 documents takes ~0.7 s
#: of engine time on 2 cores: 128 of them take ~90 s whatever the number of clients).
LIMIT_SECONDS = 300.0


def served_reranker(args: argparse.Namespace) -> tuple[RerankerModel, list[str], Peer]:
    """The benchmark reranker (built first if missing), the whole corpus, and our server for it."""
    from ..models import cache_root

    corpus = gather_corpus(10**9, seed=args.seed)  # all of it, as bench rerank gathers it
    model = ensure_model(args.reranker, args.models_dir or cache_root() / "bench-rerank", corpus)
    options = {**vars(args), "contenders": "fastembed_native", "infinity": None}
    peer = make_peers(argparse.Namespace(**options), model.onnx_dir)[0]
    return model, corpus, peer


def in_process(encoder: Any, items: Workload) -> dict[str, Any]:
    """``encoder.rerank`` of each item in turn (raw scores: the logits), timed one by one."""
    seconds, scores = [], {}
    for index, (query, documents) in enumerate(items):
        start = time.perf_counter()
        scores[index] = encoder.rerank(query, documents, raw_scores=True)
        seconds.append(time.perf_counter() - start)
    pairs = sum(len(docs) for _, docs in items)
    return {
        "requests": len(items),
        "pairs": pairs,
        "seconds": sum(seconds),
        "latencies": seconds,
        "scores": scores,
    }


def run_rerank(args: argparse.Namespace) -> dict[str, Any]:
    """The interleaved server / in-process runs for every ``--clients`` value."""
    import uvloop

    from ..cross_encoder import TextCrossEncoder

    model, corpus, peer = served_reranker(args)
    workload = build_workload(args.queries, args.docs, corpus, seed=args.seed)
    encoder = TextCrossEncoder(model.onnx_dir, threads=args.threads)
    tokens = [
        sum(len(e) for e in encoder.engine.tokenizer.encode_pairs([(q, d) for d in docs]))
        for q, docs in workload
    ]
    limit = args.limit_seconds or LIMIT_SECONDS
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_start": os.getloadavg()[0]},
        "model": {"name": model.name, "shape": model.shape.describe(), "onnx_file": str(model.onnx_path),
                  "max_length": encoder.max_length},
        "threads": args.threads, "docs_per_request": args.docs, "queries": len(workload),
        "tokens_per_request": statistics.mean(tokens), "requests_per_round": args.requests,
        "in_process_per_round": args.in_process, "rounds": args.rounds, "limit_seconds": limit,
        "settle_s": args.settle, "loads": {},
    }  # fmt: skip
    peer.start(args.ready_timeout)
    try:
        results["server"] = {"ready_seconds": peer.ready_seconds, "idle": peer.rss_mb()}
        encoder.rerank(*workload[0])  # warm-up: ORT's arena, on both sides
        uvloop.run(run_rerank_load(peer, workload[:2], 2, limit))
        position = 0
        for clients in args.clients:
            rounds = []
            for number in range(args.rounds):
                items = [workload[(position + i) % len(workload)] for i in range(args.requests)]
                position += args.requests
                sides = ("server", "in_process") if number % 2 == 0 else ("in_process", "server")
                outcome: dict[str, dict[str, Any]] = {}
                for side in sides:
                    time.sleep(args.settle)
                    if side == "server":
                        before = peer.metrics()
                        outcome[side] = uvloop.run(run_rerank_load(peer, items, clients, limit))
                        outcome[side]["engine"] = engine_split(before, peer.metrics())
                    else:
                        outcome[side] = in_process(encoder, items[: args.in_process])
                rounds.append(outcome)
                server, local = outcome["server"], outcome["in_process"]
                print(
                    f"{clients} clients, round {number + 1}/{args.rounds}: server "
                    f"{server['pairs'] / server['seconds']:.1f} pairs/s ({server['errors']} errors), "
                    f"in-process {local['pairs'] / local['seconds']:.1f} pairs/s",
                    file=sys.stderr,
                )
            results["loads"][f"{clients} client" + ("s" if clients != 1 else "")] = summarize(clients, rounds)
        results["server"]["after"] = peer.rss_mb()
        results["machine"]["load_average_end"] = os.getloadavg()[0]
    finally:
        peer.stop()
    return results


def summarize(clients: int, rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """One load's rounds: each side's pairs/s over all rounds, latency percentiles over all requests,
    the ratio (overall and per round), and the server's scores against the in-process ones."""
    out: dict[str, Any] = {"clients": clients}
    for side in ("server", "in_process"):
        runs = [r[side] for r in rounds]
        pairs, seconds = sum(r["pairs"] for r in runs), sum(r["seconds"] for r in runs)
        latencies = [
            s for r in runs for s in (r["latencies"].values() if side == "server" else r["latencies"])
        ]
        p50, p95, p99 = percentiles_ms(latencies)
        out[side] = {"requests": sum(r["requests"] for r in runs), "pairs": pairs, "seconds": seconds,
                     "pairs_per_s": pairs / seconds, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}  # fmt: skip
    server = [r["server"] for r in rounds]
    out["server"]["errors"] = sum(r["errors"] for r in server)
    out["server"]["statuses"] = dict(sum((Counter(r["statuses"]) for r in server), Counter()))
    engine = [r["engine"] for r in server if r.get("engine")]
    if engine:
        calls = sum(e["engine_calls"] for e in engine)
        out["server"]["engine_calls"] = calls
        out["server"]["pairs_per_call"] = (
            sum(e["engine_calls"] * e["inputs_per_call"] for e in engine) / calls
        )
        out["server"]["requests_per_call"] = (
            sum(e["engine_calls"] * e["requests_per_call"] for e in engine) / calls
        )
        out["server"]["queue_ms_per_request"] = statistics.mean(e["queue_ms_per_request"] for e in engine)
    out["ratio"] = out["server"]["pairs_per_s"] / out["in_process"]["pairs_per_s"]
    out["ratio_per_round"] = [
        (r["server"]["pairs"] / r["server"]["seconds"])
        / (r["in_process"]["pairs"] / r["in_process"]["seconds"])
        for r in rounds
    ]
    diffs, same, compared = [], 0, 0
    for r in rounds:
        for index, expected in r["in_process"]["scores"].items():
            got = r["server"]["scores"].get(index)
            if got is None:
                continue
            compared += 1
            diffs.append(float(np.abs(got - expected).max()))
            same += np.array_equal(np.argsort(-got, kind="stable"), np.argsort(-expected, kind="stable"))
    out["compared_requests"] = compared
    out["max_abs_logit_difference"] = max(diffs) if diffs else None
    out["same_ranking"] = int(same)
    return out


def markdown(results: dict[str, Any]) -> str:
    """The load report: one row per ``--clients`` value."""
    m = results["model"]
    lines = [
        f"### Reranking over HTTP: {m['name']} ({m['shape']}), {results['docs_per_request']} documents per request",
        "",
        f"TEI `/rerank` of this server against in-process `TextCrossEncoder.rerank`, same ONNX file, "
        f"{results['threads']} threads each, the same items (a real query and {results['docs_per_request']} "
        f"real corpus paragraphs, {results['tokens_per_request']:.0f} tokens per request on average, pairs "
        f"cut at {m['max_length']}); interleaved over {results['rounds']} rounds of {results['requests_per_round']} "
        f"server requests and {results['in_process_per_round']} in-process reranks; random weights.",
        "",
        "| load | server pairs/s | in-process pairs/s | server / in-process (per round) | server p50 / p99 ms "
        "| in-process p50 / p99 ms | requests | errors | pairs per engine call | requests per call "
        "| max abs logit diff | same ranking |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["loads"].items():
        s, i = row["server"], row["in_process"]
        diff = row["max_abs_logit_difference"]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{s['pairs_per_s']:.1f}",
                    f"{i['pairs_per_s']:.1f}",
                    f"**{row['ratio']:.2f}x** ({', '.join(f'{r:.2f}' for r in row['ratio_per_round'])})",
                    f"{s['p50_ms']:.0f} / {s['p99_ms']:.0f}",
                    f"{i['p50_ms']:.0f} / {i['p99_ms']:.0f}",
                    str(s["requests"]),
                    str(s["errors"]),
                    f"{s.get('pairs_per_call', float('nan')):.1f}",
                    f"{s.get('requests_per_call', float('nan')):.2f}",
                    "-" if diff is None else f"{diff:.1e}",
                    f"{row['same_ranking']}/{row['compared_requests']}",
                ]
            )
            + " |"
        )
    server = results["server"]
    lines += [
        "",
        "Under N concurrent clients a request's latency includes its wait for the other N - 1 requests "
        "(each client sends its next request when its answer arrives).",
        f"Server: ready in {server['ready_seconds']:.2f} s, RSS {server['idle']['rss_mb']:.0f} MB idle, "
        f"{server['after']['rss_mb']:.0f} MB after the runs (peak {server['after']['peak_rss_mb']:.0f} MB).",
        f"Machine: {machine_line(results['machine'])}; pause between turns {results['settle_s']} s.",
    ]
    return "\n".join(lines) + "\n"


def machine_line(machine: dict[str, Any]) -> str:
    """The platform and CPUs, and the 1-minute load average at the start and the end of the run when
    recorded (how busy the machine was with other work)."""
    line = f"{machine['platform']}, {machine['cpus']} CPUs"
    if "load_average_start" in machine:
        line += (
            f", load average {machine['load_average_start']:.1f} at the start and "
            f"{machine.get('load_average_end', float('nan')):.1f} at the end"
        )
    return line


# -- the long varied run ------------------------------------------------------------------------------
class VariedReranks:
    """Random rerank requests of varied shapes for :func:`.soak.soak_run` (see the module's doc);
    ``kinds`` counts what was made."""

    HOSTILE_EVERY = 50

    def __init__(self, model: str, corpus: list[str], seed: int, max_inputs: int = 2048) -> None:
        self.model = model
        self.documents = corpus
        self.queries = [p.split(". ")[0].strip() for p in corpus if "\n" not in p.split(". ")[0]]
        self.words = " ".join(corpus[:500]).split()
        self.max_inputs = max_inputs
        self.rng = random.Random(seed)
        self.kinds: Counter[str] = Counter()

    def _words(self, low: int, high: int) -> str:
        return " ".join(self.rng.choices(self.words, k=self.rng.randint(low, high)))

    def _document(self) -> str:
        r = self.rng.random()
        if r < 0.8:
            return self.rng.choice(self.documents)  # real text: 20 characters to tens of thousands
        if r < 0.81:
            return ""
        return self._words(1, 30) if r < 0.97 else self._words(300, 1500)  # the long ones are cut

    def _query(self) -> str:
        r = self.rng.random()
        if r < 0.8:
            return self.rng.choice(self.queries)
        return self._words(1, 60) if r < 0.98 else self._words(300, 1000)

    def __call__(self) -> Call:
        if self.rng.randrange(self.HOSTILE_EVERY) == 0:
            return self.hostile()
        count = self.rng.choice([1, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100, 200])
        query, documents = self._query(), [self._document() for _ in range(count)]
        route = self.rng.random()
        if route < 0.5:
            self.kinds["tei /rerank"] += 1
            options = {"raw_scores": self.rng.random() < 0.5, "return_text": self.rng.random() < 0.3}
            if self.rng.random() < 0.3:
                options["truncate"] = True
            return rerank_call(self.model, query, documents, **options)
        top_n = self.rng.choice([None, 1, 3, 10, count])
        body: dict[str, Any] = {"model": self.model, "query": query, "top_n": top_n,
                                "return_documents": self.rng.random() < 0.3}  # fmt: skip
        if route < 0.85:
            self.kinds["cohere /v1/rerank"] += 1
            return Call("/v1/rerank", {**body, "documents": documents}, count)
        self.kinds["cohere /v2/rerank, documents as objects"] += 1
        return Call("/v2/rerank", {**body, "documents": [{"text": d} for d in documents]}, count)

    def hostile_cases(self) -> list[tuple[str, Call]]:
        """Every hostile request (named), each with the status it should get."""
        cases: Sequence[tuple[str, str, dict[str, Any], int]] = (
            ("empty texts", "/rerank", {"query": "q", "texts": []}, 400),
            ("a document not a string", "/rerank", {"query": "q", "texts": ["ok", 3]}, 400),
            ("query not a string", "/v1/rerank", {"query": None, "documents": ["d"]}, 400),
            ("top_n 0", "/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 0}, 400),
            ("more documents than --max-inputs", "/rerank",
             {"query": "q", "texts": ["d"] * (self.max_inputs + 1)}, 413),
            ("a 1 MiB query", "/rerank", {"query": "x" * (2**20 + 1), "texts": ["d"]}, 413),
            ("an over-long pair with truncate false", "/rerank",
             {"query": "q", "texts": ["short", self._words(800, 1200)], "truncate": False}, 422),
            ("an unknown model", "/rerank", {"query": "q", "texts": ["d"], "model": "no-such-model"}, 404),
        )  # fmt: skip
        return [
            (f"{name} ({status})", Call(path, {"model": self.model, **body}, 0, expect=status))
            for name, path, body, status in cases
        ]

    def hostile(self) -> Call:
        """One of :meth:`hostile_cases`, at random."""
        name, call = self.rng.choice(self.hostile_cases())
        self.kinds[f"hostile: {name}"] += 1
        return call


def rerank_soak(args: argparse.Namespace) -> dict[str, Any]:
    """``--soak N --rerank``: the long varied run (see the module's doc)."""
    model, corpus, peer = served_reranker(args)
    load_start = os.getloadavg()[0]
    make = VariedReranks(peer.model, corpus, args.seed)
    out = soak_run(
        peer,
        make,
        args.soak,
        clients=args.soak_clients or 16,
        warmup=args.soak_warmup,
        limit_s=args.soak_seconds,
        label="rerank soak",
        ready_timeout=args.ready_timeout,
    )
    out["model"] = {"name": model.name, "shape": model.shape.describe()}
    out["threads"] = args.threads
    out["kinds"] = dict(make.kinds.most_common())
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                      "load_average_start": load_start, "load_average_end": os.getloadavg()[0]}  # fmt: skip
    return out


def soak_markdown(results: dict[str, Any]) -> str:
    samples = results["samples"]
    lines = [
        f"### Server RSS over a long varied rerank run: {results['model']['name']} ({results['model']['shape']})",
        "",
        f"{results['requests']} requests after a warm-up of {results['warmup_requests']}, "
        f"{results['clients']} concurrent clients, {results['threads']} threads, "
        f"{samples[-1]['seconds']:.0f} s; RSS sampled {len(samples)} times.",
        "",
        "| RSS after warm-up MB | first-quarter median MB | last-quarter median MB | max MB | growth MB | unexpected answers |",
        "|---|---|---|---|---|---|",
        f"| {results['rss_after_warmup_mb']:.1f} | {results['rss_first_quarter_median_mb']:.1f} | "
        f"{results['rss_last_quarter_median_mb']:.1f} | {results['rss_max_mb']:.1f} | "
        f"{results['growth_mb']:.1f} | {results['errors']} |",
        "",
        "| request kind (warm-up included) | count |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in results["kinds"].items()),
        "",
        "Answers by HTTP status (warm-up included): "
        + ", ".join(f"{status}: {count}" for status, count in results["statuses"].items())
        + ".",
        f"Machine: {machine_line(results['machine'])}.",
    ]
    return "\n".join(lines) + "\n"
