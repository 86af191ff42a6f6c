"""Smoke test for an installed fastembed-native wheel: embed with a tiny model, check the vectors.

    python .ci/wheel_smoke.py build DIR   # tiny model dir + texts + exact expected vectors (needs onnx, pytest)
    python .ci/wheel_smoke.py check DIR   # embed them with the installed wheel, library and CLI (wheel only)
    python .ci/wheel_smoke.py all         # both, in a temporary directory (cibuildwheel's test-command)

`build` and `check` are split so `.ci/wheel_check` can run `check` in a fresh venv that holds the wheel
and its runtime dependencies only: no onnx, no test tools, no compiler.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "flag embedding", "fox unknownword"]


def build(root: Path) -> None:
    """Write a tiny sentence-transformers model dir under ``root``, the texts, and numpy's answer."""
    import numpy as np

    # The test suite's own builders, so the wheel is checked on the models the tests trust.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import build_tokenizer, write_model_dir

    model = write_model_dir(root / "model", token_types=True, normalize=True)
    tokenizer = build_tokenizer()
    rows = []
    for text in TEXTS:
        ids = np.array(tokenizer.encode(text).ids)
        pooled = model.states(ids, np.zeros_like(ids)).mean(axis=0)  # no padding in a single text
        rows.append(pooled / np.linalg.norm(pooled))
    np.save(root / "expected.npy", np.array(rows, dtype=np.float64))
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")


def _fail(message: str) -> None:
    print(f"wheel smoke test FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def check(root: Path) -> None:
    """Embed ``root``'s texts with the installed package (library and CLI) and compare with numpy."""
    import numpy as np

    import fastembed_native
    from fastembed_native import TextEmbedding, runtime_info

    package = Path(fastembed_native.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    if site not in package.parents:
        _fail(f"fastembed_native was imported from {package}, not from the installed wheel in {site}")
    bundled = sorted(p.name for p in package.parent.glob("fastembed_native*/**/*onnxruntime*"))
    if bundled:
        _fail(f"the wheel must not carry ONNX Runtime (it loads the onnxruntime wheel's): {bundled}")

    info = runtime_info()
    ort_dir = Path(next(iter(importlib.util.find_spec("onnxruntime").submodule_search_locations))).resolve()
    if ort_dir not in Path(str(info["library"])).resolve().parents:
        _fail(f"ONNX Runtime was loaded from {info['library']}, not from the onnxruntime wheel at {ort_dir}")
    providers = list(info["available_providers"])  # type: ignore[call-overload]
    if sys.platform == "darwin" and "CoreMLExecutionProvider" not in providers:
        _fail(f"the onnxruntime wheel on macOS should offer CoreMLExecutionProvider; it offers {providers}")

    expected = np.load(root / "expected.npy")
    vectors = TextEmbedding(root / "model").embed(TEXTS)
    if vectors.shape != expected.shape or vectors.dtype != np.float32:
        _fail(f"embed returned {vectors.shape} {vectors.dtype}, expected {expected.shape} float32")
    worst = float(np.abs(vectors - expected).max())
    if worst > 1e-5:
        _fail(f"library vectors differ from numpy's by up to {worst:.2e} (tolerance 1e-5)")

    cli = Path(sys.executable).parent / (
        "fastembed-native.exe" if sys.platform == "win32" else "fastembed-native"
    )
    out = root / "cli.npy"
    subprocess.run(
        [str(cli), "embed", str(root / "texts.txt"), "--model", str(root / "model"), "-o", str(out), "-q"],
        check=True,
        timeout=120,
    )
    cli_worst = float(np.abs(np.load(out) - expected).max())
    if cli_worst > 1e-5:
        _fail(f"CLI vectors differ from numpy's by up to {cli_worst:.2e} (tolerance 1e-5)")

    print(
        f"wheel smoke test passed: fastembed_native {fastembed_native.__version__} from {package}, "
        f"ONNX Runtime {info['version']} ({info['simd']}, {', '.join(providers)}), "
        f"{len(TEXTS)} texts via library and CLI, max |diff| {max(worst, cli_worst):.1e}"
    )


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] in ("build", "check"):
        root = Path(argv[1])
        root.mkdir(parents=True, exist_ok=True)
        (build if argv[0] == "build" else check)(root)
    elif argv == ["all"]:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp))
            check(Path(tmp))
    else:
        _fail(f"usage: wheel_smoke.py build DIR | check DIR | all (got {argv})")


if __name__ == "__main__":
    main(sys.argv[1:])
