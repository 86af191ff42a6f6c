"""Integrations: fastembed_native inside other people's engines, each in its own module behind its
own extra, imported only by name (``fastembed_native.integrations.ray`` needs
``pip install 'fastembed-native[ray]'``), so this package adds no dependency to plain embedding.

It owns the glue only: :mod:`.ray` turns a Ray Data ``Dataset`` of texts into one with an embedding
column (a callable class for ``Dataset.map_batches`` and ``embed_dataset``, which sizes the actor
pool); :mod:`.ray_serve` runs the HTTP server's app on Ray Serve replicas (``[ray-serve]`` extra),
each loading its models once behind Serve's proxy. The retrieval frameworks and vector databases
each get a module in their own interface, on :class:`~fastembed_native.TextEmbedding` (query and
passage prompts applied, the same vectors) and :class:`~fastembed_native.TextCrossEncoder`:
:mod:`.langchain` (``Embeddings``, a reranking ``BaseDocumentCompressor``), :mod:`.llama_index`
(``BaseEmbedding``, a reranking ``BaseNodePostprocessor``), :mod:`.haystack` (text and document
embedder and ranker components), :mod:`.chroma` (a registered ``EmbeddingFunction``), :mod:`.lancedb`
(a registered embedding function and a ``Reranker``) and :mod:`.qdrant` (local-mode collections of
named vectors, fused queries and reranking); ``_shared`` gives them one loaded model per
configuration. It sits at the top of the package beside the
command line and the server: it may import the public API (:class:`fastembed_native.TextEmbedding`),
the model store, the engine and the server (:mod:`fastembed_native.serve`, a neighbour at the top
that never imports it), and nothing in the package imports it.
"""
