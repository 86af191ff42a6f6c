"""The int8 row ops (models/row_quantize.py, cpp/row_quantize.cpp): our C++ kernels against the
standard-ONNX function bodies that any ONNX Runtime runs, and both against the formula.

A small graph feeds each op from a lookup table (rows of every kind: random, all zero, below zero
only, with outlier channels, on rounding ties) and exposes every op output; fastembed_native's
Session runs it with the kernels, onnxruntime's own InferenceSession inlines the bodies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fastembed_native import _core
from fastembed_native.engine import runtime
from fastembed_native.errors import OrtError
from fastembed_native.models import row_quantize

K, N, VOCAB, OUTLIERS = 37, 21, 12, [3, 30]  # K and N not multiples of 16: the masked tails run
SYMMETRIC = {"zero_point": 128, "inv_range": np.float32(1 / 127), "floor": 1e-8, "symmetric": True}
ONE_SIDED = {"zero_point": 16, "inv_range": np.float32(1 / 239), "floor": 2.539375, "symmetric": False}


def _table(rng: np.random.Generator) -> np.ndarray:
    table = (rng.standard_normal((VOCAB, K)) * 2).astype(np.float32)
    table[1] = 0.0  # a zero row: the floor keeps its scale positive
    table[2] = -np.abs(table[2])  # below zero only
    table[3, OUTLIERS] = [40.0, -55.0]  # outlier channels, far above the rest
    table[4] = np.float32(0.5) * (np.arange(K) % 9 - 4) + np.float32(0.25)  # halves of a scale
    table[4, 0] = 63.5
    table[5] = rng.uniform(-0.17, 6.0, K).astype(np.float32)  # a GELU row
    return table


def build(path: Path, *, zero_point: int = 128, outlier: int = OUTLIERS[0]) -> dict[str, np.ndarray]:
    """The test graph at ``path``; returns its constants for the numpy reference."""
    rng = np.random.default_rng(3)
    table = _table(rng)
    weight = rng.integers(-127, 128, (K, N), dtype=np.int8)
    col_scale = (rng.uniform(0.5, 2.0, N) * 1e-3).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    residual_table = rng.standard_normal((VOCAB, N)).astype(np.float32)
    mask = np.ones(K, np.float32)
    mask[OUTLIERS] = 0.0
    outlier_idx = np.array([outlier, OUTLIERS[1]], np.int64)
    consts = {
        "table": table,
        "weight": weight,
        "col_scale": col_scale,
        "bias": bias,
        "residual_table": residual_table,
        "mask": mask,
        "outlier_idx": outlier_idx,
        "zp": np.array(zero_point, np.uint8),
    }
    symmetric = {**SYMMETRIC, "zero_point": zero_point}
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["x"]),
        helper.make_node("Gather", ["residual_table", "input_ids"], ["residual"]),
        row_quantize.node(["x"], ["xq_u8", "row_scale"], "q", **symmetric),
        row_quantize.node(["x"], ["xq_gelu_u8", "row_scale_gelu"], "q_gelu", **ONE_SIDED),
        row_quantize.node(
            ["x", "mask", "outlier_idx"],
            ["xq_split_u8", "row_scale_split", "x_outliers"],
            "q_split",
            **symmetric,
        ),
        helper.make_node("MatMulInteger", ["xq_u8", "weight", "zp"], ["acc"]),
        # Session.run hands back float32 and int64 outputs: the bytes as floats (exact).
        *(
            helper.make_node("Cast", [f"{q}_u8"], [q], to=TensorProto.FLOAT)
            for q in ("xq", "xq_gelu", "xq_split")
        ),
        row_quantize.dequantize_node(["acc", "row_scale", "col_scale", "bias"], ["y"], "dq"),
        row_quantize.dequantize_node(["acc", "row_scale", "col_scale", "residual"], ["y_per_row"], "dq_rows"),
        row_quantize.dequantize_node(
            ["acc", "row_scale", "col_scale", "bias", "residual"], ["last_hidden_state"], "dq_residual"
        ),
    ]
    ids = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask")
    ]
    lead = ["batch", "seq"]
    outputs = [
        helper.make_tensor_value_info(name, kind, [*lead, width])
        for name, kind, width in (
            ("last_hidden_state", TensorProto.FLOAT, N),
            ("xq", TensorProto.FLOAT, K),
            ("row_scale", TensorProto.FLOAT, 1),
            ("xq_gelu", TensorProto.FLOAT, K),
            ("row_scale_gelu", TensorProto.FLOAT, 1),
            ("xq_split", TensorProto.FLOAT, K),
            ("row_scale_split", TensorProto.FLOAT, 1),
            ("x_outliers", TensorProto.FLOAT, len(OUTLIERS) + 1),
            ("y", TensorProto.FLOAT, N),
            ("y_per_row", TensorProto.FLOAT, N),
        )
    ]
    graph = helper.make_graph(
        nodes, "row_ops", ids, outputs, [numpy_helper.from_array(v, k) for k, v in consts.items()]
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", 17),
            helper.make_opsetid(row_quantize.DOMAIN, row_quantize.VERSION),
        ],
        functions=row_quantize.functions(17),
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return consts


OUTPUTS = [
    "xq",
    "row_scale",
    "xq_gelu",
    "row_scale_gelu",
    "xq_split",
    "row_scale_split",
    "x_outliers",
    "y",
    "y_per_row",
    "last_hidden_state",
]
IDS = np.array([[0, 1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 0, 3]], np.int64)


def _ours(path: Path, level: int = 99, **session: object) -> dict[str, np.ndarray]:
    runtime.ensure_loaded()
    model = _core.Session(str(path), graph_optimization_level=level, **session)
    got = model.run(IDS, np.ones_like(IDS), None, OUTPUTS)
    return {name: np.array(value) for name, value in zip(OUTPUTS, got, strict=True)}


def _plain(path: Path, level: int = 99) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if level == 99
        else (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    )
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(OUTPUTS, {"input_ids": IDS, "attention_mask": np.ones_like(IDS)})
    return dict(zip(OUTPUTS, got, strict=True))


def _quantize(x: np.ndarray, p: dict, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rows = x.reshape(-1, K) * (mask if mask is not None else 1)
    neg = -rows.min(axis=1) * np.float32(1.0 if p["symmetric"] else 0.0)
    span = np.maximum(np.maximum(rows.max(axis=1), neg), np.float32(p["floor"]))
    scale = (span * np.float32(p["inv_range"])).astype(np.float32)
    q = np.clip(np.rint(rows / scale[:, None]) + p["zero_point"], 0, 255).astype(np.uint8)
    return q.reshape(x.shape), scale.reshape(*x.shape[:-1], 1)


def test_kernels_compute_what_the_function_bodies_compute(tmp_path):
    path = tmp_path / "row_ops.onnx"
    build(path)
    for level in (1, 99):
        ours, plain = _ours(path, level), _plain(path, level)
        for name in OUTPUTS:
            assert ours[name].dtype == plain[name].dtype and ours[name].shape == plain[name].shape, name
            assert np.array_equal(ours[name], plain[name]), f"{name} differs at optimization level {level}"


def test_kernels_follow_the_formula(tmp_path):
    path = tmp_path / "row_ops.onnx"
    c = build(path)
    got = _ours(path)
    x = c["table"][IDS]
    for (xq, scale), p, mask in (
        (("xq", "row_scale"), SYMMETRIC, None),
        (("xq_gelu", "row_scale_gelu"), ONE_SIDED, None),
        (("xq_split", "row_scale_split"), SYMMETRIC, c["mask"]),
    ):
        want_q, want_scale = _quantize(x, p, mask)
        assert np.array_equal(got[scale], want_scale), scale
        assert np.array_equal(got[xq], want_q.astype(np.float32)), xq
    assert got["row_scale"][0, 1, 0] == np.float32(1e-8) * np.float32(1 / 127)  # the zero row: the floor
    assert (got["xq_gelu"][0, 5] >= 0).all() and got["row_scale_gelu"][0, 5, 0] > 0
    assert (
        np.array_equal(got["x_outliers"][..., :2], x[..., OUTLIERS])
        and (got["x_outliers"][..., 2] == 1).all()
    )
    acc = (got["xq"].astype(np.int32) - 128).reshape(-1, K) @ c["weight"].astype(np.int32)
    scaled = acc.astype(np.float32) * got["row_scale"].reshape(-1, 1) * c["col_scale"]
    assert np.array_equal(got["y"].reshape(-1, N), scaled + c["bias"])
    residual = c["residual_table"][IDS].reshape(-1, N)
    assert np.array_equal(got["y_per_row"].reshape(-1, N), scaled + residual)
    assert np.array_equal(got["last_hidden_state"].reshape(-1, N), (scaled + c["bias"]) + residual)
    # The int8 product is close to the float one (the point of it all): each row within half a step
    # of its scale per term.
    want = x.reshape(-1, K) @ (c["weight"] * c["col_scale"]) + c["bias"]
    bound = 0.5 * got["row_scale"].reshape(-1, 1) * (np.abs(c["weight"]) * c["col_scale"]).sum(axis=0)
    assert (np.abs(got["y"].reshape(-1, N) - want) <= bound * 1.0001 + 1e-5).all()


def test_sessions_run_the_kernels_and_plain_onnxruntime_inlines_the_bodies(tmp_path):
    path = tmp_path / "row_ops.onnx"
    build(path)
    ours = tmp_path / "ours.onnx"
    _ours(path, optimized_model_path=str(ours))
    kept = {n.op_type for n in onnx.load(str(ours)).graph.node}
    assert set(row_quantize.OPS) <= kept  # our kernels ran, not the bodies
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "plain.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inlined = {n.op_type for n in onnx.load(str(tmp_path / "plain.onnx")).graph.node}
    assert not set(row_quantize.OPS) & inlined and "QuantizeLinear" in inlined


def test_bad_attributes_and_inputs_are_named(tmp_path):
    path = tmp_path / "bad_zero_point.onnx"
    build(path, zero_point=128)
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        if node.name == "q":
            next(a for a in node.attribute if a.name == "floor").f = 0.0
    onnx.save_model(proto, str(path))
    with pytest.raises(OrtError, match="floor finite and > 0"):
        _ours(path)
    path = tmp_path / "bad_index.onnx"
    build(path, outlier=K + 4)
    with pytest.raises(OrtError, match=rf"outlier_idx\[0\] = {K + 4} is not a channel of x \(0..{K - 1}\)"):
        _ours(path)
