"""Each model family on its real architecture: exported, then compared with sentence-transformers.

The models (tests/families.py) are built once per session at tiny random sizes: BERT + WordPiece +
CLS (BGE), XLM-RoBERTa + Unigram + mean + query/passage prompts in the older config format (E5),
RoBERTa without token_type_ids (GTE-like), Qwen3 + byte-level BPE + last token + left padding +
instruction prompt (Qwen3-Embedding), and BERT + mean with include_prompt false (INSTRUCTOR-like).
About 30 s on 2 shared cores: each export is a second or two at this size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from families import FAMILIES, MIXED_TEXTS, Family, build_family

from fastembed_native.cli import main as cli_main
from fastembed_native.engine import Embedder
from fastembed_native.models import export_model
from fastembed_native.models.export import EXTERNAL_DATA_FILE, FP16_MIN_COSINE
from fastembed_native.models.inspect import inspect_model
from fastembed_native.models.parity import cosine_rows
from fastembed_native.models.registry import DEFAULT_MODEL, model_info, registry_mismatches

pytest.importorskip("sentence_transformers")
pytest.importorskip("optimum.exporters.onnx")

MIN_COSINE = 0.9999
BY_NAME = {f.name: f for f in FAMILIES}


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (sentence-transformers checkpoint, exported model directory), built once."""
    root = tmp_path_factory.mktemp("families")
    built = {}
    for family in FAMILIES:
        source = build_family(family, root)
        # Fusing is proven on one family (BGE); the others skip it to keep the session short.
        exported = export_model(source, root / f"{family.name}-onnx", fuse=family.name == "bge")
        assert exported.min_cosine >= MIN_COSINE
        built[family.name] = (source, exported.model_dir)
    return built


@pytest.fixture(scope="session")
def st_models(family_models):
    from sentence_transformers import SentenceTransformer

    return {
        name: SentenceTransformer(str(source), device="cpu") for name, (source, _) in family_models.items()
    }


def _cases(family: Family) -> list[tuple[str, str | None]]:
    return [(family.name, None)] + [(family.name, prompt) for prompt in family.prompts]


@pytest.mark.parametrize(
    ("name", "prompt_name"),
    [case for family in FAMILIES for case in _cases(family)],
    ids=lambda v: str(v),
)
def test_family_matches_sentence_transformers(family_models, st_models, name, prompt_name):
    """Mixed corpus (truncated long texts, scripts, emoji, empty strings), prompts included."""
    family = BY_NAME[name]
    prompt = family.prompts.get(prompt_name, "") if prompt_name else ""
    reference = st_models[name].encode(list(MIXED_TEXTS), prompt_name=prompt_name, batch_size=4)
    model = Embedder(family_models[name][1], threads=1)
    for batch_size in (4, 32):  # several padded batches, and one batch of mixed lengths
        ours = model.embed(list(MIXED_TEXTS), batch_size, prompt=prompt)
        cosines = cosine_rows(ours, reference)
        assert cosines.min() >= MIN_COSINE, (batch_size, int(cosines.argmin()), float(cosines.min()))


def test_each_family_is_read_as_its_kind(family_models):
    facts = {}
    for name, (_, model_dir) in family_models.items():
        model = Embedder(model_dir)
        facts[name] = (
            model.pooling,
            model.config.padding_side,
            model.config.include_prompt,
            model.config.modules.pooling_format,
            sorted(model._session.input_roles.values()),
        )
    typed = ["attention_mask", "input_ids", "token_type_ids"]
    untyped = ["attention_mask", "input_ids"]
    assert facts == {
        "bge": ("cls", "right", True, "pooling_mode", typed),
        "e5": ("mean", "right", True, "pooling_mode_* booleans", untyped),  # XLM-R exports without them
        "gte": ("mean", "right", True, "pooling_mode", untyped),
        "qwen3": (
            "last_token",
            "left",
            True,
            "pooling_mode",
            ["attention_mask", "input_ids", "position_ids"],
        ),
        "instructor": ("mean", "right", False, "pooling_mode", typed),
    }
    assert (family_models["bge"][1] / "onnx" / "model_fused.onnx").is_file()


def test_include_prompt_false_is_what_makes_the_instructor_family_match(family_models, st_models):
    """Pooling over the prompt too (include_prompt forced on) moves the vectors off the reference."""
    family = BY_NAME["instructor"]
    prompt = family.prompts["query"]
    reference = st_models["instructor"].encode(list(MIXED_TEXTS), prompt_name="query")
    wrong = Embedder(family_models["instructor"][1], include_prompt=True).embed(
        list(MIXED_TEXTS), prompt=prompt
    )
    assert cosine_rows(wrong, reference).min() < 0.999


def test_external_data_end_to_end_through_the_cli(family_models, st_models, tmp_path, capsys):
    """Forced on a small model: export writes onnx/model.onnx_data, loading finds it, inspect shows it."""
    source = family_models["gte"][0]
    out = tmp_path / "gte-external"
    assert cli_main(["export", str(source), str(out), "--external-data", "--no-fuse"]) == 0
    assert "parity min cosine" in capsys.readouterr().out
    data = out / "onnx" / EXTERNAL_DATA_FILE
    graph = onnx.load(str(out / "onnx" / "model.onnx"), load_external_data=False).graph
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and len(external) == len(graph.initializer)
    assert data.stat().st_size > (out / "onnx" / "model.onnx").stat().st_size
    ours = Embedder(out).embed(list(MIXED_TEXTS))
    reference = st_models["gte"].encode(list(MIXED_TEXTS))
    assert cosine_rows(ours, reference).min() >= MIN_COSINE
    report = inspect_model(out)
    assert report["external_data"][0].startswith(f"{EXTERNAL_DATA_FILE} (")


def test_fp16_export(family_models, st_models, tmp_path):
    """Half-precision weights and arithmetic, float32 outputs; parity at FP16_MIN_COSINE (see export.py)."""
    source = family_models["bge"][0]
    report = export_model(source, tmp_path / "bge-fp16", dtype="fp16")
    graph = onnx.load(str(report.model_dir / "onnx" / "model.onnx")).graph
    kinds = {t.data_type for t in graph.initializer if len(t.dims) >= 2}  # the weight matrices
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert not (report.model_dir / "onnx" / "model_fused.onnx").exists()
    assert report.min_cosine >= FP16_MIN_COSINE
    ours = Embedder(report.model_dir).embed(list(MIXED_TEXTS))
    assert ours.dtype == np.float32
    assert cosine_rows(ours, st_models["bge"].encode(list(MIXED_TEXTS))).min() >= FP16_MIN_COSINE
    with pytest.raises(ValueError, match="dtype must be one of fp32, fp16, int8, got 'int4'"):
        export_model(source, tmp_path / "nope", dtype="int4")


def test_inspect_reports_what_it_read_and_what_it_cannot_honour(family_models, tmp_path):
    report = inspect_model(family_models["e5"][1])
    assert report["pooling_format"] == "pooling_mode_* booleans"
    assert report["modules"] == ["Transformer", "Pooling", "Normalize"]
    assert {k: v for k, v in report["prompts"].items() if v} == {"query": "query: ", "passage": "passage: "}
    assert (report["include_prompt"], report["unsupported"]) == (True, [])
    assert inspect_model(family_models["instructor"][1])["include_prompt"] is False

    broken = tmp_path / "with-dense"
    import shutil

    shutil.copytree(family_models["bge"][1], broken)
    modules = json.loads((broken / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (broken / "modules.json").write_text(json.dumps(modules))
    report = inspect_model(broken)
    assert any("Dense module after pooling" in line for line in report["unsupported"])
    assert any("cannot be embedded with as it is" in line for line in report["warnings"])
    with pytest.raises(ValueError, match="Dense module after pooling"):
        Embedder(broken)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("BAAI/bge-small-en-v1.5", "bge"),
        ("intfloat/e5-small-v2", "e5"),
        ("Qwen/Qwen3-Embedding-0.6B", "qwen3"),
    ],
    ids=["bge", "e5", "qwen3"],
)
def test_registry_family_facts_match_a_directory_of_that_family(family_models, tmp_path, model, family):
    """The tiny models differ from the published ones only in size; every other registry fact
    (pooling, normalisation, padding side, prompts, Matryoshka) must match the family's directory."""
    import shutil

    model_dir = tmp_path / family
    shutil.copytree(family_models[family][1], model_dir)
    info = model_info(model)
    assert info is not None
    if info.matryoshka:  # as Qwen3-Embedding's model card says it
        (model_dir / "README.md").write_text("MRL Support: custom dimensions from 32 to 1024\n")
    mismatches = registry_mismatches(info, model_dir)
    assert {m.split(" has ", 1)[1].split("=", 1)[0] for m in mismatches} == {"dim", "max_length"}, mismatches


@pytest.mark.real_model
def test_registry_matches_the_default_model_directory(minilm_dir):
    info = model_info(DEFAULT_MODEL)
    assert info is not None
    assert registry_mismatches(info, minilm_dir) == []
