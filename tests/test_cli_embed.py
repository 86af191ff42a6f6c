"""``fastembed-native embed`` as a user runs it (a subprocess): formats, inputs, checks made before
any work, errors that name the file and line, resume after SIGKILL and Ctrl-C, the progress bar,
options; and ``models`` / ``--version`` / ``bench corpus``."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, build_onnx

from fastembed_native import TextEmbedding
from fastembed_native.corpus.resume import state_path

CLI = [sys.executable, "-m", "fastembed_native.cli"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_cli(
    *args: str, stdin: str | bytes | None = None, env: dict[str, str] | None = None, timeout: int = 120
):
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=not isinstance(stdin, bytes),
        timeout=timeout,
        env={**os.environ, **OFFLINE, **(env or {})},
    )


def failed_with(result: subprocess.CompletedProcess, message: str, status: int = 1) -> bool:
    """Exit status 1 (2: a usage error), the message on stderr, and no traceback."""
    return result.returncode == status and message in result.stderr and "Traceback" not in result.stderr


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(0, 14))) for _ in range(n)]


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, list[str]]:
    texts = mixed_texts(300)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(texts) + "\n")
    return path, texts


# -- formats and inputs -----------------------------------------------------------------------------
def test_stdin_to_npy_equals_in_process_embed(encoder_dir, tmp_path):
    out = tmp_path / "vectors.npy"
    result = run_cli(
        "embed", "--model", str(encoder_dir.path), "-o", str(out), stdin="hello world\nthe quick fox\n"
    )
    assert result.returncode == 0, result.stderr
    expected = TextEmbedding(encoder_dir.path).embed(["hello world", "the quick fox"])
    np.testing.assert_array_equal(np.load(out), expected)
    assert "embedded 2 texts" in result.stderr and "\r" not in result.stderr  # no bar in a pipe
    assert not Path(f"{out}.partial").exists() and not state_path(out).exists()


def test_every_output_format_from_the_extension_case_insensitively(encoder_dir, corpus, tmp_path):
    import pyarrow.parquet as pq

    source, texts = corpus
    expected = TextEmbedding(encoder_dir.path).embed(texts)
    model = ["--model", str(encoder_dir.path), "-q", "--window", "128"]  # several windows
    for name, *extra in (("v.NPY",), ("v.Parquet",), ("v.jsonl", "--no-text")):
        result = run_cli("embed", str(source), "-o", str(tmp_path / name), *model, *extra)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "v.NPY"), expected)
    table = pq.read_table(tmp_path / "v.Parquet")
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[7]"
    assert table["id"].to_pylist() == list(range(len(texts))) and table["text"].to_pylist() == texts
    assert pq.ParquetFile(tmp_path / "v.Parquet").num_row_groups == 3  # one per window
    np.testing.assert_array_equal(np.stack(table["embedding"].to_numpy(zero_copy_only=False)), expected)
    records = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(len(texts))) and "text" not in records[0]
    np.testing.assert_array_equal(np.array([r["embedding"] for r in records], dtype=np.float32), expected)


def significant_digits(number: str) -> str:
    mantissa = number.lower().split("e")[0].lstrip("-").replace(".", "")
    return mantissa.strip("0")


def test_jsonl_floats_are_the_shortest_that_read_back_as_the_same_float32(encoder_dir, corpus, tmp_path):
    source, texts = corpus
    result = run_cli("embed", str(source), "--model", str(encoder_dir.path), "-q")
    assert result.returncode == 0, result.stderr
    expected = TextEmbedding(encoder_dir.path).embed(texts)
    lines = result.stdout.splitlines()
    assert len(lines) == len(texts)
    for line, row in zip(lines, expected, strict=True):
        numbers = line.split('"embedding":')[1].strip(" []}").split(",")
        np.testing.assert_array_equal(np.array(numbers, dtype=np.float64).astype(np.float32), row)
        for number, value in zip(numbers, row, strict=True):
            # numpy's repr of a float32 is its shortest round-trip form: as few digits, never more.
            assert len(significant_digits(number)) <= len(significant_digits(repr(float(value)))), number
            assert len(significant_digits(number)) == len(significant_digits(str(value))), (number, value)


def test_jsonl_field_parquet_column_and_several_files(encoder_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"body": "flag embedding"}) + "\n\n" + json.dumps({"body": "dog"}) + "\n")
    table = tmp_path / "more.parquet"
    pq.write_table(pa.table({"body": ["lazy fox", "hello"]}), table)
    model = ["--model", str(encoder_dir.path), "-q"]
    # No -o: JSONL on stdout, with the text.
    result = run_cli("embed", str(docs), str(table), "--field", "body", "--column", "body", *model)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["text"]) for r in records] == [
        (0, "flag embedding"),
        (1, "dog"),
        (2, "lazy fox"),
        (3, "hello"),
    ]


# -- checks before any work -------------------------------------------------------------------------
def test_output_problems_are_found_before_the_model_is_loaded(corpus, tmp_path):
    source, _ = corpus
    # The model does not exist: had it been loaded first, that would be the error.
    no_model = ["--model", str(tmp_path / "no-such-model")]
    result = run_cli("embed", str(source), "-o", str(tmp_path / "v.txt"), *no_model)
    assert (
        failed_with(result, "cannot tell the output format of") and ".jsonl, .npy, .parquet" in result.stderr
    )
    result = run_cli("embed", str(source), "-o", str(tmp_path / "missing" / "v.npy"), *no_model)
    assert failed_with(result, f"folder {tmp_path / 'missing'} does not exist")
    result = run_cli("embed", str(tmp_path), "-o", str(tmp_path / "v.npy"), *no_model)
    assert failed_with(result, f"{tmp_path}: is a directory, expected a file")
    (tmp_path / "v.npy").write_bytes(b"precious")
    result = run_cli("embed", str(source), "-o", str(tmp_path / "v.npy"), *no_model)
    assert failed_with(result, "v.npy exists: pass --overwrite")
    assert (tmp_path / "v.npy").read_bytes() == b"precious"
    result = run_cli("embed", str(source), "-o", str(tmp_path / "v.npy"), "--resume", *no_model)
    assert failed_with(result, "no partial run to resume")


def test_options_that_do_not_fit_the_inputs_are_usage_errors(corpus, tmp_path):
    """JSONL without --field would embed raw JSON; --column without Parquet, --field with only
    Parquet would be ignored. Each is refused before the model loads, naming the option."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, _ = corpus
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"body": "flag embedding"}) + "\n")
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["lazy fox"]}), table)
    no_model = ["--model", str(tmp_path / "no-such-model")]
    result = run_cli("embed", str(docs), *no_model)
    assert failed_with(result, "docs.jsonl is JSONL: pass --field NAME", status=2), result.stderr
    assert result.stdout == ""
    result = run_cli("embed", str(source), "--column", "body", *no_model)
    assert failed_with(result, "--column body names the text column of Parquet inputs", status=2)
    result = run_cli("embed", "--column", "body", *no_model, stdin="hello\n")
    assert failed_with(result, "no input is Parquet (<stdin>)", status=2), result.stderr
    result = run_cli("embed", str(table), "--field", "body", *no_model)
    assert failed_with(result, "--field body names a field of JSONL records, and every input is Parquet", 2)


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(
    IS_ROOT and shutil.which("setpriv") is None, reason="as root, needs setpriv to drop CAP_DAC_OVERRIDE"
)
def test_a_read_only_output_folder_is_refused(corpus, tmp_path):
    source, _ = corpus
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    # Root writes anywhere; without the capabilities that let it, it meets the folder's mode like anyone.
    drop = ["setpriv", "--bounding-set", "-dac_override", "--inh-caps", "-dac_override"] if IS_ROOT else []
    result = subprocess.run(
        [*drop, *CLI, "embed", str(source), "-o", str(folder / "v.npy"), "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **OFFLINE},
    )
    assert failed_with(result, "is not writable")


def test_bad_input_names_file_and_line(encoder_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = ["--model", str(encoder_dir.path), "-o", str(tmp_path / "v.npy")]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"hello\nworld\ncaf\xe9\n")
    assert failed_with(run_cli("embed", str(latin1), *model), "latin1.txt:3: not valid UTF-8 (byte 0xe9")
    records = tmp_path / "bad.jsonl"
    records.write_text('{"body": "ok"}\n{"title": "no body"}\n')
    result = run_cli("embed", str(records), "--field", "body", *model, "--overwrite")
    assert failed_with(result, "bad.jsonl:2: record has no field 'body' (its fields: 'title')")
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"]}), table)
    result = run_cli("embed", str(table), *model, "--overwrite")
    assert failed_with(result, "t.parquet: no column 'text' (its columns: body); choose one with --column")


# -- resume ------------------------------------------------------------------------------------------
def interrupt_mid_run(args: list[str], out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start the command, wait until it has committed a window, then send ``sig``."""
    proc = subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **OFFLINE},
    )
    deadline = time.monotonic() + 60
    while not (state_path(out).exists() and json.loads(state_path(out).read_text())["rows"] > 0):
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no window committed within 60 s"
        time.sleep(0.002)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def long_corpus(tmp_path) -> Path:
    path = tmp_path / "long.txt"
    path.write_text("\n".join(mixed_texts(12_000, seed=1)) + "\n")
    return path


def test_resume_after_sigkill_and_ctrl_c_equals_an_uninterrupted_run(encoder_dir, long_corpus, tmp_path):
    import pyarrow.parquet as pq

    common = [str(long_corpus), "--model", str(encoder_dir.path), "--window", "1000", "-q"]
    clean = tmp_path / "clean.npy"
    assert run_cli("embed", *common, "-o", str(clean)).returncode == 0
    expected = np.load(clean)

    # SIGKILL: no chance to clean up. The partial output is never taken for the finished one.
    out = tmp_path / "killed.npy"
    killed = interrupt_mid_run(["embed", *common, "-o", str(out)], out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and Path(f"{out}.partial").exists()
    rerun = run_cli("embed", *common, "-o", str(out))
    assert (
        failed_with(rerun, "holds an unfinished run (") and "rows committed): pass --resume" in rerun.stderr
    )
    changed = run_cli("embed", *common, "-o", str(out), "--resume", "--batch-size", "8")
    assert failed_with(changed, "batch_size: None -> 8")
    stat = long_corpus.stat()
    os.utime(long_corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert failed_with(run_cli("embed", *common, "-o", str(out), "--resume"), "changed (modified)")
    os.utime(long_corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    resumed = run_cli("embed", *common[:-1], "-o", str(out), "--resume")
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
    np.testing.assert_array_equal(np.load(out), expected)
    assert not state_path(out).exists() and not Path(f"{out}.partial").exists()

    # Ctrl-C: one line, status 130, and what was written resumes into the same result.
    out = tmp_path / "interrupted.parquet"
    stopped = interrupt_mid_run(["embed", *common, "-o", str(out)], out, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr and len(stopped.stderr.strip().splitlines()) == 1
    assert "rerun the same command with --resume" in stopped.stderr
    assert run_cli("embed", *common, "-o", str(out), "--resume").returncode == 0
    table = pq.read_table(out)
    assert table["id"].to_pylist() == list(range(len(expected)))
    np.testing.assert_array_equal(np.stack(table["embedding"].to_numpy(zero_copy_only=False)), expected)


def test_ctrl_c_within_the_first_window_keeps_what_was_committed(encoder_dir, long_corpus, tmp_path):
    """12,000 lines are less than one 16,384-text window: commits by time (here after every sort
    window) keep the work done, and the resumed output equals an uninterrupted run's."""
    common = [str(long_corpus), "--model", str(encoder_dir.path), "-q"]
    clean = tmp_path / "clean.npy"
    assert run_cli("embed", *common, "-o", str(clean)).returncode == 0
    out = tmp_path / "v.npy"
    stopped = interrupt_mid_run(
        ["embed", *common, "-o", str(out), "--commit-seconds", "0"], out, signal.SIGINT
    )
    assert stopped.returncode == 130 and "rows are saved" in stopped.stderr, stopped.stderr
    saved = json.loads(state_path(out).read_text())["rows"]
    assert 0 < saved < 12_000 and saved % 4096 == 0  # sort-window boundaries: same batches on resume
    resumed = run_cli("embed", *common, "-o", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(np.load(out), np.load(clean))


def test_a_run_that_fails_before_its_first_commit_leaves_nothing_to_resume(encoder_dir, tmp_path):
    model = ["--model", str(encoder_dir.path)]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\nworld\ncaf\xe9\n")
    for name in ("v.npy", "v.parquet", "v.jsonl"):
        out = tmp_path / name
        first = run_cli("embed", str(bad), "-o", str(out), *model)
        assert failed_with(first, "bad.txt:3: not valid UTF-8"), first.stderr
        assert not Path(f"{out}.partial").exists() and not state_path(out).exists()
        again = run_cli("embed", str(bad), "-o", str(out), *model)  # the same error, not "pass --resume"
        assert failed_with(again, "bad.txt:3: not valid UTF-8"), again.stderr
    # What a SIGKILL before the first commit leaves (a partial output, no state file) cannot be
    # resumed: the next run says so, removes it and starts over.
    good = tmp_path / "good.txt"
    good.write_text("hello world\nthe quick fox\n")
    out = tmp_path / "v.npy"
    Path(f"{out}.partial").write_bytes(b"\x93NUMPY half a header")
    result = run_cli("embed", str(good), "-o", str(out), *model)
    assert result.returncode == 0 and "nothing in it could be resumed" in result.stderr, result.stderr
    expected = TextEmbedding(encoder_dir.path).embed(["hello world", "the quick fox"])
    np.testing.assert_array_equal(np.load(out), expected)
    assert "embedded 2 texts" in result.stderr
    one = run_cli("embed", *model, "-o", str(tmp_path / "one.npy"), stdin="hello\n")
    assert "embedded 1 text ->" in one.stderr, one.stderr


# -- progress, options, other commands ---------------------------------------------------------------
def test_progress_bar_on_a_terminal_only(encoder_dir, tmp_path):
    """On a terminal a bar with a rate appears once a run lasts over a second. The input arrives
    slowly on stdin, a window at a time, until the bar shows, so this holds on a fast machine too."""
    primary, secondary = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide; tqdm would draw a bar of width 0.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [*CLI, "embed", "--model", str(encoder_dir.path), "--window", "50", "-o", str(tmp_path / "v.npy")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env={**os.environ, **OFFLINE},
    )
    os.close(secondary)
    assert proc.stdin is not None
    screen, sent = b"", 0
    try:
        while b"text/s" not in screen and sent < 40 * 50:
            proc.stdin.write(b"hello world\n" * 50)
            proc.stdin.flush()
            sent += 50
            deadline = time.monotonic() + 0.3
            while (left := deadline - time.monotonic()) > 0:
                if select.select([primary], [], [], left)[0]:
                    screen += os.read(primary, 4096)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        while select.select([primary], [], [], 0.5)[0]:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child's end is closed
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(primary)
        proc.kill()
    text = screen.decode(errors="replace")
    assert "text/s" in text, text
    assert f"{sent}text" in text.replace(" ", "") and f"embedded {sent} texts" in text, text


def test_options_reach_the_model(encoder_dir, tmp_path):
    build_onnx(encoder_dir.path / "onnx" / "other.onnx", token_types=True, seed=7)
    (encoder_dir.path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "flag "}})
    )
    texts = ["hello world", "the quick brown fox jumps over the lazy dog"]
    stdin = "\n".join(texts) + "\n"
    out = tmp_path / "v.npy"
    args = ["embed", "--model", str(encoder_dir.path), "-o", str(out), "-q", "--threads", "1"]
    result = run_cli(
        *args, "--prompt-text", "fox ", "--max-length", "4", "--onnx-file", "onnx/other.onnx", stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    other = TextEmbedding(encoder_dir.path, max_length=4, onnx_file="onnx/other.onnx")
    np.testing.assert_array_equal(np.load(out), other.embed(texts, prompt="fox "))
    result = run_cli(*args, "--prompt", "query", "--overwrite", stdin=stdin)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(out), TextEmbedding(encoder_dir.path).embed(texts, prompt="flag "))
    result = run_cli(*args, "--prompt", "passage", "--overwrite", stdin=stdin)
    assert failed_with(
        result,
        "no prompt named 'passage' (its prompts: 'query'); to prepend text of your own use --prompt-text",
    )


def test_every_embed_option_has_help():
    from fastembed_native.cli import build_parser

    parser = build_parser()
    embed = parser._subparsers._group_actions[0].choices["embed"]
    missing = [a.dest for a in embed._actions if a.dest != "help" and not a.help]
    assert missing == []
    assert {
        "--threads",
        "--max-length",
        "--onnx-file",
        "--batch-size",
        "--prompt",
        "--prompt-text",
        "--no-text",
        "--resume",
        "--overwrite",
        "--column",
        "--field",
    } <= set(embed._option_string_actions)


def test_version_and_models_show_what_is_cached(tmp_path):
    from fastembed_native import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fastembed-native {__version__}"
    (tmp_path / "BAAI--bge-small-en-v1.5").mkdir()
    (tmp_path / "acme--custom-model").mkdir()
    (tmp_path / "acme--custom-model" / "config.json").write_text("{}")
    (tmp_path / "eval").mkdir()  # bench quality's evaluation set is not a model
    (tmp_path / ".acme--half-built.x1").mkdir()  # a build in progress is not a model
    result = run_cli("models", env={"FASTEMBED_NATIVE_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["BAAI/bge-small-en-v1.5"].endswith("cached")
    assert lines["sentence-transformers/all-MiniLM-L6-v2"].endswith("-")
    assert "acme/custom-model" in lines and not any("half-built" in k for k in lines)
    assert "eval" not in lines
    assert f"model cache: {tmp_path}" in result.stdout


def test_bench_corpus_measures_each_output_format_on_the_same_input(encoder_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(mixed_texts(50)) + "\n")
    result = run_cli(
        "bench",
        "corpus",
        "--model",
        str(encoder_dir.path),
        "--lines",
        "300",
        "--formats",
        "npy,jsonl,parquet",
        "--max-words",
        "3",
        "--throughput-texts",
        "0",
        "--texts",
        str(texts),
        "--threads",
        "1",
        "--out",
        str(tmp_path / "res"),
        "--name",
        "formats",
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "res" / "formats.json").read_text())
    assert [(m["lines"], m["format"]) for m in results["memory"]] == [
        (300, "npy"),
        (300, "jsonl"),
        (300, "parquet"),
    ]
    assert all(m["peak_rss_mb"] > 10 and m["output_mb"] >= 0 for m in results["memory"])
    table = (tmp_path / "res" / "formats.md").read_text()
    assert "| 300 | .parquet |" in table and "Peak RSS against .npy on the same 300 lines: .jsonl " in table
    assert "throughput" not in results and results["max_words"] == 3
    bad = run_cli("bench", "corpus", "--formats", "npy,csv", "--out", str(tmp_path / "res"))
    assert bad.returncode == 2 and "unknown output format(s) csv" in bad.stderr


def test_bench_corpus_small_run(encoder_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(mixed_texts(50)) + "\n")
    result = run_cli(
        "bench",
        "corpus",
        "--model",
        str(encoder_dir.path),
        "--lines",
        "100,1000",
        "--throughput-texts",
        "500",
        "--repeats",
        "1",
        "--texts",
        str(texts),
        "--threads",
        "1",
        "--out",
        str(tmp_path / "res"),
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "res" / "corpus.json").read_text())
    assert [m["lines"] for m in results["memory"]] == [100, 1000]
    assert all(m["peak_rss_mb"] > 10 for m in results["memory"])
    assert results["throughput"]["texts"] == 500 and results["throughput"]["max_abs_difference"] == 0.0
    assert "| 1,000 |" in (tmp_path / "res" / "corpus.md").read_text()
