"""SPLADE over the wire: TEI's POST /embed_sparse and gRPC tei.v1.Embed/EmbedSparse (+ stream), and our
batched fastembed_native.v1.Embedder/EmbedSparse, on the same server and batching core as embeddings
(127.0.0.1 only). Answers equal the in-process SparseTextEmbedding; texts of concurrent requests
share engine calls; a model of another kind on a route gets 400 wrong_model_kind naming what it is."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from families import MIXED_TEXTS
from serving import Server, free_port, model_arg, tei_sparse_rows

from fastembed_native import SparseEmbedding, SparseTextEmbedding
from fastembed_native.models.parity import SPARSE_TOLERANCE, sparse_difference

TEXTS = list(MIXED_TEXTS)


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory) -> Path:
    from test_sparse import _splade

    from fastembed_native.models import export_model

    root = tmp_path_factory.mktemp("served-splade")
    return export_model(_splade(root, "max", "relu", "Transformer"), root / "onnx-model").model_dir


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    from conftest import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model", token_types=True, normalize=True).path


@pytest.fixture(scope="module")
def local(splade_dir) -> SparseTextEmbedding:
    return SparseTextEmbedding(splade_dir)


@pytest.fixture(scope="module")
def server(splade_dir, dense_dir):
    """The dense model first (the default), so routes that name no model must find the sparse one."""
    port = free_port()
    args = [*model_arg("tiny", dense_dir), *model_arg("splade", splade_dir), "--grpc-port", str(port)]
    with Server(args) as running:
        running.grpc_port = port
        yield running


def _dense_rows(vectors: list[SparseEmbedding], size: int) -> np.ndarray:
    return np.stack([v.to_dense(size) for v in vectors])


def test_embed_sparse_equals_in_process(server, local):
    status, answer = server.json("POST", "/embed_sparse", {"inputs": TEXTS})  # no model: the first sparse one
    assert status == 200, answer
    assert isinstance(answer, list) and len(answer) == len(TEXTS)
    expected = _dense_rows(local.embed(TEXTS), local.vocab_size)
    assert sparse_difference(tei_sparse_rows(answer, local.vocab_size), expected) <= SPARSE_TOLERANCE
    # One string is one text, as TEI takes it; the named model answers the same.
    status, one = server.json("POST", "/embed_sparse", {"inputs": TEXTS[1], "model": "splade"})
    assert status == 200 and len(one) == 1
    assert sparse_difference(tei_sparse_rows(one, local.vocab_size), expected[1:2]) <= SPARSE_TOLERANCE


def test_embed_sparse_prompt_truncate_and_token_ids(server, local):
    long = " ".join(f"token{i}" for i in range(400))
    status, answer = server.json("POST", "/embed_sparse", {"inputs": [long], "truncate": False})
    assert status == 422 and answer["error"]["code"] == "input_too_long", answer
    assert "more than the model's max length" in answer["error"]["message"]
    status, answer = server.json("POST", "/embed_sparse", {"inputs": [long], "truncate": True})
    assert status == 200
    expected = _dense_rows(local.embed([long]), local.vocab_size)
    assert sparse_difference(tei_sparse_rows(answer, local.vocab_size), expected) <= SPARSE_TOLERANCE
    # The model's own token ids embed like its text.
    ids = [list(e.ids) for e in local.engine.tokenizer.encode(TEXTS[:3])]
    status, answer = server.json("POST", "/embed_sparse", {"inputs": ids})
    assert status == 200
    expected = _dense_rows(local.embed(TEXTS[:3]), local.vocab_size)
    assert sparse_difference(tei_sparse_rows(answer, local.vocab_size), expected) <= SPARSE_TOLERANCE
    status, answer = server.json("POST", "/embed_sparse", {"inputs": ["x"], "prompt_name": "nope"})
    assert status == 400 and "has no prompt named 'nope'" in answer["error"]["message"]


def test_wrong_kind_on_a_route_says_what_the_model_is(server):
    cases = [
        ("/v1/embeddings", {"model": "splade", "input": ["hello"]}, "is a sparse (SPLADE) model"),
        ("/embed", {"model": "splade", "inputs": "hello"}, "is a sparse (SPLADE) model"),
        ("/rerank", {"model": "splade", "query": "q", "texts": ["d"]}, "is a sparse (SPLADE) model"),
        ("/embed_sparse", {"model": "tiny", "inputs": "hello"}, "is an embedding model, not a sparse"),
        ("/embed_multi_vector", {"model": "splade", "inputs": "hello"}, "not a multi-vector"),
        ("/embed_multi_vector", {"inputs": "hello"}, "no multi-vector (ColBERT) model is served"),
    ]
    for route, body, message in cases:
        status, answer = server.json("POST", route, body)
        assert status == 400, (route, answer)
        assert answer["error"]["code"] == "wrong_model_kind", (route, answer)
        assert message in answer["error"]["message"], (route, answer)
    assert (
        "/embed_sparse"
        in server.json("POST", "/embed", {"model": "splade", "inputs": "x"})[1]["error"]["message"]
    )
    _, info = server.json("GET", "/info")
    kinds = {m["id"]: (m["kind"], m["dim"], m["pooling"]) for m in info["models"]}
    assert kinds["splade"][:1] == ("sparse",) and kinds["splade"][2] == "splade-max"
    assert kinds["tiny"][0] == "embedding"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": []}, 400, "input must not be empty"),
        ({"inputs": ["ok", 3]}, 400, r"input\[1\] must be a string like input\[0\], not an integer"),
        ({"inputs": None}, 400, "input must be a string"),
        ({"inputs": {"text": "x"}}, 400, "input must be a string"),
        ({"inputs": ["d"] * 3000}, 413, "3000 inputs in one request; the limit is 2048"),
        ({"inputs": ["x" * 2_000_000]}, 413, r"input\[0\] has 2000000 characters"),
        ({"inputs": [[1, 2, 10**9]]}, 400, "outside this model's vocabulary"),
        ({"inputs": "x", "truncation_direction": "Left"}, 400, "truncation_direction"),
        ({"inputs": "x", "truncate": "yes"}, 400, "truncate"),
        ({"inputs": "x", "model": "nope"}, 404, "model 'nope' is not served here"),
    ],
)
def test_hostile_sparse_input_gets_a_4xx_naming_the_problem(server, body, status, message):
    got, answer = server.json("POST", "/embed_sparse", body, timeout=120)
    assert got == status, answer
    assert re.search(message, answer["error"]["message"]), answer
    assert server.json("GET", "/health")[0] == 200


def test_a_sparse_answer_is_charged_vocabulary_wide(splade_dir, local):
    """Each text's answer is charged as if it held a value for every word of the vocabulary: with
    room for three such answers in flight, two texts are served and ten are refused with 413 (they
    would not fit even alone), naming the limit and how many texts fit."""
    from fastembed_native.serve.sparse import SPARSE_BYTES_PER_VALUE

    per_text = local.vocab_size * SPARSE_BYTES_PER_VALUE
    with Server([*model_arg("splade", splade_dir), "--max-inflight-bytes", str(per_text * 3)]) as server:
        status, answer = server.json("POST", "/embed_sparse", {"inputs": ["hello", "world"]})
        assert status == 200 and len(answer) == 2
        status, answer = server.json("POST", "/embed_sparse", {"inputs": ["hello"] * 10})
        assert server.json("GET", "/health")[0] == 200
    assert status == 413, answer
    error = answer["error"]
    assert error["code"] == "answer_too_large" and error["param"] == "input"
    assert (
        f"may take {10 * per_text} bytes" in error["message"] and "--max-inflight-bytes" in error["message"]
    )
    assert "send at most 2 inputs per request" in error["message"]


def test_concurrent_sparse_requests_share_engine_calls(server, local):
    import aiohttp

    calls_before = server.metric("fastembed_batch_texts_count", 'model="splade"')

    async def main() -> list[list[list[dict]]]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> list[list[dict]]:
                body = {"model": "splade", "inputs": [TEXTS[i % len(TEXTS)], f"request {i}"]}
                async with session.post(server.url + "/embed_sparse", json=body) as response:
                    assert response.status == 200
                    return await response.json()

            return await asyncio.gather(*(one(i) for i in range(60)))

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    calls = server.metric("fastembed_batch_texts_count", 'model="splade"') - calls_before
    assert 0 < calls < 60  # 60 requests, fewer engine calls: texts of several requests shared them
    for i in (0, 7, 59):
        expected = _dense_rows(local.embed([TEXTS[i % len(TEXTS)], f"request {i}"]), local.vocab_size)
        assert sparse_difference(tei_sparse_rows(answers[i], local.vocab_size), expected) <= SPARSE_TOLERANCE


# -- gRPC ---------------------------------------------------------------------------------------------
@pytest.fixture()
def channel(server):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as open_channel:
        yield open_channel


def test_grpc_tei_embed_sparse_and_stream_equal_in_process(channel, local):
    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    stub = tei_grpc.EmbedStub(channel)
    expected = _dense_rows(local.embed(TEXTS), local.vocab_size)

    def rows(responses) -> np.ndarray:  # type: ignore[no-untyped-def]
        items = [[{"index": v.index, "value": v.value} for v in r.sparse_embeddings] for r in responses]
        return tei_sparse_rows(items, local.vocab_size)

    one = stub.EmbedSparse(tei.EmbedSparseRequest(inputs=TEXTS[4]), timeout=60)
    assert one.metadata.compute_tokens > 0 and one.metadata.compute_chars == len(TEXTS[4])
    assert sparse_difference(rows([one]), expected[4:5]) <= SPARSE_TOLERANCE
    streamed = list(
        stub.EmbedSparseStream(
            iter([tei.EmbedSparseRequest(inputs=t, truncate=True) for t in TEXTS]), timeout=60
        )
    )
    assert len(streamed) == len(TEXTS)
    assert sparse_difference(rows(streamed), expected) <= SPARSE_TOLERANCE


def test_grpc_batched_embed_sparse_equals_in_process(channel, local):
    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    stub = v1_grpc.EmbedderStub(channel)
    answer = stub.EmbedSparse(v1.EmbedSparseRequest(inputs=TEXTS, model="splade"), timeout=60)
    assert answer.model == "splade" and answer.dimensions == local.vocab_size
    assert answer.usage.prompt_tokens > 0 and len(answer.embeddings) == len(TEXTS)
    ours = np.zeros((len(TEXTS), local.vocab_size), dtype=np.float32)
    for row, vector in enumerate(answer.embeddings):
        assert list(vector.indices) == sorted(vector.indices) and len(vector.indices) == len(vector.values)
        ours[row, list(vector.indices)] = list(vector.values)
    expected = _dense_rows(local.embed(TEXTS), local.vocab_size)
    assert sparse_difference(ours, expected) <= SPARSE_TOLERANCE
    models = {m.id: (m.kind, m.dimensions) for m in stub.ListModels(v1.ListModelsRequest()).models}
    assert models == {"tiny": ("embedding", models["tiny"][1]), "splade": ("sparse", local.vocab_size)}


def test_grpc_sparse_errors_name_the_problem(channel):
    import grpc

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc
    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    stub = v1_grpc.EmbedderStub(channel)
    left = tei.EmbedSparseRequest(inputs="x", truncation_direction=tei.TRUNCATION_DIRECTION_LEFT)
    cases = [
        (lambda: stub.EmbedSparse(v1.EmbedSparseRequest(model="splade")), "input must not be empty"),
        (
            lambda: stub.EmbedSparse(v1.EmbedSparseRequest(inputs=["x"], model="tiny")),
            "is an embedding model",
        ),
        (lambda: stub.Embed(v1.EmbedRequest(inputs=["x"], model="splade")), "is a sparse (SPLADE) model"),
        (lambda: tei_grpc.EmbedStub(channel).EmbedSparse(left), "truncation_direction LEFT"),
        (
            lambda: list(
                tei_grpc.EmbedStub(channel).EmbedSparseStream(
                    iter(
                        [
                            tei.EmbedSparseRequest(inputs="x"),
                            tei.EmbedSparseRequest(inputs="y", prompt_name="q"),
                        ]
                    )
                )
            ),
            "stream message 1",
        ),
    ]
    for action, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            action()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert message in info.value.details()


def test_tei_embed_sparse_without_a_sparse_model_names_the_problem(dense_dir):
    import grpc

    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    port = free_port()
    with Server([*model_arg("tiny", dense_dir), "--grpc-port", str(port)]) as server:
        status, answer = server.json("POST", "/embed_sparse", {"inputs": "x"})
        assert status == 400 and "no sparse (SPLADE) model is served here" in answer["error"]["message"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as info:
            tei_grpc.EmbedStub(channel).EmbedSparse(tei.EmbedSparseRequest(inputs="x"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no sparse (SPLADE) model is served here" in info.value.details()


# -- the query side: input_type "query" -----------------------------------------------------------
def _vectors(answer: list, size: int) -> np.ndarray:
    return tei_sparse_rows(answer, size)


def test_queries_over_the_wire_equal_query_embed(tmp_path):
    """``input_type: "query"`` answers as ``SparseTextEmbedding.query_embed``: an inference-free
    model's static weights (no model run), a plain SPLADE model with its query prompt."""
    import grpc
    from conftest import WORDS
    from test_corpus_kinds import write_splade_dir

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc

    free = write_splade_dir(tmp_path / "free", inference_free=True)
    plain = write_splade_dir(tmp_path / "plain", seed=1)
    queries = [" ".join(WORDS[i : i + 4]) for i in range(0, 12, 3)] + [""]
    port = free_port()
    args = [*model_arg("free", free), *model_arg("plain", plain), "--grpc-port", str(port)]
    with Server(args) as server, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = v1_grpc.EmbedderStub(channel)
        for name, path in (("free", free), ("plain", plain)):
            local = SparseTextEmbedding(path)
            size = local.vocab_size
            as_queries = _dense_rows(local.query_embed(queries), size)
            as_documents = _dense_rows(local.embed(queries), size)
            assert not np.array_equal(as_queries, as_documents)  # the two sides differ on these models
            body = {"inputs": queries, "model": name, "input_type": "query"}
            status, answer = server.json("POST", "/embed_sparse", body)
            assert status == 200, answer
            np.testing.assert_allclose(_vectors(answer, size), as_queries, rtol=1e-6, atol=0)
            status, answer = server.json("POST", "/embed_sparse", {**body, "input_type": "document"})
            np.testing.assert_allclose(_vectors(answer, size), as_documents, rtol=1e-6, atol=0)
            reply = stub.EmbedSparse(
                v1.EmbedSparseRequest(inputs=queries, model=name, input_type=v1.INPUT_TYPE_QUERY), timeout=60
            )
            got = np.zeros_like(as_queries)
            for row, vector in enumerate(reply.embeddings):
                got[row, list(vector.indices)] = list(vector.values)
            np.testing.assert_allclose(got, as_queries, rtol=1e-6, atol=0)

        # What the query side cannot take, named.
        status, answer = server.json("POST", "/embed_sparse", {"inputs": ["x"], "input_type": "question"})
        assert status == 400 and "input_type must be 'query' or 'document'" in answer["error"]["message"]
        status, answer = server.json(
            "POST", "/embed_sparse", {"inputs": [[2, 5, 3]], "model": "free", "input_type": "query"}
        )
        assert status == 400 and "queries are text, not token ids" in answer["error"]["message"]
        with pytest.raises(grpc.RpcError) as info:
            stub.EmbedSparse(v1.EmbedSparseRequest(inputs=["x"], model="free", input_type=7), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input_type 7 is not an InputType" in info.value.details()
