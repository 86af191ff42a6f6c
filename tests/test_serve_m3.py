"""BGE-M3 over the wire: one served model answers the dense routes (/v1/embeddings, /embed, Embed),
the sparse routes (/embed_sparse, EmbedSparse: its lexical weights by token id) and the multi-vector
routes (/embed_multi_vector, EmbedMultiVector: its ColBERT vectors), on the shared batching core
(127.0.0.1 only). Each answer equals ``BGEM3(...).embed(...)``'s output; requests for different
outputs that meet in the queue share one forward pass; /info, /v1/models and ListModels say the
model offers the three outputs; wrong-kind errors name what each model is.

Tolerances: the sparse and ColBERT rows come from the same kernels as BGEM3's on the same float32
states, but the server batches texts of several requests together, so a text may run padded to
another length than in ``BGEM3.embed`` (padding is masked out, yet the matrix products' summation
order changes): 1e-5, the parity tolerance of tests/test_bge_m3.py. Dense rows are the [CLS] states
normalised by the server in numpy instead of in the C++ pooling kernel: the same tolerance covers it
(their difference is a few float32 ulps).
"""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path

import numpy as np
import pytest
from families import MIXED_TEXTS
from serving import Server, assert_arrays_close, free_port, model_arg, multi_vector_rows, tei_sparse_rows

from fastembed_native import BGEM3, SparseEmbedding

FIXTURE = Path(__file__).parent / "data" / "bge_m3_tiny"
TEXTS = list(MIXED_TEXTS)
TOLERANCE = 1e-5
OUTPUTS = ["embedding", "sparse", "multi-vector"]


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory) -> Path:
    from fastembed_native.models import export_model

    return export_model(FIXTURE, tmp_path_factory.mktemp("served-m3") / "model").model_dir


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    from conftest import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model", token_types=True, normalize=True).path


@pytest.fixture(scope="module")
def local(m3_dir) -> BGEM3:
    return BGEM3(m3_dir)


@pytest.fixture(scope="module")
def expected(local):
    return local.embed(TEXTS)


@pytest.fixture(scope="module")
def server(m3_dir, dense_dir):
    """The dense model first (the default), so routes that name no model must find BGE-M3 by what
    it offers."""
    port = free_port()
    args = [*model_arg("tiny", dense_dir), *model_arg("m3", m3_dir), "--grpc-port", str(port)]
    with Server(args) as running:
        running.grpc_port = port
        yield running


def _sparse_rows(vectors: list[SparseEmbedding], size: int) -> np.ndarray:
    return np.stack([v.to_dense(size) for v in vectors])


# -- HTTP ---------------------------------------------------------------------------------------------
def test_dense_routes_equal_bgem3(server, expected):
    status, body = server.json("POST", "/v1/embeddings", {"model": "m3", "input": TEXTS})
    assert status == 200, body
    openai = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(openai, expected.dense, atol=TOLERANCE)
    status, body = server.json("POST", "/embed", {"model": "m3", "inputs": TEXTS})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body, dtype=np.float32), expected.dense, atol=TOLERANCE)
    # normalize=false: the [CLS] states themselves, whose unit rows are BGE-M3's dense output.
    status, body = server.json("POST", "/embed", {"model": "m3", "inputs": TEXTS[:3], "normalize": False})
    raw = np.array(body, dtype=np.float32)
    assert status == 200 and not np.allclose(np.linalg.norm(raw, axis=1), 1)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), expected.dense[:3], atol=TOLERANCE
    )


def test_embed_sparse_equals_bgem3_lexical_weights(server, local, expected):
    status, answer = server.json(
        "POST", "/embed_sparse", {"inputs": TEXTS}
    )  # no model: the first with sparse
    assert status == 200, answer
    size = local.vocab_size
    np.testing.assert_allclose(
        tei_sparse_rows(answer, size), _sparse_rows(expected.sparse, size), atol=TOLERANCE
    )
    # The model's own token ids (as /tokenize gives them) answer like its texts.
    ids = [list(e.ids) for e in local.engine.tokenizer.encode(TEXTS[:4])]
    status, answer = server.json("POST", "/embed_sparse", {"inputs": ids, "model": "m3"})
    assert status == 200, answer
    np.testing.assert_allclose(
        tei_sparse_rows(answer, size), _sparse_rows(expected.sparse[:4], size), atol=TOLERANCE
    )


def test_embed_multi_vector_equals_bgem3_colbert(server, local, expected):
    status, body = server.json(
        "POST", "/embed_multi_vector", {"inputs": TEXTS}
    )  # the first with multi-vector
    assert status == 200, body
    assert body["model"] == "m3" and body["usage"]["prompt_tokens"] > 0
    assert_arrays_close(multi_vector_rows(body, local.colbert_dim), expected.colbert, TOLERANCE)
    # Queries are encoded as documents are (BGE-M3 has no query side); base64 holds the same floats.
    status, body = server.json(
        "POST",
        "/embed_multi_vector",
        {"inputs": TEXTS[:5], "model": "m3", "input_type": "query", "encoding_format": "base64"},
    )
    assert status == 200, body
    decoded = [
        np.frombuffer(base64.b64decode(item["embedding"]), "<f4").reshape(item["shape"])
        for item in body["data"]
    ]
    assert_arrays_close(decoded, expected.colbert[:5], TOLERANCE)


def test_models_say_what_they_offer(server, local):
    status, info = server.json("GET", "/info")
    assert status == 200
    models = {m["id"]: m for m in info["models"]}
    m3 = models["m3"]
    assert m3["kind"] == "bge-m3" and m3["outputs"] == OUTPUTS
    assert (m3["dim"], m3["sparse_dim"], m3["multi_vector_dim"]) == (
        local.engine.dim,
        local.vocab_size,
        local.colbert_dim,
    )
    assert m3["pooling"] == "cls" and m3["normalize"] is True
    assert models["tiny"]["kind"] == "embedding" and models["tiny"]["outputs"] == ["embedding"]
    status, listed = server.json("GET", "/v1/models")
    assert status == 200
    assert {m["id"]: m["outputs"] for m in listed["data"]} == {"tiny": ["embedding"], "m3": OUTPUTS}


def test_wrong_kind_errors_name_what_the_model_is(server):
    cases = [
        # BGE-M3 offers no reranking: the message names it and every route it answers.
        (
            "/rerank",
            {"model": "m3", "query": "q", "texts": ["d"]},
            "is a BGE-M3 model (dense, sparse and multi-vector), not a reranker",
        ),
        ("/v1/rerank", {"model": "m3", "query": "q", "documents": ["d"]}, "/embed_sparse"),
        # Other models' errors stay as they were.
        (
            "/embed_sparse",
            {"model": "tiny", "inputs": "x"},
            "is an embedding model, not a sparse (SPLADE) model",
        ),
        (
            "/embed_multi_vector",
            {"model": "tiny", "inputs": "x"},
            "is an embedding model, not a multi-vector",
        ),
        ("/rerank", {"query": "q", "texts": ["d"]}, "no reranker is served here"),
    ]
    for route, body, message in cases:
        status, answer = server.json("POST", route, body)
        assert status == 400, (route, answer)
        assert answer["error"]["code"] == "wrong_model_kind", (route, answer)
        assert message in answer["error"]["message"], (route, answer)
    for route in ("/embed_sparse", "/embed_multi_vector"):
        status, answer = server.json("POST", route, {"model": "m3", "inputs": []})
        assert status == 400 and answer["error"]["message"] == "input must not be empty", answer


def test_concurrent_requests_of_all_three_routes_share_engine_calls(server, local):
    import aiohttp

    calls_before = server.metric("fastembed_batch_texts_count", 'model="m3"')
    routes = [("/embed", "inputs"), ("/embed_sparse", "inputs"), ("/embed_multi_vector", "inputs")]

    async def main() -> list:
        async with aiohttp.ClientSession() as session:

            async def one(i: int):
                route, field = routes[i % 3]
                body = {"model": "m3", field: [f"request {i}", TEXTS[i % len(TEXTS)]]}
                async with session.post(server.url + route, json=body) as response:
                    assert response.status == 200
                    return await response.json()

            return await asyncio.gather(*(one(i) for i in range(45)))

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    calls = server.metric("fastembed_batch_texts_count", 'model="m3"') - calls_before
    assert 0 < calls < 45  # 45 requests of three routes, fewer engine calls
    for i in (0, 1, 2, 43, 44):
        texts = [f"request {i}", TEXTS[i % len(TEXTS)]]
        want = local.embed(texts)
        if i % 3 == 0:
            np.testing.assert_allclose(np.array(answers[i], np.float32), want.dense, atol=TOLERANCE)
        elif i % 3 == 1:
            rows = _sparse_rows(want.sparse, local.vocab_size)
            np.testing.assert_allclose(tei_sparse_rows(answers[i], local.vocab_size), rows, atol=TOLERANCE)
        else:
            assert_arrays_close(multi_vector_rows(answers[i], local.colbert_dim), want.colbert, TOLERANCE)


# -- one forward pass for every route (in process: the calls are watched) --------------------------------
def test_routes_that_meet_in_the_queue_share_one_forward_pass(m3_dir, expected):
    """While the engine is busy, a dense, a sparse and a multi-vector request queue up; the next call
    takes all three and computes the three outputs in one Run per batch; each gets its own."""
    from fastembed_native.serve.config import ModelSpec, ServeConfig
    from fastembed_native.serve.service import EmbeddingService, EmbedRequest
    from fastembed_native.serve.sparse import MultiVectorRequest, SparseRequest

    service = EmbeddingService.load(ServeConfig(models=(ModelSpec("m3", str(m3_dir)),)))
    queue = service.models["m3"].queue
    engine = service.models["m3"].embedder
    inner = queue.call
    release = threading.Event()
    calls: list[tuple[int, list[str], int]] = []

    def watched(encodings, group, asks):  # type: ignore[no-untyped-def]
        if not calls:
            release.wait(30)  # the first call holds the engine until the others are queued
        engine.stats(reset=True)
        out = inner(encodings, group, asks)
        calls.append((len(encodings), sorted(asks), int(engine.stats()["runs"])))
        return out

    queue.call = watched
    texts = TEXTS[:4]

    async def main():  # type: ignore[no-untyped-def]
        first = asyncio.ensure_future(service.embed(EmbedRequest(["busy"], model="m3")))
        while not queue.busy_since:
            await asyncio.sleep(0.01)
        waiting = asyncio.gather(
            service.embed(EmbedRequest(texts, model="m3")),
            service.embed_sparse(SparseRequest(texts, model="m3")),
            service.embed_multi_vector(MultiVectorRequest(texts, model="m3")),
        )
        while queue.queued[0] < 3:
            await asyncio.sleep(0.01)
        release.set()
        await first
        return await waiting

    try:
        dense, sparse, colbert = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        release.set()
        service.close(10)
    assert calls[0][:2] == (1, ["embedding"])
    # One call for the three requests' 12 texts, computing the three outputs, in as many Runs as one
    # output of those texts takes alone (BGEM3 on the same texts: the same batches).
    local = BGEM3(m3_dir)
    local.engine.stats(reset=True)
    local.embed(texts * 3, dense=False, colbert=False)
    assert calls[1:] == [(12, sorted(OUTPUTS), int(local.engine.stats()["runs"]))]
    np.testing.assert_allclose(dense.vectors, expected.dense[:4], atol=TOLERANCE)
    for ours, want in zip(sparse.vectors, expected.sparse[:4], strict=True):
        np.testing.assert_array_equal(ours.indices, want.indices)
        np.testing.assert_allclose(ours.values, want.values, atol=TOLERANCE)
    assert_arrays_close(colbert.vectors, expected.colbert[:4], TOLERANCE)


# -- gRPC ---------------------------------------------------------------------------------------------
@pytest.fixture()
def channel(server):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as open_channel:
        yield open_channel


def test_grpc_three_outputs_equal_bgem3(channel, local, expected):
    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    stub = v1_grpc.EmbedderStub(channel)
    dense = stub.Embed(v1.EmbedRequest(inputs=TEXTS, model="m3"), timeout=60)
    assert (dense.count, dense.dimensions) == (len(TEXTS), local.engine.dim)
    vectors = np.frombuffer(dense.vectors, "<f4").reshape(dense.count, dense.dimensions)
    np.testing.assert_allclose(vectors, expected.dense, atol=TOLERANCE)

    sparse = stub.EmbedSparse(v1.EmbedSparseRequest(inputs=TEXTS, model="m3"), timeout=60)
    assert sparse.model == "m3" and sparse.dimensions == local.vocab_size
    rows = np.zeros((len(TEXTS), local.vocab_size), dtype=np.float32)
    for row, vector in enumerate(sparse.embeddings):
        rows[row, list(vector.indices)] = list(vector.values)
    np.testing.assert_allclose(rows, _sparse_rows(expected.sparse, local.vocab_size), atol=TOLERANCE)

    colbert = stub.EmbedMultiVector(v1.EmbedMultiVectorRequest(inputs=TEXTS), timeout=60)  # no model: m3
    assert colbert.model == "m3" and colbert.dimensions == local.colbert_dim
    matrices = [np.frombuffer(m.vectors, "<f4").reshape(m.rows, m.dimensions) for m in colbert.embeddings]
    assert_arrays_close(matrices, expected.colbert, TOLERANCE)

    models = {m.id: m for m in stub.ListModels(v1.ListModelsRequest()).models}
    assert models["m3"].kind == "bge-m3" and list(models["m3"].outputs) == OUTPUTS
    assert models["m3"].dimensions == local.engine.dim and list(models["tiny"].outputs) == ["embedding"]


def test_grpc_tei_embed_sparse_and_errors(channel, local, expected):
    import grpc

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc
    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    tei_stub = tei_grpc.EmbedStub(channel)
    one = tei_stub.EmbedSparse(tei.EmbedSparseRequest(inputs=TEXTS[4]), timeout=60)  # the first with sparse
    items = [[{"index": v.index, "value": v.value} for v in one.sparse_embeddings]]
    want = _sparse_rows(expected.sparse[4:5], local.vocab_size)
    np.testing.assert_allclose(tei_sparse_rows(items, local.vocab_size), want, atol=TOLERANCE)

    stub = v1_grpc.EmbedderStub(channel)
    cases = [
        (lambda: stub.Rerank(v1.RerankRequest(query="q", documents=["d"], model="m3")), "is a BGE-M3 model"),
        (
            lambda: stub.EmbedSparse(v1.EmbedSparseRequest(inputs=["x"], model="tiny")),
            "is an embedding model",
        ),
        (
            lambda: stub.EmbedMultiVector(v1.EmbedMultiVectorRequest(inputs=["x"], model="tiny")),
            "is an embedding model, not a multi-vector",
        ),
    ]
    for action, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            action()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert message in info.value.details()
