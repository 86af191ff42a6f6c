"""Calibration text for quantization: real text found on this machine, never the evaluation's.

``quantize`` reads activation statistics (which input channels carry outliers, and each weight
matrix's input covariance for GPTQ rounding) from a few hundred texts. The sources, in order:

1. a file the user gives (``--calibration FILE``: one text per line);
2. Debian package descriptions from the apt lists (``/var/lib/apt/lists/*_Packages.lz4``, read
   with ``unlz4``): short, varied, about every domain software touches; one to eight of them are
   joined per calibration text, so lengths range from a few tokens to a paragraph;
3. otherwise, paragraphs of the licence files of the installed Python packages (present wherever
   pip is).

``bench quality`` evaluates on Python docstrings, a different kind of text, so nothing calibrated
on is evaluated on. The texts are drawn with a fixed seed: the same machine gives the same
calibration set, and the recipe file written beside an int8 model says which source was used.
"""

from __future__ import annotations

import glob
import random
import subprocess
import sysconfig
from pathlib import Path

APT_PACKAGES = "/var/lib/apt/lists/*_Packages.lz4"
DEFAULT_COUNT = 256
DEFAULT_SEED = 20
#: A calibration text joins this many (at most) package descriptions.
MAX_JOINED = 8


def _fold(text: str) -> str:
    return " ".join(text.split())


def debian_descriptions(pattern: str | None = None) -> list[str]:
    """Every package description in the apt lists (``pattern``, default :data:`APT_PACKAGES`; its
    lines folded into one), in file order, deduplicated; [] when there are none (not a Debian-based
    machine, or no ``unlz4``)."""
    texts: dict[str, None] = {}
    for path in sorted(glob.glob(pattern or APT_PACKAGES)):
        try:
            raw = subprocess.run(["unlz4", "-c", path], capture_output=True, check=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        current: list[str] | None = None
        for line in [*raw.decode("utf-8", "replace").splitlines(), ""]:
            if line.startswith("Description:"):
                current = [line[len("Description:") :].strip()]
            elif current is not None and line.startswith(" "):
                current.append("" if line.strip() == "." else line.strip())
            elif current is not None:
                text = _fold(" ".join(current))
                if text:
                    texts.setdefault(text, None)
                current = None
    return list(texts)


def licence_paragraphs() -> list[str]:
    """Paragraphs (40+ characters) of the licence files of the installed Python packages, sorted."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(site.glob("*.dist-info/licenses/**/*")) + sorted(site.glob("*.dist-info/LICEN[CS]E*"))
    paragraphs: set[str] = set()
    for path in files:
        if path.is_file() and path.stat().st_size < 200_000:
            text = path.read_text(encoding="utf-8", errors="replace")
            paragraphs.update(p for p in map(_fold, text.split("\n\n")) if len(p) >= 40)
    return sorted(paragraphs)


def calibration_texts(
    source: str | Path | None = None, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED
) -> tuple[list[str], str]:
    """``count`` calibration texts and a description of where they came from (see the module doc).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no calibration text could be found.
    """
    rng = random.Random(seed)
    if source is not None:
        lines = [_fold(line) for line in Path(source).read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise ValueError(f"{source} holds no text to calibrate on")
        picked = rng.sample(lines, min(count, len(lines)))
        return picked, f"{Path(source).name} ({len(picked)} of {len(lines)} lines, seed {seed})"
    descriptions = debian_descriptions()
    if descriptions:
        texts = [" ".join(rng.sample(descriptions, rng.randint(1, MAX_JOINED))) for _ in range(count)]
        return texts, (
            f"Debian package descriptions ({count} texts of 1-{MAX_JOINED} joined descriptions, "
            f"from {len(descriptions)}, seed {seed})"
        )
    paragraphs = licence_paragraphs()
    if not paragraphs:
        raise ValueError("no calibration text found on this machine: pass a text file (--calibration FILE)")
    picked = rng.sample(paragraphs, min(count, len(paragraphs)))
    return picked, f"licence files of the installed Python packages ({len(picked)} paragraphs, seed {seed})"
