"""The gRPC transport of ``fastembed-native serve``: our batched ``fastembed_native.v1`` API,
text-embeddings-inference's ``tei.v1`` (wire-compatible for Info, Embed, EmbedStream and Tokenize),
the standard ``grpc.health.v1`` health service and server reflection, on the event loop that runs
the HTTP server.

It owns the ``.proto`` files, their committed stubs (``*_pb2*.py``, regenerated and compared by the
tests through :mod:`.codegen`) and the servicers in :mod:`.server`, which only translate protobuf
messages to :class:`~fastembed_native.serve.service.EmbedRequest` and back and
:class:`~fastembed_native.serve.errors.ApiError` to status codes. It may import the rest of
``serve`` (service, errors, config, metrics) and below; nothing in ``serve`` imports it except
``serve.server``, lazily, when a gRPC port is asked for. Needs grpcio, grpcio-health-checking and
grpcio-reflection (the ``[serve]`` extra).
"""
