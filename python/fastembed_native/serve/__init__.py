"""``fastembed-native serve``: embeddings over the network, OpenAI- and TEI-compatible.

Layers inside, each importing only downward: the transports (:mod:`.http`; gRPC beside it) translate
their wire formats; :mod:`.service` validates, tokenizes (off the event loop, :mod:`.tokenize`),
consults the cache and finishes each request; :mod:`.batcher` is the cross-request batching core (one
queue and one engine thread per model); :mod:`.limits` bounds what clients can make the server hold
(bytes of requests in flight, connections, headers, stalled bodies); :mod:`.errors` maps every client
error to its HTTP status and gRPC code once. The whole
package sits above the public API (it loads models with ``TextEmbedding``) and nothing in the
library imports it. Its dependencies are the ``[serve]`` extra; importing this package itself
needs none of them (the command line reads :mod:`.config` for its flags' defaults).
"""

from .config import API_KEY_ENV, ModelSpec, ServeConfig

__all__ = ["API_KEY_ENV", "ModelSpec", "ServeConfig"]
