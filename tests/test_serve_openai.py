"""The server against the official `openai` client and TEI's contract, on the real all-MiniLM-L6-v2:
every vector over the wire equals in-process `TextEmbedding.embed` of the same text."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from serving import Server
from test_parity import real_corpus

from fastembed_native.models import cosine_rows

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]

openai = pytest.importorskip("openai", reason="the [test] extra brings the openai client")

MODEL = "minilm"


@pytest.fixture(scope="module")
def server(minilm_dir):
    with Server(["--model", f"{MODEL}={minilm_dir}", "--cache-size", "0"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    cosines = cosine_rows(got, expected)
    assert cosines.min() >= 0.99999, f"input {int(cosines.argmin())}: cosine {cosines.min()}"


def test_default_call_is_base64_and_equals_in_process(client, minilm, server):
    texts = real_corpus()
    # The client asks for base64 when the caller does not choose; the raw body shows it.
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=texts)
    assert '"embedding":"' in raw.http_response.text
    response = raw.parse()
    assert_same(vectors(response), minilm.embed(texts))
    assert response.model == MODEL
    tokens = sum(len(e) for e in minilm.tokenizer.encode(texts))
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert float(raw.headers["x-inference-time"]) > 0


def test_float_encoding_and_single_string(client, minilm):
    response = client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert len(response.data) == 1
    assert_same(vectors(response), minilm.embed(["hello world"]))


def test_dimensions_truncate_and_renormalise_like_the_library(client, minilm):
    texts = ["matryoshka truncation", "keeps the first dimensions"]
    got = vectors(client.embeddings.create(model=MODEL, input=texts, dimensions=64, encoding_format="float"))
    expected = minilm.embed(texts, dimensions=64)
    assert got.shape == (2, 64)
    assert_same(got, expected)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    full = minilm.embed(texts)[:, :64]
    assert_same(expected, full / np.linalg.norm(full, axis=1, keepdims=True))


def test_token_id_inputs_from_tokenize_equal_the_text(client, server, minilm):
    texts = ["token ids in", "vectors out, the same as for the text"]
    status, tokens = server.json("POST", "/tokenize", {"inputs": texts, "model": MODEL})
    assert status == 200
    ids = [[t["id"] for t in row] for row in tokens]
    assert ids == [e.ids for e in minilm.tokenizer.encode(texts)]
    assert_same(vectors(client.embeddings.create(model=MODEL, input=ids)), minilm.embed(texts))
    one = vectors(client.embeddings.create(model=MODEL, input=ids[0]))  # a single list of ids
    assert_same(one, minilm.embed(texts[:1]))


def test_2048_inputs_in_one_request(client, minilm):
    texts = [f"input number {i}: " + "word " * (i % 40) for i in range(2048)]
    response = client.embeddings.create(model=MODEL, input=texts)
    assert len(response.data) == 2048
    assert_same(vectors(response), minilm.embed(texts))


def test_async_client_concurrent_calls(server, minilm):
    texts = real_corpus()

    async def main():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
            responses = await asyncio.gather(
                *(client.embeddings.create(model=MODEL, input=[text]) for text in texts),
                client.embeddings.create(model=MODEL, input=texts, encoding_format="float"),
            )
        return responses

    responses = asyncio.run(main())
    expected = minilm.embed(texts)
    assert_same(np.vstack([vectors(r) for r in responses[:-1]]), expected)
    assert_same(vectors(responses[-1]), expected)


def test_thousand_concurrent_requests_all_succeed_and_batch_together(server, minilm):
    """The original plan's stress test: 1000 requests at once; the queue merges them into few calls."""
    texts = [
        f"request {i} asks about {word}" for i, word in enumerate(["cats", "dogs", "rust", "onnx"] * 250)
    ]
    calls_before = server.metric("fastembed_batch_texts_count")
    # 1000 connections opening at once on 2 cores: a generous connect timeout, no retries (a retry
    # would hide a failure).
    timeout = openai.Timeout(120, connect=60)

    async def main():
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=timeout
        ) as client:
            return await asyncio.gather(*(client.embeddings.create(model=MODEL, input=t) for t in texts))

    responses = asyncio.run(main())
    assert_same(np.vstack([vectors(r) for r in responses]), minilm.embed(texts))
    calls = server.metric("fastembed_batch_texts_count") - calls_before
    assert calls < len(texts) / 4, f"{calls} engine calls for {len(texts)} concurrent requests: no batching"


def test_tei_embed_contract(server, minilm):
    texts = ["text-embeddings-inference users", "switch by changing a URL"]
    status, body = server.json("POST", "/embed", {"inputs": texts})
    assert status == 200 and isinstance(body, list) and len(body) == 2
    assert_same(np.array(body, dtype=np.float32), minilm.embed(texts))
    status, raw = server.json("POST", "/embed", {"inputs": texts[0], "normalize": False})
    unnormalised = np.array(raw, dtype=np.float32)
    assert abs(np.linalg.norm(unnormalised) - 1.0) > 1e-3  # MiniLM's raw mean is not unit length
    assert_same(unnormalised, minilm.embed(texts[:1]))  # same direction
    status, body = server.json("POST", "/embed", {"inputs": texts, "dimensions": 32})
    assert_same(np.array(body, dtype=np.float32), minilm.embed(texts, dimensions=32))


def test_truncation_by_default_and_refusal_when_asked(server, minilm):
    long = "word " * 400
    status, body = server.json("POST", "/embed", {"inputs": long})
    assert status == 200
    assert_same(np.array(body, dtype=np.float32), minilm.embed([long]))
    status, body = server.json("POST", "/embed", {"inputs": ["short", long], "truncate": False})
    assert status == 422  # as TEI answers (its Validation errors, since TEI #818)
    assert "input[1] has 402 tokens" in body["error"]["message"] and "256" in body["error"]["message"]
    assert body["error"]["code"] == "input_too_long"
    # The OpenAI route answers 400, as OpenAI answers a context that is too long.
    status, body = server.json("POST", "/v1/embeddings", {"input": ["short", long], "truncate": False})
    assert status == 400 and body["error"]["code"] == "input_too_long", body
    assert "input[1] has 402 tokens" in body["error"]["message"]


def test_models_info_and_base64_bytes(server, client, minilm):
    listed = client.models.list()
    assert [m.id for m in listed.data] == [MODEL]
    status, info = server.json("GET", "/info")
    assert status == 200
    assert info["models"][0]["dim"] == 384 and info["max_input_length"] == 256
    assert info["max_client_batch_size"] == 2048
    status, body = server.json("POST", "/v1/embeddings", {"input": ["bytes"], "encoding_format": "base64"})
    row = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert_same(row[None, :], minilm.embed(["bytes"]))
