"""ColBERT over the wire: POST /embed_multi_vector and gRPC fastembed_native.v1.Embedder/EmbedMultiVector,
on the same server and batching core as embeddings (127.0.0.1 only). Answers equal the in-process
LateInteractionTextEmbedding (documents and [MASK]-expanded queries, floats and base64); texts of
concurrent requests share engine calls; wrong kinds and hostile input get a 4xx naming the problem."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import numpy as np
import pytest
from families import MIXED_TEXTS
from serving import Server, assert_arrays_close, free_port, model_arg, multi_vector_rows

from fastembed_native import LateInteractionTextEmbedding

FIXTURE = Path(__file__).parent / "data" / "colbert_tiny"
TEXTS = list(MIXED_TEXTS)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory) -> Path:
    from fastembed_native.models import export_model

    return export_model(FIXTURE, tmp_path_factory.mktemp("served-colbert") / "model").model_dir


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    from conftest import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model", token_types=True, normalize=True).path


@pytest.fixture(scope="module")
def local(colbert_dir) -> LateInteractionTextEmbedding:
    return LateInteractionTextEmbedding(colbert_dir)


@pytest.fixture(scope="module")
def server(colbert_dir, dense_dir):
    """The dense model first (the default): /embed_multi_vector without a model finds the ColBERT one."""
    port = free_port()
    args = [*model_arg("tiny", dense_dir), *model_arg("colbert", colbert_dir), "--grpc-port", str(port)]
    with Server(args) as running:
        running.grpc_port = port
        yield running


def test_documents_and_queries_equal_in_process(server, local):
    status, body = server.json("POST", "/embed_multi_vector", {"inputs": TEXTS})
    assert status == 200, body
    assert body["model"] == "colbert" and body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
    assert_arrays_close(multi_vector_rows(body, local.dim), local.embed(TEXTS), TOLERANCE)
    status, body = server.json(
        "POST", "/embed_multi_vector", {"inputs": TEXTS, "model": "colbert", "input_type": "query"}
    )
    assert status == 200
    queries = multi_vector_rows(body, local.dim)
    assert {q.shape[0] for q in queries} == {local.colbert.query_length}
    assert_arrays_close(queries, local.query_embed(TEXTS), TOLERANCE)


def test_base64_is_little_endian_float32_rows(server, local):
    status, body = server.json(
        "POST", "/embed_multi_vector", {"inputs": TEXTS[:5], "encoding_format": "base64"}
    )
    assert status == 200
    decoded = [
        np.frombuffer(base64.b64decode(item["embedding"]), "<f4").reshape(item["shape"])
        for item in body["data"]
    ]
    assert_arrays_close(decoded, local.embed(TEXTS[:5]), TOLERANCE)
    status, floats = server.json("POST", "/embed_multi_vector", {"inputs": TEXTS[:5]})
    for item, rows in zip(floats["data"], decoded, strict=True):
        assert np.array_equal(np.asarray(item["embedding"], np.float32), rows)  # the same float32 values


def test_scores_from_served_vectors_equal_in_process_maxsim(server, local):
    _, docs = server.json("POST", "/embed_multi_vector", {"inputs": TEXTS})
    _, query = server.json(
        "POST", "/embed_multi_vector", {"inputs": "capital of France", "input_type": "query"}
    )
    served = local.score(multi_vector_rows(query, local.dim)[0], multi_vector_rows(docs, local.dim))
    expected = local.score(local.query_embed("capital of France")[0], local.embed(TEXTS))
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_wrong_kind_on_a_route_says_what_the_model_is(server):
    cases = [
        ("/v1/embeddings", {"model": "colbert", "input": ["x"]}, "is a multi-vector (ColBERT) model"),
        ("/embed", {"model": "colbert", "inputs": "x"}, "/embed_multi_vector"),
        ("/embed_sparse", {"model": "colbert", "inputs": "x"}, "not a sparse (SPLADE) model"),
        (
            "/embed_multi_vector",
            {"model": "tiny", "inputs": "x"},
            "is an embedding model, not a multi-vector",
        ),
        ("/rerank", {"model": "colbert", "query": "q", "texts": ["d"]}, "is a multi-vector (ColBERT) model"),
    ]
    for route, body, message in cases:
        status, answer = server.json("POST", route, body)
        assert status == 400 and answer["error"]["code"] == "wrong_model_kind", (route, answer)
        assert message in answer["error"]["message"], (route, answer)
    _, info = server.json("GET", "/info")
    facts = {m["id"]: m for m in info["models"]}["colbert"]
    assert facts["kind"] == "multi-vector" and facts["query_length"] > 0 and facts["normalize"] is True


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": []}, 400, "input must not be empty"),
        ({"inputs": ["ok", None]}, 400, r"input\[1\] must be a string like input\[0\], not null"),
        ({"inputs": 3}, 400, "input must be a string"),
        ({"inputs": [[1, 2, 3]]}, 400, "takes text inputs, not token ids"),
        ({"inputs": ["d"] * 3000}, 413, "3000 inputs in one request; the limit is 2048"),
        ({"inputs": ["x" * 2_000_000]}, 413, r"input\[0\] has 2000000 characters"),
        ({"inputs": "x", "input_type": "passage"}, 400, "input_type must be 'query' or 'document'"),
        ({"inputs": "x", "input_type": None}, 400, "input_type must be 'query' or 'document'"),
        ({"inputs": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"inputs": "x", "model": "nope"}, 404, "model 'nope' is not served here"),
    ],
)
def test_hostile_multivector_input_gets_a_4xx_naming_the_problem(server, body, status, message):
    got, answer = server.json("POST", "/embed_multi_vector", body, timeout=120)
    assert got == status, answer
    assert re.search(message, answer["error"]["message"]), answer
    assert server.json("GET", "/health")[0] == 200


def test_long_texts_are_cut_to_the_side_length(server, local):
    long = "word, " * 50_000  # far past document_length; clipped before it is tokenized
    status, body = server.json("POST", "/embed_multi_vector", {"inputs": [long]}, timeout=120)
    assert status == 200
    assert_arrays_close(multi_vector_rows(body, local.dim), local.embed([long]), TOLERANCE)


def test_a_multivector_answer_is_charged_rows_times_dim(colbert_dir, local):
    from fastembed_native.serve.sparse import MULTI_VECTOR_BYTES_PER_FLOAT

    per_text = local.colbert.document_length * local.dim * MULTI_VECTOR_BYTES_PER_FLOAT["float"]
    with Server([*model_arg("colbert", colbert_dir), "--max-inflight-bytes", str(per_text * 3)]) as server:
        ok, _ = server.json("POST", "/embed_multi_vector", {"inputs": ["a", "b"]})
        status, answer = server.json("POST", "/embed_multi_vector", {"inputs": ["a"] * 4})
        # Queries are charged their (shorter) query length: more of them fit.
        queries, _ = server.json("POST", "/embed_multi_vector", {"inputs": ["a"] * 4, "input_type": "query"})
    assert ok == 200 and queries == 200
    assert status == 413 and answer["error"]["code"] == "answer_too_large", answer
    assert f"up to {local.colbert.document_length} rows of {local.dim} floats" in answer["error"]["message"]


def test_concurrent_requests_share_engine_calls(server, local):
    import aiohttp

    calls_before = server.metric("fastembed_batch_texts_count", 'model="colbert"')

    async def main() -> list[dict]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> dict:
                body = {"inputs": [TEXTS[i % len(TEXTS)], f"document {i}"], "input_type": "document"}
                async with session.post(server.url + "/embed_multi_vector", json=body) as response:
                    assert response.status == 200
                    return await response.json()

            return await asyncio.gather(*(one(i) for i in range(60)))

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    calls = server.metric("fastembed_batch_texts_count", 'model="colbert"') - calls_before
    assert 0 < calls < 60  # 60 requests, fewer engine calls: texts of several requests shared them
    for i in (0, 7, 59):
        assert_arrays_close(
            multi_vector_rows(answers[i], local.dim),
            local.embed([TEXTS[i % len(TEXTS)], f"document {i}"]),
            TOLERANCE,
        )


def test_queries_and_documents_sent_together_are_each_answered_as_asked(server, local):
    """Queries and documents never share an engine call (the call's rows are expanded or not), but
    both kinds in flight at once are answered right."""
    import aiohttp

    async def main() -> list[dict]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> dict:
                kind = "query" if i % 2 else "document"
                body = {"inputs": [f"text {i}"], "input_type": kind}
                async with session.post(server.url + "/embed_multi_vector", json=body) as response:
                    assert response.status == 200
                    return await response.json()

            return await asyncio.gather(*(one(i) for i in range(20)))

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    for i, answer in enumerate(answers):
        want = local.query_embed([f"text {i}"]) if i % 2 else local.embed([f"text {i}"])
        assert_arrays_close(multi_vector_rows(answer, local.dim), want, TOLERANCE)


# -- gRPC ---------------------------------------------------------------------------------------------
@pytest.fixture()
def channel(server):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as open_channel:
        yield open_channel


def test_grpc_embed_multi_vector_equals_in_process(channel, local):
    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    stub = v1_grpc.EmbedderStub(channel)

    def matrices(response) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
        assert response.model == "colbert" and response.dimensions == local.dim
        return [np.frombuffer(m.vectors, "<f4").reshape(m.rows, m.dimensions) for m in response.embeddings]

    documents = stub.EmbedMultiVector(v1.EmbedMultiVectorRequest(inputs=TEXTS), timeout=60)
    assert documents.usage.prompt_tokens > 0
    assert_arrays_close(matrices(documents), local.embed(TEXTS), TOLERANCE)
    queries = stub.EmbedMultiVector(
        v1.EmbedMultiVectorRequest(inputs=TEXTS, model="colbert", input_type=v1.INPUT_TYPE_QUERY), timeout=60
    )
    assert_arrays_close(matrices(queries), local.query_embed(TEXTS), TOLERANCE)
    models = {m.id: m for m in stub.ListModels(v1.ListModelsRequest()).models}
    assert models["colbert"].kind == "multi-vector" and models["colbert"].dimensions == local.dim
    assert models["colbert"].query_length == local.colbert.query_length
    assert models["colbert"].max_length == local.colbert.document_length


def test_grpc_multi_vector_errors_name_the_problem(channel):
    import grpc

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    stub = v1_grpc.EmbedderStub(channel)
    cases = [
        (
            lambda: stub.EmbedMultiVector(v1.EmbedMultiVectorRequest(model="colbert")),
            "input must not be empty",
        ),
        (
            lambda: stub.EmbedMultiVector(v1.EmbedMultiVectorRequest(inputs=["x"], model="tiny")),
            "is an embedding model, not a multi-vector",
        ),
        (
            lambda: stub.Embed(v1.EmbedRequest(inputs=["x"], model="colbert")),
            "is a multi-vector (ColBERT) model",
        ),
        (
            lambda: stub.EmbedMultiVector(v1.EmbedMultiVectorRequest(inputs=["x"], input_type=7)),
            "input_type 7 is not an InputType",
        ),
        (lambda: stub.EmbedSparse(v1.EmbedSparseRequest(inputs=["x"])), "no sparse (SPLADE) model is served"),
    ]
    for action, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            action()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert message in info.value.details()


def test_grpc_and_http_share_engine_calls(server, channel, local):
    """gRPC calls and HTTP requests in flight together share the model's engine calls."""
    import threading

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    stub = v1_grpc.EmbedderStub(channel)
    calls_before = server.metric("fastembed_batch_texts_count", 'model="colbert"')
    futures = [
        stub.EmbedMultiVector.future(v1.EmbedMultiVectorRequest(inputs=[f"g {i}"]), timeout=60)
        for i in range(30)
    ]
    statuses: list[int] = []

    def http(i: int) -> None:
        statuses.append(server.request("POST", "/embed_multi_vector", {"inputs": [f"h {i}"]})[0])

    threads = [threading.Thread(target=http, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    answers = [f.result() for f in futures]
    for thread in threads:
        thread.join(60)
    calls = server.metric("fastembed_batch_texts_count", 'model="colbert"') - calls_before
    assert statuses == [200] * 10 and 0 < calls < 40
    got = np.frombuffer(answers[3].embeddings[0].vectors, "<f4").reshape(answers[3].embeddings[0].rows, -1)
    assert_arrays_close([got], local.embed(["g 3"]), TOLERANCE)
