"""Every code block of README.md runs as written (issue 16): a reader who pastes one gets what it says.

Each ``## `` section's blocks run in order in one scratch folder, as a reader would run them:

- ``python`` blocks with the interpreter running the tests;
- ``bash`` blocks line by line with bash (``set -e -o pipefail``). A line that starts the server
  (``fastembed-native serve ...``) runs in the background until the section ends, and the section goes
  on once its ports answer. Installing is the one thing not run, since it needs the network: the
  segments of a line that make a venv, activate it or ``pip install`` are checked instead (every
  ``.[extra]`` exists in pyproject.toml) and the rest of the line runs in the test's own environment.

The environment is the test suite's: the model cache it built the default model into, offline.
The README's test command itself is not run again from inside the tests: it must be the command
``.ci/run`` runs. Blocks without a language (diagrams) are not code. The contributors' section runs
in the checkout (its commands check this source tree), and so does the hybrid search one (it runs
``examples/hybrid_search.py`` from the checkout, writing nothing there); every other section runs in a
folder of its own.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")
_SETUP = re.compile(r"^(python3? -m venv \S+|\. \S+/bin/activate|source \S+/bin/activate|pip install .*)$")
_EXTRA = re.compile(r"'\.\[([\w,-]+)\]'")
BLOCK_TIMEOUT = 420  # seconds for one block; the Ray ones start a cluster
CHECKOUT_SECTIONS = {"Building from source", "Hybrid search"}


@dataclass
class Block:
    section: str
    language: str
    code: str
    line: int


def readme_blocks() -> list[Block]:
    blocks, section, fence, start, lines = [], "", None, 0, []
    for number, text in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            if text.startswith("## "):
                section = text[3:].strip()
            match = _FENCE.match(text)
            if match:
                fence, start, lines = match.group(1), number + 1, []
        elif text.strip() == "```":
            blocks.append(Block(section, fence, "\n".join(lines), start))
            fence = None
        else:
            lines.append(text)
    assert fence is None, f"README.md: the code block at line {start} is never closed"
    return blocks


RUNNABLE = [b for b in readme_blocks() if b.language in ("python", "bash")]
SECTIONS = list(dict.fromkeys(b.section for b in RUNNABLE))
assert set(SECTIONS) >= CHECKOUT_SECTIONS, f"README.md lost a section this test knows: {CHECKOUT_SECTIONS}"


def test_every_code_block_is_runnable_or_a_diagram():
    languages = {b.language for b in readme_blocks()}
    assert languages <= {"python", "bash", ""}, f"README.md has code blocks this test cannot run: {languages}"
    assert len(RUNNABLE) >= 10  # the parser found the README's blocks


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def test_install_lines_name_real_extras_of_this_checkout():
    text = README.read_text(encoding="utf-8")
    named = {extra for group in _EXTRA.findall(text) for extra in group.split(",")}
    assert named, "README.md names no extras: the parser is broken"
    assert named <= _extras(), f"README.md installs extras pyproject.toml lacks: {named - _extras()}"
    for number, line in enumerate(text.splitlines(), 1):
        # fastembed-native[...] is the PyPI form: only where the text says it is for a published release.
        if "fastembed-native[" in line:
            assert "published" in line, (
                f"README.md:{number} uses the PyPI form outside a release note: {line}"
            )


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        _install_and_test(line)
        for block in RUNNABLE
        for line in _logical_lines(block.code)
        if _without_setup(line).startswith("python -m pytest")
    ]
    assert commands, "README.md has no test command"
    for command in commands:
        assert command in ci, f".ci/run does not run the README's test command {command!r}"


def _install_and_test(line: str) -> str:
    """The line less making and activating a venv (CI makes its own): what CI must run."""
    return " && ".join(s.strip() for s in line.split(" && ") if "venv" not in s and "/bin/activate" not in s)


def _logical_lines(code: str) -> list[str]:
    out, pending = [], ""
    for line in code.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return [line for line in out if line.strip() and not line.lstrip().startswith("#")]


def _without_setup(line: str) -> str:
    """The line less its venv / activate / pip install segments (checked, not run)."""
    kept = []
    for segment in (s.strip() for s in line.split(" && ")):
        if _SETUP.match(segment):
            for group in _EXTRA.findall(segment):
                assert set(group.split(",")) <= _extras(), f"unknown extra in {segment!r}"
        else:
            kept.append(segment)
    return " && ".join(kept)


def _ports(command: str) -> list[int]:
    words = shlex.split(command, comments=True)
    ports = [8000]
    for flag, value in itertools.pairwise(words):
        if flag == "--port":
            ports[0] = int(value)
        elif flag == "--grpc-port":
            ports.append(int(value))
    return ports


def _wait_for(ports: list[int], server: subprocess.Popen, deadline: float) -> None:
    for port in ports:
        while True:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, f"the server never answered on port {port}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def reader_env(
    model_cache: Path, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FASTEMBED_NATIVE_CACHE=str(model_cache),  # where the suite built the default model
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        # Ray: no usage report, ports on loopback only, its sockets under a short folder of its own.
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_TMPDIR=str(tmp_path_factory.mktemp("ray")),
    )
    return env


@pytest.mark.real_model
@pytest.mark.parametrize("section", SECTIONS)
def test_readme_section_runs_as_written(section: str, reader_env: dict[str, str], tmp_path: Path):
    servers: list[subprocess.Popen] = []
    cwd = ROOT if section in CHECKOUT_SECTIONS else tmp_path
    try:
        for block in (b for b in RUNNABLE if b.section == section):
            where = f"README.md:{block.line} ({block.language} block in '{section}')"
            if block.language == "python":
                _run([sys.executable, "-c", block.code], where, reader_env, cwd)
                continue
            for line in _logical_lines(block.code):
                command = _without_setup(line)
                if not command or command.startswith("python -m pytest"):
                    continue  # installs need the network; the test command is CI's (test above)
                if command.startswith("fastembed-native serve"):
                    server = subprocess.Popen(
                        ["bash", "-c", f"exec {command}"], cwd=cwd, env=reader_env, start_new_session=True
                    )
                    servers.append(server)
                    _wait_for(_ports(command), server, time.monotonic() + 120)
                else:
                    _run(
                        ["bash", "-c", f"set -e -o pipefail\n{command}"], f"{where}: {line}", reader_env, cwd
                    )
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


def _run(argv: list[str], where: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    assert done.returncode == 0, (
        f"{where} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
