"""Model resolution: a local directory, our cache, the Hugging Face hub cache on disk, packaged
weights, a download; one message listing what was tried; no lock files left behind.

Hub caches are built in tmp_path in huggingface_hub's layout
(``models--org--name/refs/main`` naming ``snapshots/<rev>/``) and found through its own lookup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import source_checkout, write_model_dir
from test_bert_builder import TEXTS, write_checkpoint

from fastembed_native import TextEmbedding
from fastembed_native.errors import ModelLoadError
from fastembed_native.models import (
    DEFAULT_MODEL,
    cached_model_dir,
    cosine_rows,
    hub_snapshot,
    inspect_model,
    resolve_model,
)

CLI = [sys.executable, "-m", "fastembed_native.cli"]
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_layout(hub: Path, model_id: str, files_from: Path, *, link: bool = False) -> Path:
    """Put ``files_from``'s files where huggingface_hub keeps ``model_id``; returns the snapshot."""
    repo = hub / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    for path in sorted(files_from.rglob("*")):
        if path.is_file():
            target = snapshot / path.relative_to(files_from)
            target.parent.mkdir(parents=True, exist_ok=True)
            if link:  # as huggingface_hub does: snapshot files are symlinks (to blobs)
                target.symlink_to(path)
            else:
                shutil.copy2(path, target)
    return snapshot


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An empty hub cache and an empty model cache, offline."""
    places = {"hub": tmp_path / "hub", "cache": tmp_path / "cache"}
    places["hub"].mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(places["hub"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FASTEMBED_NATIVE_CACHE", str(places["cache"]))
    return places


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def test_a_local_directory_comes_first(env, tmp_path, monkeypatch):
    tiny = write_model_dir(tmp_path / "acme" / "tiny")
    hub_layout(env["hub"], "acme/tiny", tiny.path)  # same id in the hub cache: not used
    monkeypatch.chdir(tmp_path)
    assert resolve_model("acme/tiny") == Path("acme/tiny")


def test_hub_snapshot_with_onnx_is_used_where_it_lies(env, tmp_path):
    tiny = write_model_dir(tmp_path / "tiny")
    snapshot = hub_layout(env["hub"], "acme/tiny-onnx", tiny.path, link=True)
    assert hub_snapshot("acme/tiny-onnx") == snapshot
    assert resolve_model("acme/tiny-onnx") == snapshot
    vectors = TextEmbedding("acme/tiny-onnx").embed(["hello world"])
    np.testing.assert_allclose(vectors, TextEmbedding(tiny.path).embed(["hello world"]))
    assert leftovers(env["cache"]) == []  # nothing copied


def test_our_cache_comes_before_the_hub_cache(env, tmp_path):
    hub_layout(env["hub"], "acme/tiny", write_model_dir(tmp_path / "a", seed=1).path)
    ours = write_model_dir(cached_model_dir("acme/tiny"), seed=2)
    assert resolve_model("acme/tiny") == ours.path


def test_hub_snapshot_with_only_weights_is_built_into_our_cache(env, tmp_path, capfd):
    checkpoint = write_checkpoint(tmp_path / "checkpoint")
    hub_layout(env["hub"], "acme/tiny-bert", checkpoint)
    resolved = resolve_model("acme/tiny-bert")
    assert resolved == cached_model_dir("acme/tiny-bert") and (resolved / "onnx" / "model.onnx").is_file()
    err = capfd.readouterr().err
    assert f"building acme/tiny-bert into {env['cache']} (one time) ..." in err
    assert f"-> {resolved} (parity vs " in err
    assert leftovers(env["cache"]) == ["acme--tiny-bert"]  # no lock file, no staging folder
    assert resolve_model("acme/tiny-bert") == resolved  # second time: our cache, no build
    assert "building" not in capfd.readouterr().err
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(checkpoint), device="cpu").encode(TEXTS)
    assert cosine_rows(TextEmbedding("acme/tiny-bert").embed(TEXTS), reference).min() >= 0.9999


def test_a_failed_build_leaves_nothing_behind(env, tmp_path):
    from safetensors.numpy import load_file, save_file

    checkpoint = write_checkpoint(tmp_path / "checkpoint")
    weights = load_file(str(checkpoint / "model.safetensors"))
    del weights["encoder.layer.0.attention.self.key.weight"]
    save_file(weights, str(checkpoint / "model.safetensors"))
    hub_layout(env["hub"], "acme/broken", checkpoint)
    with pytest.raises(ModelLoadError) as error:
        resolve_model("acme/broken")
    message = str(error.value)
    assert "has no ONNX files and building it failed" in message
    assert "attention.self.key.weight is missing" in message
    assert leftovers(env["cache"]) == []  # no .lock, no staging, no half-built entry


def test_one_message_lists_what_was_tried_and_a_path_comes_first(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as error:
        resolve_model("models/minilm")
    lines = str(error.value).splitlines()
    assert lines[0] == "model 'models/minilm' not found. Tried, in order:"
    assert lines[1] == f"  - a local directory: no such directory: {tmp_path / 'models' / 'minilm'}"
    assert lines[2] == f"  - our cache: no {env['cache'] / 'models--minilm'}"
    assert lines[3] == f"  - the Hugging Face hub cache ({env['hub']}): no snapshot of models/minilm"
    assert "cannot download 'models/minilm': HF_HUB_OFFLINE is set" in lines[4]
    assert len(lines) == 5
    assert leftovers(env["cache"]) == []


@pytest.mark.parametrize("path", ["./models/minilm", "models/minilm/v2", "/nonexistent/model"])
def test_a_path_that_is_not_an_id_is_only_a_missing_directory(env, path):
    with pytest.raises(FileNotFoundError, match="^no such directory: "):
        resolve_model(path)
    with pytest.raises(FileNotFoundError, match="^no such directory: "):
        resolve_model(Path("models/minilm"))  # a Path is never an id


def test_a_file_is_not_a_model_directory(env, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file, not a model directory"):
        resolve_model(tmp_path / "model.onnx")


def run_cli(*args: str, env_vars: dict[str, Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input="hello world\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(env_vars["hub"]),
            "FASTEMBED_NATIVE_CACHE": str(env_vars["cache"]),
        },
    )


def test_cli_mistyped_path_says_no_such_directory_before_the_hub(env, tmp_path):
    for command in (["embed", "--model", "models/minilm"], ["inspect", "models/minilm"]):
        result = run_cli(*command, env_vars=env, cwd=tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert 0 <= result.stderr.index("no such directory") < result.stderr.index("Hugging Face hub"), (
            result.stderr
        )


def test_inspect_takes_what_embed_takes(env, tmp_path):
    tiny = write_model_dir(tmp_path / "tiny")
    hub_layout(env["hub"], "acme/tiny-onnx", tiny.path)
    by_id = run_cli("inspect", "acme/tiny-onnx", "--json", env_vars=env, cwd=tmp_path)
    assert by_id.returncode == 0, by_id.stderr
    assert "models--acme--tiny-onnx" in by_id.stdout and '"pooling": "mean"' in by_id.stdout
    assert inspect_model(tiny.path / "onnx" / "model.onnx")["hidden_size"] == 7  # a bare .onnx file too


@pytest.mark.timeout(60)
def test_the_build_lock_excludes_and_leaves_no_file(tmp_path):
    """Many holders in turn (flock excludes open files, so threads contend like processes): no two
    critical sections overlap although each holder removes the lock file, and none is left."""
    import threading
    import time

    from fastembed_native.models.cache import _build_lock

    target = tmp_path / "org--model"
    inside: list[int] = []
    overlaps: list[tuple[int, ...]] = []
    guard = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(15):
            with _build_lock(target):
                with guard:
                    inside.append(n)
                    if len(inside) > 1:
                        overlaps.append(tuple(inside))
                time.sleep(0.001)
                with guard:
                    inside.remove(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert list(tmp_path.iterdir()) == []


#: What huggingface_hub says about a repository that does not exist (its paragraph, abridged).
HUB_NOT_FOUND = (
    "404 Client Error. (Request ID: Root=1-0000)\n\nRepository Not Found for url: "
    "https://huggingface.co/api/models/{repo_id}.\nPlease make sure you specified the correct `repo_id` "
    "and `repo_type`.\nIf you are trying to access a private or gated repo, make sure you are authenticated."
)


class FakeHub:
    """huggingface_hub's snapshot_download and model_info over a local folder standing in for a hub
    repository; ``remote=None``: a repository that does not exist."""

    def __init__(self, remote: Path | None) -> None:
        self.remote = remote
        self.calls: list[list[str]] = []

    def _files(self, repo_id: str) -> list[Path]:
        from huggingface_hub.errors import RepositoryNotFoundError

        if self.remote is None:
            raise RepositoryNotFoundError(HUB_NOT_FOUND.format(repo_id=repo_id))
        return [p.relative_to(self.remote) for p in sorted(self.remote.rglob("*")) if p.is_file()]

    def model_info(self, repo_id, **_):
        from types import SimpleNamespace

        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=str(p)) for p in self._files(repo_id)])

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "snapshot_download", self)
        monkeypatch.setattr(huggingface_hub, "model_info", self.model_info)
        return self

    def __call__(
        self, repo_id, *, local_files_only=False, local_dir=None, cache_dir=None, allow_patterns=(), **_
    ):
        from fnmatch import fnmatch

        from huggingface_hub.errors import LocalEntryNotFoundError

        if local_files_only:
            raise LocalEntryNotFoundError(f"{repo_id} is not in the cache")
        self._files(repo_id)
        self.calls.append(list(allow_patterns))
        files = [
            p.relative_to(self.remote)
            for p in sorted(self.remote.rglob("*"))
            if p.is_file() and any(fnmatch(str(p.relative_to(self.remote)), pat) for pat in allow_patterns)
        ]
        if local_dir is not None:
            destination = Path(local_dir)
        else:
            destination = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / REVISION
        for name in files:
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.remote / name, destination / name)
        return str(destination)


def test_download_takes_the_repositorys_onnx_files(env, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub = FakeHub(write_model_dir(tmp_path / "remote").path).install(monkeypatch)
    resolved = resolve_model("acme/tiny-remote")
    assert resolved == cached_model_dir("acme/tiny-remote") and (resolved / "onnx" / "model.onnx").is_file()
    assert len(hub.calls) == 1 and "onnx/model.onnx" in hub.calls[0]  # ONNX only: no weights fetched
    assert leftovers(env["cache"]) == ["acme--tiny-remote"]


def test_download_builds_a_repository_that_has_only_weights(env, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    checkpoint = write_checkpoint(tmp_path / "remote")
    hub = FakeHub(checkpoint).install(monkeypatch)
    resolved = resolve_model("acme/weights-only")
    assert resolved == cached_model_dir("acme/weights-only") and (resolved / "onnx" / "model.onnx").is_file()
    assert len(hub.calls) == 1 and "*.safetensors" in hub.calls[0]  # no ONNX download tried: it has none
    err = capfd.readouterr().err
    assert "has no ONNX files on the hub; downloading its weights" in err and "ONNX files into" not in err
    assert leftovers(env["cache"]) == ["acme--weights-only"]
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(checkpoint), device="cpu").encode(TEXTS)
    assert cosine_rows(TextEmbedding(resolved).embed(TEXTS), reference).min() >= 0.9999


def test_a_model_the_hub_does_not_have_is_one_message_in_our_words(env, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub = FakeHub(None).install(monkeypatch)
    with pytest.raises(ModelLoadError) as error:
        resolve_model("acme/no-such-model")
    assert capfd.readouterr().err == ""  # no "downloading ... (one time)" for a model that is not there
    message = str(error.value)
    assert message.splitlines()[-1] == (
        "  - the Hugging Face hub: there is no model 'acme/no-such-model' on the Hugging Face hub "
        "(check the name; a private model needs hf auth login)"
    )
    assert "Repository Not Found" not in message and "Request ID" not in message
    assert hub.calls == [] and leftovers(env["cache"]) == []


def test_a_repository_with_nothing_to_embed_with_is_said_so(env, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "README.md").write_text("just a card")
    hub = FakeHub(remote).install(monkeypatch)
    with pytest.raises(ModelLoadError, match="has neither onnx/model.onnx nor safetensors weights"):
        resolve_model("acme/card-only")
    assert capfd.readouterr().err == "" and hub.calls == [] and leftovers(env["cache"]) == []


# -- the real model -------------------------------------------------------------------------------
@pytest.mark.real_model
def test_minilm_from_a_hub_cache_is_built_once_offline(env, tmp_path, sentence_transformer):
    """A sentence-transformers user's hub cache (safetensors, no ONNX) is found by id and built."""
    hub_layout(env["hub"], DEFAULT_MODEL, source_checkout(), link=True)
    result = run_cli("embed", "-o", str(tmp_path / "v.npy"), env_vars=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "building all-MiniLM-L6-v2 into" not in result.stderr  # the hub id, not the packaged build
    assert f"building {DEFAULT_MODEL} into {env['cache']} (one time) ..." in result.stderr
    assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr
    expected = sentence_transformer.encode(["hello world"])
    assert cosine_rows(np.load(tmp_path / "v.npy"), expected).min() >= 0.9999
    assert leftovers(env["cache"]) == ["sentence-transformers--all-MiniLM-L6-v2"]
    inspected = run_cli("inspect", DEFAULT_MODEL, env_vars=env, cwd=tmp_path)
    assert inspected.returncode == 0 and "building" not in inspected.stderr, inspected.stderr
    assert "layers: 6" in inspected.stdout
