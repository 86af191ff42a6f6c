"""Benchmarks: fastembed_native against the pipelines users write today, run as
``fastembed-native bench``. It owns the corpus (:mod:`.corpus`), the contenders (:mod:`.contenders`),
the measurements (:mod:`.measure`), the report (:mod:`.report`) and the driver (:mod:`.run`).
``bench rerank`` (:mod:`.rerank`) does the same for rerankers, with its own contenders
(:mod:`.rerank_contenders`) and random-weight models at real rerankers' shapes (:mod:`.rerank_models`);
``bench serve --rerank`` (:mod:`.serve_rerank`) serves such a model under concurrent clients.
``bench sparse`` (:mod:`.sparse`) and ``bench late`` (:mod:`.late`) do it for SPLADE and ColBERT
encoders (:mod:`.sparse_contenders`, each in a worker process of its own through
:mod:`.sparse_worker`; :mod:`.late_contenders`, pylate in its own venv through :mod:`.pylate_worker`;
both workers on :mod:`.worker_protocol`), on random-weight models at real shapes (:mod:`.head_models`).

It sits at the top beside the command line: it may import every layer below (the engine, the model
store, the public API), and nothing imports it but the command line.
"""
