"""Benchmarks: fastembed_native against the pipelines users write today, run as
``fastembed-native bench``. It owns the corpus (:mod:`.corpus`), the contenders (:mod:`.contenders`),
the measurements (:mod:`.measure`), the report (:mod:`.report`) and the driver (:mod:`.run`).

It sits at the top beside the command line: it may import every layer below (the engine, the model
store, the public API), and nothing imports it but the command line.
"""
