"""The per-token int8 ops of the rowwise graphs, as ONNX model-local functions with C++ kernels.

``quantize_rowwise`` (quantize.py) quantizes each row of a MatMul's float input with its own scale.
Written in standard ONNX that is about fifteen small nodes per input, and then MatMulIntegerToFloat
scales its product in a second pass and two Adds follow (bias, residual stream); a single query
spends more time dispatching nodes than the int8 products save. So the graph calls four ops of the
domain ``fastembed_native``:

* ``RowQuantize(x) -> (xq, row_scale)``: each row's scale and uint8 bytes.
* ``RowQuantizeSplit(x, inlier_mask, outlier_idx) -> (xq, row_scale, x_outliers)``: the same on
  ``x * inlier_mask``, and ``x_outliers`` = x's outlier channels and a column of ones, for the
  float32 product that carries those channels and the bias.
* ``RowDequantize(acc, row_scale, col_scale, addend) -> y``: MatMulInteger's int32 product back to
  floats, ``acc * row_scale * col_scale + addend`` (the bias, or the outlier product with the bias).
* ``RowDequantizeResidual(acc, row_scale, col_scale, addend, residual) -> y``: the same ``+ residual``
  (the residual stream of a post-LayerNorm transformer), so LayerNormalization reads it directly.

Each is a model-local function whose body is the standard nodes (below), so any ONNX Runtime loads
the file and runs the bodies. fastembed_native's sessions register a C++ kernel under each name
(``cpp/row_quantize.cpp``); ONNX Runtime runs a node some provider has a kernel for instead of
inlining its body, so our engine does one pass where another runtime runs the nodes. Both compute
the same floats and bytes: ``tests/test_row_quantize.py`` runs them both ways.

Attributes of the quantize ops (the row's scale is ``max(max x, symmetric ? -min x : 0, floor) *
inv_range``; a value is ``clamp(round_half_even(x / scale) + zero_point, 0, 255)``):

* ``zero_point`` (int): 128 for symmetric int8 in the uint8 form VNNI multiplies; 16 for GELU rows.
* ``inv_range`` (float): 1 / 127, or 1 / (255 - zero_point) for one-sided rows.
* ``floor`` (float): the smallest range, so that a zero row divides by a positive scale.
* ``symmetric`` (int): 1 to take ``-min`` into the range, 0 for rows that are never much below zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DOMAIN = "fastembed_native"
VERSION = 1
QUANTIZE = "RowQuantize"
QUANTIZE_SPLIT = "RowQuantizeSplit"
DEQUANTIZE = "RowDequantize"
DEQUANTIZE_RESIDUAL = "RowDequantizeResidual"
OPS = (QUANTIZE, QUANTIZE_SPLIT, DEQUANTIZE, DEQUANTIZE_RESIDUAL)
ATTRIBUTES = ("zero_point", "inv_range", "floor", "symmetric")


def _ref(node: Any, name: str, attribute: str, kind: int) -> Any:
    """``node`` with attribute ``name`` bound to the function's attribute ``attribute``."""
    import onnx

    ref = onnx.AttributeProto(name=name, ref_attr_name=attribute, type=kind)
    node.attribute.append(ref)
    return node


def _body(opset: int, x: str, prefix: list[Any]) -> list[Any]:
    """The nodes from a float input ``x`` [..., K] to the outputs ``xq`` and ``row_scale``."""
    import onnx
    from onnx import TensorProto, helper

    def const(out: str, values: list[int]) -> Any:
        return helper.make_node(
            "Constant", [], [out], value=helper.make_tensor(out, TensorProto.INT64, [len(values)], values)
        )

    def reduce(op: str, out: str) -> Any:
        if opset >= 18:  # axes: an attribute before opset 18, an input from it
            return helper.make_node(op, ["rows", "axis1"], [out], keepdims=0)
        return helper.make_node(op, ["rows"], [out], axes=[1], keepdims=0)

    attr = onnx.AttributeProto
    return [
        *prefix,
        const("start0", [0]),
        const("minus1", [-1]),
        const("end", [2**62]),
        const("one", [1]),
        const("axis1", [1]),
        helper.make_node("Shape", [x], ["shape"]),
        helper.make_node("Slice", ["shape", "start0", "minus1"], ["lead"]),
        helper.make_node("Slice", ["shape", "minus1", "end"], ["k"]),
        helper.make_node("Concat", ["minus1", "k"], ["rows_shape"], axis=0),
        helper.make_node("Reshape", [x, "rows_shape"], ["rows"]),
        reduce("ReduceMax", "max"),
        reduce("ReduceMin", "min"),
        _ref(helper.make_node("Constant", [], ["symmetric_i"]), "value_int", "symmetric", attr.INT),
        helper.make_node("Cast", ["symmetric_i"], ["symmetric_f"], to=TensorProto.FLOAT),
        helper.make_node("Neg", ["min"], ["neg_min"]),
        helper.make_node("Mul", ["neg_min", "symmetric_f"], ["neg"]),
        _ref(helper.make_node("Constant", [], ["floor_f"]), "value_float", "floor", attr.FLOAT),
        helper.make_node("Max", ["max", "neg", "floor_f"], ["absmax"]),
        _ref(helper.make_node("Constant", [], ["inv_range_f"]), "value_float", "inv_range", attr.FLOAT),
        helper.make_node("Mul", ["absmax", "inv_range_f"], ["scale"]),
        _ref(helper.make_node("Constant", [], ["zero_point_i"]), "value_int", "zero_point", attr.INT),
        helper.make_node("Cast", ["zero_point_i"], ["zero_point_u8"], to=TensorProto.UINT8),
        helper.make_node("Shape", ["scale"], ["count"]),
        helper.make_node("Expand", ["zero_point_u8", "count"], ["zero_points"]),
        helper.make_node("QuantizeLinear", ["rows", "scale", "zero_points"], ["rows_q"], axis=0),
        helper.make_node("Reshape", ["rows_q", "shape"], ["xq"]),
        helper.make_node("Concat", ["lead", "one"], ["scale_shape"], axis=0),
        helper.make_node("Reshape", ["scale", "scale_shape"], ["row_scale"]),
    ]


def functions(opset: int) -> list[Any]:
    """The four functions, for a model whose default-domain opset is ``opset``."""
    from onnx import TensorProto, helper, numpy_helper

    imports = [helper.make_opsetid("", opset)]
    plain = helper.make_function(
        DOMAIN, QUANTIZE, ["x"], ["xq", "row_scale"], _body(opset, "x", []), imports, list(ATTRIBUTES)
    )
    split_prefix = [
        helper.make_node("Mul", ["x", "inlier_mask"], ["x_in"]),
        helper.make_node("Gather", ["x", "outlier_idx"], ["x_out"], axis=-1),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node(
            "Constant", [], ["start0_"], value=helper.make_tensor("s", TensorProto.INT64, [1], [0])
        ),
        helper.make_node(
            "Constant", [], ["minus1_"], value=helper.make_tensor("m", TensorProto.INT64, [1], [-1])
        ),
        helper.make_node(
            "Constant", [], ["one_"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1])
        ),
        helper.make_node("Slice", ["x_shape", "start0_", "minus1_"], ["x_lead"]),
        helper.make_node("Concat", ["x_lead", "one_"], ["ones_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["ones_shape"],
            ["ones"],
            value=numpy_helper.from_array(np.array([1.0], np.float32)),
        ),
        helper.make_node("Concat", ["x_out", "ones"], ["x_outliers"], axis=-1),
    ]
    split = helper.make_function(
        DOMAIN,
        QUANTIZE_SPLIT,
        ["x", "inlier_mask", "outlier_idx"],
        ["xq", "row_scale", "x_outliers"],
        _body(opset, "x_in", split_prefix),
        imports,
        list(ATTRIBUTES),
    )
    dequantize_body = [
        helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["acc_f", "row_scale"], ["by_row"]),
        helper.make_node("Mul", ["by_row", "col_scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "addend"], ["y"]),
    ]
    dequantize = helper.make_function(
        DOMAIN, DEQUANTIZE, ["acc", "row_scale", "col_scale", "addend"], ["y"], dequantize_body, imports
    )
    residual_body = [
        *dequantize_body[:-1],
        helper.make_node("Add", ["scaled", "addend"], ["with_addend"]),
        helper.make_node("Add", ["with_addend", "residual"], ["y"]),
    ]
    residual = helper.make_function(
        DOMAIN,
        DEQUANTIZE_RESIDUAL,
        ["acc", "row_scale", "col_scale", "addend", "residual"],
        ["y"],
        residual_body,
        imports,
    )
    return [plain, split, dequantize, residual]


def node(
    inputs: list[str],
    outputs: list[str],
    name: str,
    *,
    zero_point: int,
    inv_range: float,
    floor: float,
    symmetric: bool,
) -> Any:
    """One call: ``RowQuantize`` with one input, ``RowQuantizeSplit`` with (x, inlier_mask, outlier_idx)."""
    from onnx import helper

    op = QUANTIZE if len(inputs) == 1 else QUANTIZE_SPLIT
    return helper.make_node(
        op,
        inputs,
        outputs,
        name=name,
        domain=DOMAIN,
        zero_point=int(zero_point),
        inv_range=float(inv_range),
        floor=float(floor),
        symmetric=int(symmetric),
    )


def dequantize_node(inputs: list[str], outputs: list[str], name: str) -> Any:
    """``RowDequantize(acc, row_scale, col_scale, addend) -> y``, or with a fifth input
    ``RowDequantizeResidual(acc, row_scale, col_scale, addend, residual) -> y``."""
    from onnx import helper

    op = DEQUANTIZE if len(inputs) == 4 else DEQUANTIZE_RESIDUAL
    return helper.make_node(op, inputs, outputs, name=name, domain=DOMAIN)
