"""Integrations: fastembed_native inside other people's engines, each in its own module behind its
own extra, imported only by name (``fastembed_native.integrations.ray`` needs
``pip install 'fastembed-native[ray]'``), so this package adds no dependency to plain embedding.

It owns the glue only: :mod:`.ray` turns a Ray Data ``Dataset`` of texts into one with an embedding
column (a callable class for ``Dataset.map_batches`` and ``embed_dataset``, which sizes the actor
pool); :mod:`.ray_serve` runs the HTTP server's app on Ray Serve replicas (``[ray-serve]`` extra),
each loading its models once behind Serve's proxy. It sits at the top of the package beside the
command line and the server: it may import the public API (:class:`fastembed_native.TextEmbedding`),
the model store, the engine and the server (:mod:`fastembed_native.serve`, a neighbour at the top
that never imports it), and nothing in the package imports it.
"""
