"""What ``--resume`` needs: a small state file beside the partial output (``<out>.partial.json``).

It is rewritten atomically after each committed window, so it never runs ahead of the data: it
records the rows committed, the writer's state at that point (e.g. the byte length to cut the
partial file back to) and a *fingerprint* of the run (the inputs' paths, sizes and modification
times, and every option that changes the output). A rerun with ``--resume`` continues only when
the fingerprint is unchanged, so the finished file equals the one an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .inputs import CorpusError

STATE_VERSION = 1


def state_path(output: str | os.PathLike[str]) -> Path:
    """The state file of an output's partial run."""
    return Path(f"{os.fspath(output)}.partial.json")


def load_state(output: str) -> dict[str, Any] | None:
    """The saved state of ``output``'s partial run, or None when there is none."""
    path = state_path(output)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorpusError(f"cannot read {path} ({exc}); pass --overwrite to start over") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CorpusError(f"{path} was written by another version of fastembed-native; pass --overwrite")
    return state


def save_state(output: str, state: dict[str, Any]) -> None:
    """Replace the state file in one step (write a temporary file, fsync it, rename it)."""
    path = state_path(output)
    staging = path.with_name(path.name + ".tmp")
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump({"version": STATE_VERSION, **state}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def clear_state(output: str) -> None:
    state_path(output).unlink(missing_ok=True)


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, one phrase per change ("batch_size: 32 -> 64")."""
    changes = []
    saved_inputs, current_inputs = saved.get("inputs", []), current.get("inputs", [])
    if [i["path"] for i in saved_inputs] != [i["path"] for i in current_inputs]:
        changes.append(
            f"inputs: {[i['path'] for i in saved_inputs]} -> {[i['path'] for i in current_inputs]}"
        )
    else:
        for old, new in zip(saved_inputs, current_inputs, strict=True):
            for key in ("kind", "key", "size", "mtime_ns"):
                if old.get(key) != new.get(key):
                    what = "modified" if key == "mtime_ns" else f"{key} {old.get(key)} -> {new.get(key)}"
                    changes.append(f"input {new['path']} changed ({what})")
                    break
    for key in sorted((set(saved) | set(current)) - {"inputs"}):
        if saved.get(key) != current.get(key):
            changes.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    return changes
