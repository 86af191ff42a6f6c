"""Corpus embedding: files of any size in, a file of vectors out, in constant memory, resumable.

It owns ``fastembed-native embed``: reading text lines, JSONL fields and Parquet columns
(:mod:`.inputs`), the model of any kind behind one call (:mod:`.encoders`: dense, sparse or
multi-vector, as the model's files say), each kind's rows as Arrow columns and JSON
(:mod:`.rows`), writing ``.npy`` / ``.jsonl`` / ``.parquet`` incrementally (:mod:`.outputs`),
the state file that makes ``--resume`` safe (:mod:`.resume`), the run itself, window by window
(:mod:`.job`), and the command's options and messages (:mod:`.command`).

It sits at the top beside the command line and the benchmarks: it may import every layer below
(the engine's streaming helpers in ``engine.stream`` and its heads, the model store, the public
model classes, the exception types); only the command line, the benchmarks and the Ray
integration (which writes the same columns through :mod:`.encoders` and :mod:`.rows`) import it.
pyarrow (the ``[corpus]`` extra) is imported only where Parquet is read or written.
"""

from .inputs import CorpusError, CorpusUsageError, Input, count_texts, plan_inputs, read_texts
from .job import Job, plan, run
from .outputs import OUTPUT_FORMATS, output_format

__all__ = [
    "OUTPUT_FORMATS",
    "CorpusError",
    "CorpusUsageError",
    "Input",
    "Job",
    "count_texts",
    "output_format",
    "plan",
    "plan_inputs",
    "read_texts",
    "run",
]
