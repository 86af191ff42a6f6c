"""Hostile and wrong input over HTTP: every error is a 4xx in the OpenAI error shape naming the
problem, never a 500, and the server keeps serving. Runs on a tiny model (no real weights needed)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from conftest import VOCAB, write_model_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import HOST, Server

pytestmark = pytest.mark.timeout(300)

KEY = "s3cret-key"
AUTH = {"authorization": f"Bearer {KEY}"}
ROUTES = ["/v1/embeddings", "/embeddings", "/embed", "/tokenize"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("serve") / "tiny", token_types=True, normalize=True).path


@pytest.fixture(scope="module")
def server(tiny_dir):
    args = [
        "--model",
        f"tiny={tiny_dir}",
        "--api-key",
        KEY,
        "--max-inputs",
        "64",
        "--max-body-bytes",
        "20000",
    ]
    with Server(args) as s:
        yield s


def assert_error(status: int, body: bytes, expected: int, *words: str) -> dict:
    assert status == expected, body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    return error


def post(server: Server, path: str, body, headers=None):
    status, _, data = server.request("POST", path, body, headers={**AUTH, **(headers or {})})
    return status, data


def test_a_good_request_works(server):
    status, data = post(server, "/v1/embeddings", {"input": ["hello world"], "model": "tiny"})
    assert status == 200
    assert len(json.loads(data)["data"][0]["embedding"]) == 7


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": []}, 400, ["input must not be empty"]),
        ({"input": ["ok", 3]}, 400, ["input[1] must be a string"]),
        ({"input": [[1, 2], "x"]}, 400, ["input[1] must be a list of token ids like input[0]"]),
        ({"input": [[1, "2"]]}, 400, ["input[0][1] must be a token id"]),
        ({"input": [[]]}, 400, ["input[0] is an empty list"]),
        ({"input": [[1, 2, len(VOCAB)]]}, 400, ["token id 16", "vocabulary (0..15)"]),
        ({"input": [[-1]]}, 400, ["token id -1"]),
        ({"input": {"a": 1}}, 400, ["input must be a string, a list"]),
        ({"input": None}, 400, ["input must be"]),
        ({}, 400, ["input: Field required"]),
        ({"input": "x", "model": "nope"}, 404, ["'nope' is not served", "tiny"]),
        ({"input": "x", "encoding_format": "hex"}, 400, ["encoding_format"]),
        ({"input": "x", "dimensions": 0}, 400, ["dimensions must be an integer from 1 to 7"]),
        ({"input": "x", "dimensions": 8}, 400, ["from 1 to 7"]),
        ({"input": "x", "dimensions": "4"}, 400, ["dimensions"]),
        ({"input": "x", "prompt_name": "query"}, 400, ["no prompt named 'query'"]),
        ({"input": [[1, 2]], "prompt_name": "query"}, 400, ["prompt_name applies to text"]),
        ({"input": ["x"] * 65}, 413, ["65 inputs", "limit is 64"]),
        ({"input": "hello " * 40, "truncate": False}, 400, ["has 42 tokens", "max length of 16"]),
        ([1, 2], 400, ["must be a JSON object"]),
        ("just a string", 400, ["must be a JSON object"]),
    ],
)
def test_bad_openai_requests_are_4xx_naming_the_problem(server, body, status, words):
    error = assert_error(*post(server, "/v1/embeddings", body), status, *words)
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_empty_strings_embed(server):
    status, data = post(server, "/v1/embeddings", {"input": ["", " "], "encoding_format": "float"})
    assert status == 200
    vectors = np.array([d["embedding"] for d in json.loads(data)["data"]])
    assert np.isfinite(vectors).all()


def test_bodies_that_are_not_json(server):
    assert_error(*post(server, "/v1/embeddings", b"{bad"), 400, "not valid JSON")
    assert_error(*post(server, "/v1/embeddings", b"\xff\xfe\x00{"), 400, "not valid JSON")
    assert_error(*post(server, "/v1/embeddings", b""), 400, "body is empty")
    assert_error(*post(server, "/embed", b'{"inputs": "\\ud800"}'), 400, "UTF-8")


def test_keys(server):
    body = {"input": "x"}
    assert_error(*server.request("POST", "/v1/embeddings", body)[::2], 401, "API key")
    status, _, data = server.request(
        "POST", "/v1/embeddings", body, headers={"authorization": "Bearer wrong"}
    )
    assert_error(status, data, 401, "Authorization: Bearer")
    status, _, data = server.request("GET", "/v1/models", headers={"authorization": KEY})  # no scheme
    assert_error(status, data, 401)
    assert server.request("GET", "/health")[0] == 200  # open to load balancers


def test_huge_bodies_are_413_before_parsing(server):
    status, data = post(server, "/v1/embeddings", {"input": "x" * 30000})
    assert_error(status, data, 413, "limit is 20000")
    # Chunked (no Content-Length): refused once the stream passes the limit.
    with socket.create_connection((HOST, server.port), timeout=30) as s:
        head = (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        s.sendall(head.encode())
        chunk = b'{"input": "' + b"y" * 8000
        for _ in range(4):
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        reply = s.recv(65536).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


def test_unknown_routes_and_methods(server):
    status, _, data = server.request("GET", "/nope", headers=AUTH)
    assert_error(status, data, 404, "no route '/nope'")
    status, _, data = server.request("GET", "/embed", headers=AUTH)
    assert_error(status, data, 405, "GET is not allowed")


def test_tei_tokenize_and_bad_tei_input(server):
    status, data = post(server, "/tokenize", {"inputs": "hello fox"})
    assert status == 200
    tokens = json.loads(data)[0]
    assert [t["id"] for t in tokens] == [VOCAB["[CLS]"], VOCAB["hello"], VOCAB["fox"], VOCAB["[SEP]"]]
    assert tokens[1] == {"id": VOCAB["hello"], "text": "hello", "special": False, "start": 0, "stop": 5}
    assert_error(*post(server, "/embed", {"inputs": "x", "normalize": "yes"}), 400, "normalize")
    assert_error(*post(server, "/embed", {"inputs": "x", "truncation_direction": "Left"}), 400)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "input",
        "inputs",
        "model",
        "encoding_format",
        "dimensions",
        "truncate",
        "normalize",
        "prompt_name",
        "user",
    ]
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(field_names, json_values, max_size=6).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
headers = st.dictionaries(
    st.sampled_from(["content-type", "x-anything", "accept", "content-encoding"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=bodies, extra=headers)
def test_generated_bodies_and_headers_never_give_a_500(server, route, body, extra):
    status, _, data = server.request("POST", route, body, headers={**extra, **AUTH})
    assert status < 500, (status, data)
    if status >= 400:
        error = json.loads(data)["error"]
        assert error["message"]


def test_still_serving_after_all_that(server):
    test_a_good_request_works(server)
    assert server.metric("fastembed_requests_total", 'route="/v1/embeddings",status="500"') == 0
