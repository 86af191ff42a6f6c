"""Rerankers over the wire: TEI's /rerank, Cohere's /v1/rerank through the official cohere client,
and the gRPC Rerank calls, on the same server and batching core as embeddings (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from families import MIXED_TEXTS
from serving import Server, model_arg
from test_cross_encoder import QUERIES, SCORE_TOLERANCE, _cross_encoder, assert_ranked_as

from fastembed_native import TextCrossEncoder

DOCUMENTS = list(MIXED_TEXTS)


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory) -> Path:
    from fastembed_native.models import export_model

    root = tmp_path_factory.mktemp("served-reranker")
    return export_model(_cross_encoder(root, "bert"), root / "onnx-model").model_dir


@pytest.fixture(scope="module")
def server(reranker_dir, encoder_module_dir):
    with Server([*model_arg("ranker", reranker_dir), *model_arg("tiny", encoder_module_dir)]) as running:
        yield running


@pytest.fixture(scope="module")
def encoder_module_dir(tmp_path_factory) -> Path:
    from conftest import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("tiny") / "model", token_types=True, normalize=True).path


@pytest.fixture(scope="module")
def local(reranker_dir) -> TextCrossEncoder:
    return TextCrossEncoder(reranker_dir)


def test_tei_rerank_contract(server, local):
    query = QUERIES[0]
    status, ranks = server.json("POST", "/rerank", {"query": query, "texts": DOCUMENTS, "model": "ranker"})
    assert status == 200 and isinstance(ranks, list) and len(ranks) == len(DOCUMENTS)
    expected = local.rerank(query, DOCUMENTS)
    assert_ranked_as([r["index"] for r in ranks], expected)
    for r in ranks:
        assert set(r) == {"index", "score"}
        assert abs(r["score"] - float(expected[r["index"]])) <= SCORE_TOLERANCE
    _, raw = server.json(
        "POST",
        "/rerank",
        {"query": query, "texts": DOCUMENTS, "model": "ranker", "raw_scores": True, "return_text": True},
    )
    logits = local.rerank(query, DOCUMENTS, raw_scores=True)
    for r in raw:
        assert r["text"] == DOCUMENTS[r["index"]]
        assert abs(r["score"] - float(logits[r["index"]])) <= SCORE_TOLERANCE


def test_cohere_client_unchanged(server, local):
    import cohere
    import httpx

    query = QUERIES[1]
    expected = local.rerank(query, DOCUMENTS)
    with httpx.Client(timeout=60) as http:  # closed here, not whenever the client is collected
        client = cohere.Client(api_key="unused", base_url=server.url, httpx_client=http)
        response = client.rerank(
            model="ranker", query=query, documents=DOCUMENTS, top_n=3, return_documents=True
        )
        assert_ranked_as([r.index for r in response.results], expected)
        assert len(response.results) == 3
        for r in response.results:
            assert abs(r.relevance_score - float(expected[r.index])) <= SCORE_TOLERANCE
            assert r.document.text == DOCUMENTS[r.index]
        v2 = cohere.ClientV2(api_key="unused", base_url=server.url, httpx_client=http)
        response = v2.rerank(model="ranker", query=query, documents=DOCUMENTS[:5])
        assert sorted(r.index for r in response.results) == [0, 1, 2, 3, 4]


def test_cohere_documents_as_objects(server, local):
    documents = [{"text": d} for d in DOCUMENTS[:4]]
    status, body = server.json(
        "POST", "/v1/rerank", {"model": "ranker", "query": "q", "documents": documents}
    )
    assert status == 200 and body["model"] == "ranker" and body["usage"]["prompt_tokens"] > 0
    expected = local.rerank("q", DOCUMENTS[:4])
    for r in body["results"]:
        assert abs(r["relevance_score"] - float(expected[r["index"]])) <= SCORE_TOLERANCE


def test_a_model_on_the_wrong_route_says_what_it_is(server):
    status, body = server.json("POST", "/v1/embeddings", {"model": "ranker", "input": ["hello"]})
    assert status == 400 and "is a reranker" in body["error"]["message"]
    status, body = server.json("POST", "/rerank", {"model": "tiny", "query": "q", "texts": ["d"]})
    assert status == 400 and "is an embedding model" in body["error"]["message"]
    status, body = server.json("GET", "/info")
    kinds = {m["id"]: m["kind"] for m in body["models"]}
    assert kinds == {"ranker": "reranker", "tiny": "embedding"}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "q", "texts": []}, 400, "documents must not be empty"),
        ({"query": "q", "texts": ["ok", 3]}, 400, r"documents\[1\] must be a string"),
        ({"query": None, "texts": ["d"]}, 400, "query must be a string"),
        ({"query": "q", "texts": "d"}, 400, "documents must be a list"),
        ({"query": "q", "texts": ["d"] * 10_000}, 413, "10000 documents in one request"),
        ({"query": "x" * 10_000_000, "texts": ["d"]}, 413, "query has 10000000 characters"),
        ({"query": "q", "texts": ["d"], "truncation_direction": "Left"}, 400, "truncation_direction"),
        ({"query": "q", "texts": ["d"], "instruction": "x"}, 400, "instruction is for LLM rerankers"),
        ({"query": "q", "texts": ["\ud800"]}, 400, "not valid JSON"),  # a lone surrogate
    ],
)
def test_hostile_rerank_input_gets_a_4xx_naming_the_problem(server, body, status, message):
    import re

    got, answer = server.json("POST", "/rerank", {"model": "ranker", **body}, timeout=120)
    assert got == status, answer
    assert re.search(message, answer["error"]["message"]), answer
    assert server.json("GET", "/health")[0] == 200


def test_cohere_top_n_must_be_positive(server):
    status, body = server.json(
        "POST", "/v1/rerank", {"model": "ranker", "query": "q", "documents": ["d"], "top_n": 0}
    )
    assert status == 400 and body["error"]["param"] == "top_n"


def test_long_documents_are_cut_never_refused(server, local):
    documents = ["word " * 20_000, "short"]
    status, ranks = server.json("POST", "/rerank", {"model": "ranker", "query": "q", "texts": documents})
    assert status == 200
    expected = local.rerank("q", documents)
    for r in ranks:
        assert abs(r["score"] - float(expected[r["index"]])) <= SCORE_TOLERANCE


def test_concurrent_rerank_requests_share_engine_calls(server, local):
    import aiohttp

    calls_before = server.metric("fastembed_batch_texts_count", 'model="ranker"')

    async def main() -> list[list[dict]]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> list[dict]:
                body = {"model": "ranker", "query": f"query {i}", "texts": DOCUMENTS[:5]}
                async with session.post(server.url + "/rerank", json=body) as response:
                    assert response.status == 200
                    return await response.json()

            return await asyncio.gather(*(one(i) for i in range(60)))

    answers = asyncio.run(asyncio.wait_for(main(), 120))
    calls = server.metric("fastembed_batch_texts_count", 'model="ranker"') - calls_before
    assert 0 < calls < 60  # 60 requests, fewer engine calls: pairs of several requests shared them
    for i in (0, 59):
        expected = local.rerank(f"query {i}", DOCUMENTS[:5])
        assert_ranked_as([r["index"] for r in answers[i]], expected)
        assert len(answers[i]) == 5


# -- gRPC ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grpc_server(reranker_dir, encoder_module_dir):
    from serving import free_port

    port = free_port()
    args = [
        *model_arg("tiny", encoder_module_dir),
        *model_arg("ranker", reranker_dir),
        "--grpc-port",
        str(port),
    ]
    with Server(args) as running:
        running.grpc_port = port
        yield running


@pytest.fixture()
def channel(grpc_server):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.grpc_port}") as open_channel:
        yield open_channel


def test_grpc_rerank_ours_and_teis(channel, local):
    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc
    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    query = QUERIES[0]
    expected = local.rerank(query, DOCUMENTS)
    ours = v1_grpc.EmbedderStub(channel).Rerank(
        v1.RerankRequest(query=query, documents=DOCUMENTS, model="ranker", top_n=4, return_documents=True),
        timeout=60,
    )
    assert ours.model == "ranker" and len(ours.results) == 4
    assert_ranked_as([r.index for r in ours.results], expected)
    assert all(r.document == DOCUMENTS[r.index] for r in ours.results) and ours.usage.prompt_tokens > 0
    for r in ours.results:
        assert abs(r.score - float(expected[r.index])) <= SCORE_TOLERANCE
    # TEI's Rerank uses the first reranker served (tiny, an embedding model, is the default model).
    theirs = tei_grpc.RerankStub(channel).Rerank(tei.RerankRequest(query=query, texts=DOCUMENTS), timeout=60)
    assert len(theirs.ranks) == len(DOCUMENTS)
    assert_ranked_as([r.index for r in theirs.ranks], expected)
    assert not theirs.ranks[0].HasField("text") and theirs.metadata.compute_tokens > 0
    stream = tei_grpc.RerankStub(channel).RerankStream(
        iter(
            [
                tei.RerankStreamRequest(query=query, text=d, raw_scores=True, return_text=True)
                for d in DOCUMENTS
            ]
        ),
        timeout=60,
    )
    logits = local.rerank(query, DOCUMENTS, raw_scores=True)
    assert len(stream.ranks) == len(DOCUMENTS)
    assert_ranked_as([r.index for r in stream.ranks], logits)
    for r in stream.ranks:
        assert r.text == DOCUMENTS[r.index] and abs(r.score - float(logits[r.index])) <= SCORE_TOLERANCE


def test_grpc_rerank_errors_name_the_problem(channel):
    import grpc

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc
    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    stub = v1_grpc.EmbedderStub(channel)
    cases = [
        (lambda: stub.Rerank(v1.RerankRequest(query="q", model="ranker")), "documents must not be empty"),
        (
            lambda: stub.Rerank(v1.RerankRequest(query="q", documents=["d"], model="tiny")),
            "is an embedding model",
        ),
        (lambda: stub.Embed(v1.EmbedRequest(inputs=["d"], model="ranker")), "is a reranker"),
        (lambda: stub.Rerank(v1.RerankRequest(query="q", documents=["d"], model="ranker", top_n=0)), "top_n"),
        (lambda: tei_grpc.RerankStub(channel).RerankStream(iter([])), "sent no message"),
    ]
    for action, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            action()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert message in info.value.details()
    models = {m.id: m.kind for m in stub.ListModels(v1.ListModelsRequest()).models}
    assert models == {"tiny": "embedding", "ranker": "reranker"}
    left = tei.RerankRequest(query="q", texts=["d"], truncation_direction=tei.TRUNCATION_DIRECTION_LEFT)
    with pytest.raises(grpc.RpcError) as info:
        tei_grpc.RerankStub(channel).Rerank(left)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- truncate: false (TEI's refusal of an over-long pair) ------------------------------------------
LONG_DOCUMENT = "word " * 500  # far past the tiny reranker's 64 tokens


def _pair_tokens(model_dir: Path, query: str, document: str) -> int:
    """The pair's token count by the model's own tokenizer.json, untruncated (the reference)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return len(tokenizer.encode(query, document))


def test_tei_truncate_false_refuses_an_over_long_pair_with_422_naming_it(server, local, reranker_dir):
    texts = ["short", "also short", LONG_DOCUMENT]
    body = {"model": "ranker", "query": "q", "texts": texts, "truncate": False}
    status, answer = server.json("POST", "/rerank", body)
    assert status == 422, answer  # TEI's Validation error (422 since TEI #818)
    tokens = _pair_tokens(reranker_dir, "q", LONG_DOCUMENT)
    assert tokens > local.max_length
    error = answer["error"]
    assert error["message"] == (
        f"documents[2] and the query make {tokens} tokens, more than the model's max length of "
        f"{local.max_length}; shorten it or send truncate=true"
    )
    assert error["code"] == "input_too_long" and error["param"] == "documents"
    assert error["type"] == "invalid_request_error"
    # truncate true, or unset on a server that auto-truncates (the default): the pair is cut.
    for extra in ({"truncate": True}, {}):
        status, ranks = server.json(
            "POST", "/rerank", {"model": "ranker", "query": "q", "texts": texts, **extra}
        )
        assert status == 200 and len(ranks) == 3
    assert server.json("GET", "/health")[0] == 200


def test_tei_truncate_false_takes_pairs_up_to_the_max_length(server, local, reranker_dir):
    status, ranks = server.json(
        "POST", "/rerank", {"model": "ranker", "query": "q", "texts": DOCUMENTS[:4], "truncate": False}
    )
    assert status == 200
    expected = local.rerank("q", DOCUMENTS[:4])
    for r in ranks:
        assert abs(r["score"] - float(expected[r["index"]])) <= SCORE_TOLERANCE
    # A pair of exactly max_length tokens is not over it (TEI refuses only longer ones).
    exact = next(
        (d for k in range(1, 200) if _pair_tokens(reranker_dir, "q", d := "word " * k) == local.max_length),
        None,
    )
    assert exact is not None
    status, _ = server.json(
        "POST", "/rerank", {"model": "ranker", "query": "q", "texts": [exact], "truncate": False}
    )
    assert status == 200
    status, _ = server.json(
        "POST", "/rerank", {"model": "ranker", "query": "q", "texts": [exact + " word"], "truncate": False}
    )
    assert status == 422


def test_a_huge_over_long_document_is_counted_as_a_lower_bound(server, local):
    huge = "word " * 20_000  # past the tokenizer's count window (max_length x 64 characters)
    assert len(huge) > local.engine.tokenizer.count_chars
    status, answer = server.json(
        "POST", "/rerank", {"model": "ranker", "query": "q", "texts": [huge], "truncate": False}, timeout=120
    )
    assert status == 422
    assert "documents[0] and the query make " in answer["error"]["message"]
    assert "+ tokens, more than the model's max length" in answer["error"]["message"]


@pytest.fixture(scope="module")
def strict_server(reranker_dir):
    """A server started with --no-auto-truncate, answering HTTP and gRPC."""
    from serving import free_port

    port = free_port()
    with Server(
        [*model_arg("ranker", reranker_dir), "--no-auto-truncate", "--grpc-port", str(port)]
    ) as running:
        running.grpc_port = port
        yield running


def test_no_auto_truncate_refuses_over_long_pairs_on_tei_routes_only(strict_server):
    texts = ["short", LONG_DOCUMENT]
    status, answer = strict_server.json("POST", "/rerank", {"query": "q", "texts": texts})
    assert status == 422 and "documents[1] and the query make" in answer["error"]["message"]
    status, ranks = strict_server.json("POST", "/rerank", {"query": "q", "texts": texts, "truncate": True})
    assert status == 200 and len(ranks) == 2
    # Cohere's API has no truncate field and always cuts.
    status, body = strict_server.json("POST", "/v1/rerank", {"query": "q", "documents": texts})
    assert status == 200 and len(body["results"]) == 2


def test_grpc_tei_rerank_truncate_false_is_invalid_argument_naming_the_text(strict_server):
    import grpc

    from fastembed_native.serve.grpc import fastembed_pb2 as v1
    from fastembed_native.serve.grpc import fastembed_pb2_grpc as v1_grpc
    from fastembed_native.serve.grpc import tei_pb2 as tei
    from fastembed_native.serve.grpc import tei_pb2_grpc as tei_grpc

    texts = ["short", LONG_DOCUMENT]
    with grpc.insecure_channel(f"127.0.0.1:{strict_server.grpc_port}") as channel:
        stub = tei_grpc.RerankStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Rerank(tei.RerankRequest(query="q", texts=texts), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "documents[1] and the query make" in info.value.details()
        assert "more than the model's max length of" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.RerankStream(iter([tei.RerankStreamRequest(query="q", text=t) for t in texts]), timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "documents[1] and the query make" in info.value.details()
        # truncate=true cuts; so does our own Rerank call (no truncate field: it always cuts).
        assert (
            len(stub.Rerank(tei.RerankRequest(query="q", texts=texts, truncate=True), timeout=60).ranks) == 2
        )
        stream = stub.RerankStream(
            iter([tei.RerankStreamRequest(query="q", text=t, truncate=True) for t in texts]), timeout=60
        )
        assert len(stream.ranks) == 2
        ours = v1_grpc.EmbedderStub(channel).Rerank(v1.RerankRequest(query="q", documents=texts), timeout=60)
        assert len(ours.results) == 2


def test_an_llm_reranker_counts_its_framed_prompt(tmp_path):
    """truncate=false on an LLM reranker: the count is the framed prompt's (frame tokens included)."""
    from test_cross_encoder import _qwen3_reranker

    from fastembed_native.models import export_model
    from fastembed_native.serve.errors import InputTooLong
    from fastembed_native.serve.rerank import encode_pairs

    model_dir = export_model(_qwen3_reranker(tmp_path), tmp_path / "exported").model_dir
    scorer = TextCrossEncoder(model_dir)
    limit = scorer.max_length
    short = encode_pairs(scorer, "q", ["a short document"], None, truncate=False)
    assert len(short) == 1 and len(short[0]) < limit
    with pytest.raises(InputTooLong, match=r"documents\[1\] and the query make (\d+) tokens") as info:
        encode_pairs(scorer, "q", ["short", LONG_DOCUMENT], None, truncate=False)
    prefix, suffix = scorer._frame
    (text,) = scorer._prompts([("q", LONG_DOCUMENT)], None)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    expected = len(prefix) + len(tokenizer.encode(text, add_special_tokens=False)) + len(suffix)
    assert f"make {expected} tokens, more than the model's max length of {limit}" in str(info.value)
    assert len(encode_pairs(scorer, "q", [LONG_DOCUMENT], None, truncate=True)[0]) == limit
