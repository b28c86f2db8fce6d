"""Issue 16: a constant keeps its rank and dtype from the user's ONNX file to the emulator.

A 0-d Gather index used to become shape [1] in the frontend, so `x.view(x.size(0), -1)` exported by
the TorchScript exporter (Shape -> Gather(0-d) -> Unsqueeze -> Concat -> Reshape) broke both the
onnxruntime baseline and the emulator. Checked here, each time as: compile with the `ideal` target,
run the emulator, compare with onnxruntime on the ORIGINAL file (values, shape and dtype), and the
user's file is byte for byte unchanged:

* torch exports (legacy exporter as in the issue, with and without a dynamic batch; dynamo exporter)
  of the flatten patterns and of scalar-constant arithmetic;
* a CIFAR ResNet with option-A shortcuts flattened as in Idelbayev's resnet.py, through the CLI with
  `--eval` (emulator accuracy == onnxruntime baseline);
* hand-built graphs for each kind of constant the frontend folds: 0-d, empty, int64 / int32 indices,
  bool, float16 / float64 / bfloat16, unsigned, Flatten at axis == rank, and float16 / float64 / int32
  weight layers.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from compiler.pipeline import compile_model
from compiler.targets import load_target
from models.zoo import CifarResNet
from runtime import contract
from runtime.baseline import OrtBaseline
from runtime.executor import Executor, to_torch

IDEAL = load_target("ideal")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ort_run(path: Path, *xs: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs, strict=True)})


def assert_same(got: np.ndarray, ref: np.ndarray, tol: float = 1e-5, what: str = "") -> None:
    """Same dtype and shape (rank included) as onnxruntime, values within tol (relative to the scale)."""
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != onnxruntime's {ref.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != onnxruntime's {ref.shape}"
    if ref.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
    else:
        g, r = got.astype(np.float64), ref.astype(np.float64)
        assert np.abs(g - r).max(initial=0.0) <= tol * max(np.abs(r).max(initial=0.0), 1.0), what


def compile_and_compare(src: Path, tmp_path: Path, inputs: list[np.ndarray], tol: float = 1e-5
                        ) -> onnx.ModelProto:
    """Compile ``src`` (ideal), run the emulator and the baseline rebuilt from the artifact on
    ``inputs``, compare every output with onnxruntime on ``src``; ``src`` must not change."""
    before = sha256(src)
    mapped = compile_model(src, IDEAL, tmp_path / "out" / "m.pcm.onnx").model
    ex = Executor(mapped)
    refs = ort_run(src, *inputs)
    outs = [y.numpy() for y in ex.run(*[torch.from_numpy(x) for x in inputs])]
    assert len(outs) == len(refs)
    for o, y, r in zip(mapped.graph.output, outs, refs, strict=True):
        assert_same(y, r, tol, f"emulator, output {o.name!r}")
    base = OrtBaseline(mapped).session  # the eval baseline: onnxruntime on the rebuilt standard model
    feed = {i.name: x for i, x in zip(base.get_inputs(), inputs, strict=True)}
    for o, y, r in zip(mapped.graph.output, base.run(None, feed), refs, strict=True):
        assert_same(y, r, max(tol, 1e-4), f"baseline rebuilt from the artifact, output {o.name!r}")
    assert sha256(src) == before, "the user's model file changed"
    return mapped


# ---------------------------------------------------------------------------------------------------
# torch exports


def export_legacy(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool = False) -> Path:
    """As in the issue: TorchScript exporter, opset 17, TrainingMode.PRESERVE of an eval-mode model
    (BN kept, no constant folding: the Shape/Gather/Unsqueeze/Concat chains stay in the file)."""
    kw: dict = {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}} if dynamic_batch else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                          output_names=["output"], **kw)
    return path


def export_dynamo(model: nn.Module, x: torch.Tensor, path: Path, optimize: bool = True) -> Path:
    """The dynamo exporter with a dynamic batch: its defaults (optimizer on: BN fused, shapes folded)
    or optimize=False (BN kept, Shape / Expand / CastLike chains left to the frontend)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model.eval(), (x,), dynamo=True, input_names=["input"],
                                 output_names=["output"], verbose=False, optimize=optimize,
                                 dynamic_shapes=({0: torch.export.Dim("batch")},))
    prog.save(str(path))
    return path


def _scalar_arith(y: torch.Tensor) -> torch.Tensor:
    y = (y * 0.5 + 2.0) / y.shape[1]  # float scalars and a Shape -> Gather(0-d) -> Div
    return torch.flatten(y - 1, 1)


FLATTENS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "view": lambda y: y.view(y.size(0), -1),
    "reshape": lambda y: y.reshape(y.shape[0], -1),
    "flatten": lambda y: torch.flatten(y, 1),
    "scalar_arith": _scalar_arith,
}


class SmallNet(nn.Module):
    """conv-BN-ReLU, one of FLATTENS, linear."""

    def __init__(self, flatten: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.flatten = flatten
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(F.relu(self.bn(self.conv(x)))))


EXPORTERS = ["legacy", "legacy_dynamic_batch", "dynamo", "dynamo_unoptimized"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("pattern", list(FLATTENS))
def test_torch_export_patterns_ideal_equals_onnxruntime(pattern, exporter, tmp_path):
    model = SmallNet(FLATTENS[pattern]).eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    src = tmp_path / f"{pattern}.onnx"
    if exporter.startswith("dynamo"):
        export_dynamo(model, x, src, optimize=exporter == "dynamo")
    else:
        export_legacy(model, x, src, dynamic_batch=exporter == "legacy_dynamic_batch")
    batch = 2 if exporter == "legacy" else 3  # a static export takes its own batch only
    xb = torch.randn(batch, 3, 4, 4, generator=torch.Generator().manual_seed(2)).numpy()
    mapped = compile_and_compare(src, tmp_path, [xb])
    ops = {n.op_type for n in mapped.graph.node if n.domain == contract.DOMAIN}
    assert ops == {contract.ANALOG_CONV, contract.ANALOG_MATMUL}
    with torch.no_grad():  # and the export itself is the torch model
        assert_same(ort_run(src, xb)[0], model(torch.from_numpy(xb)).numpy(), 1e-5, "export vs torch")


class IdelbayevResNet(CifarResNet):
    """CIFAR ResNet, option-A shortcuts, with the forward of Idelbayev's pytorch_resnet_cifar10
    resnet.py (the published pretrained CIFAR-10 ResNets): avg_pool2d + out.view(out.size(0), -1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.fc(out)


def test_cifar_resnet_option_a_view_flatten_cli_eval(run_cli, tmp_path):
    from runtime.evaluate import EvalConfig, preprocessing_for

    torch.manual_seed(0)
    model = IdelbayevResNet(depth=8, widths=(4, 8, 16), shortcut="A").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial BN statistics
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32)
    src = export_legacy(model, x, tmp_path / "resnet8a.onnx")
    graph_ops = [n.op_type for n in onnx.load(str(src)).graph.node]
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Pad", "BatchNormalization"} <= set(graph_ops)
    before = sha256(src)

    # the emulator on the compiled model is onnxruntime on the original file
    xs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)).numpy()
    compile_and_compare(src, tmp_path, [xs])

    # the CLI, as the user ran it: compile --target ideal, then --eval on a tiny image set whose labels
    # are onnxruntime's own predictions (so the baseline scores 100 % and the ideal emulator must too)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=images, y=np.zeros(8, np.int64))
    prep = preprocessing_for(onnx.load(str(src)), str(data), EvalConfig(data=str(data)))
    xp = prep.apply(images).astype(np.float32)
    labels = np.concatenate([ort_run(src, xp[i:i + 2])[0].argmax(1) for i in range(0, 8, 2)])
    np.savez(data, x=images, y=labels)
    out, res = tmp_path / "cli" / "r8.pcm.onnx", tmp_path / "cli" / "r8.json"
    code, stdout, stderr = run_cli(src, "--target", "ideal", "-o", out, "--eval", "--data", data,
                                   "--times", "1s", "--chips", "1", "--compensation", "none",
                                   "--batch-size", "2", "--calib", "2", "--quiet", "--json", res)
    assert code == 0, stderr
    result = json.loads(res.read_text())
    assert result["baseline"]["accuracy"] == 1.0
    assert [r["mean"] for r in result["results"]] == [1.0]
    assert sha256(src) == before, "the user's model file changed"


# ---------------------------------------------------------------------------------------------------
# hand-built graphs: X [B, 4] -> MatMul (analog) -> Y [B, 3], then the constant under test


W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value),
                                                                                  f"{name}_value"))


def graph_model(nodes: list[onnx.NodeProto], outputs: list[str], opset: int = 17) -> onnx.ModelProto:
    """X -> MatMul(W) -> Y followed by ``nodes``; output types and shapes from onnx shape inference."""
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm"), *nodes], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
                          [helper.make_empty_tensor_value_info(o) for o in outputs],
                          [numpy_helper.from_array(W, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    for mine, theirs in zip(m.graph.output, inferred.graph.output, strict=True):
        mine.CopyFrom(theirs)
    onnx.checker.check_model(m)
    return m


def _gather_0d_index() -> onnx.ModelProto:
    # the TorchScript exporter's x.view(x.size(0), -1), written out; and a 0-d constant as an output
    return graph_model([
        helper.make_node("Shape", ["Y"], ["shape"]),
        const("i0", np.int64(0)),
        helper.make_node("Gather", ["shape", "i0"], ["n"], axis=0),
        const("ax", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        const("m1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["n1", "m1"], ["target"], axis=0),
        helper.make_node("Reshape", ["Y", "target"], ["flat"]),
        const("half", np.float32(0.5)),
        helper.make_node("Identity", ["half"], ["half_out"]),
        helper.make_node("Identity", ["i0"], ["index_out"]),
    ], ["flat", "n", "half_out", "index_out"])


def _value_attributes() -> onnx.ModelProto:
    # Constant value_int / value_float are 0-d int64 / float32; value_ints / value_floats 1-d
    return graph_model([
        helper.make_node("Constant", [], ["one"], value_int=1),
        helper.make_node("Shape", ["Y"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["cols"]),
        helper.make_node("Constant", [], ["scale"], value_float=0.25),
        helper.make_node("Mul", ["Y", "scale"], ["scaled"]),
        helper.make_node("Constant", [], ["ints"], value_ints=[3, -1]),
        helper.make_node("Identity", ["ints"], ["ints_out"]),
        helper.make_node("Constant", [], ["floats"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Add", ["Y", "floats"], ["shifted"]),
        helper.make_node("Identity", ["one"], ["one_out"]),
        helper.make_node("Identity", ["scale"], ["scale_out"]),
    ], ["cols", "scaled", "ints_out", "shifted", "one_out", "scale_out"])


def _int32_index() -> onnx.ModelProto:
    # int32 stays int32 (a Gather index may be int32; the Reshape shape is int64 as ONNX requires)
    return graph_model([
        helper.make_node("Shape", ["Y"], ["shape"]),
        const("i0", np.int32(0)),
        helper.make_node("Gather", ["shape", "i0"], ["n"]),
        const("ax", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        const("m1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["n1", "m1"], ["target"], axis=0),
        helper.make_node("Reshape", ["Y", "target"], ["flat"]),
        const("k", np.array([[1, -2, 3]], np.int32)),
        helper.make_node("Transpose", ["k"], ["k_t"]),
        helper.make_node("Identity", ["k_t"], ["k_out"]),
        helper.make_node("Identity", ["i0"], ["i0_out"]),
    ], ["flat", "k_out", "i0_out"])


def _empty() -> onnx.ModelProto:
    # shape-[0] constants: appended to a shape, flattened, reshaped, and returned
    return graph_model([
        helper.make_node("Shape", ["Y"], ["shape"]),
        const("none", np.zeros(0, np.int64)),
        helper.make_node("Concat", ["shape", "none"], ["same"], axis=0),
        helper.make_node("Reshape", ["Y", "same"], ["y2"]),
        const("e", np.zeros((0, 3), np.float32)),
        helper.make_node("Flatten", ["e"], ["e_flat"], axis=1),
        helper.make_node("Flatten", ["e"], ["e_flat0"], axis=0),
        const("shp", np.array([3, 0], np.int64)),
        helper.make_node("Reshape", ["e", "shp"], ["e_t"], allowzero=1),
        helper.make_node("Concat", ["Y", "e"], ["y3"], axis=0),
        helper.make_node("Identity", ["none"], ["none_out"]),
        const("zero", np.array([0], np.int64)),
        helper.make_node("Slice", ["Y", "zero", "zero", "zero"], ["no_rows"]),  # [0, 3] at run time
        helper.make_node("Flatten", ["no_rows"], ["no_rows_flat"], axis=1),
    ], ["y2", "e_flat", "e_flat0", "e_t", "y3", "none_out", "no_rows_flat"])


def _flatten_axes() -> onnx.ModelProto:
    # Flatten of a constant at axis == rank ([2, 3] -> [6, 1]), at 0 and at -1
    return graph_model([
        const("k", np.arange(6, dtype=np.float32).reshape(2, 3)),
        helper.make_node("Flatten", ["k"], ["k_rank"], axis=2),
        helper.make_node("Flatten", ["k"], ["k_zero"], axis=0),
        helper.make_node("Flatten", ["k"], ["k_last"], axis=-1),
        helper.make_node("Flatten", ["Y"], ["y_rank"], axis=2),
    ], ["k_rank", "k_zero", "k_last", "y_rank"])


def _bool() -> onnx.ModelProto:
    return graph_model([
        const("mask", np.array([True, False, True])),
        helper.make_node("Identity", ["mask"], ["mask_id"]),
        const("zero", np.float32(0.0)),
        helper.make_node("Where", ["mask_id", "Y", "zero"], ["masked"]),
        helper.make_node("Not", ["mask"], ["not_mask"]),
        const("flag", np.bool_(True)),
        helper.make_node("Identity", ["flag"], ["flag_out"]),
        helper.make_node("Greater", ["Y", "zero"], ["positive"]),
        helper.make_node("And", ["positive", "flag"], ["positive_and"]),
    ], ["masked", "not_mask", "flag_out", "positive_and"])


def _float16_float64() -> onnx.ModelProto:
    return graph_model([
        const("h", np.float16(1.5)),
        helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["Y", "h32"], ["plus_h"]),
        helper.make_node("Identity", ["h"], ["h_out"]),
        helper.make_node("Cast", ["Y"], ["y64"], to=TensorProto.DOUBLE),
        const("d", np.float64(0.1)),
        helper.make_node("Mul", ["y64", "d"], ["times_d"]),
        const("dv", np.array([1e-3, 2.0, -0.5], np.float64)),
        helper.make_node("Identity", ["dv"], ["dv_out"]),
    ], ["plus_h", "h_out", "times_d", "dv_out"])


def _unsigned() -> onnx.ModelProto:
    # uint constants are held as int64 by the emulator and come back in their own type
    return graph_model([
        const("u", np.array([1, 2, 70000], np.uint32)),
        helper.make_node("Identity", ["u"], ["u_out"]),
        helper.make_node("Shape", ["Y"], ["shape"]),
        const("u16", np.array([65535], np.uint16)),
        helper.make_node("Expand", ["u16", "shape"], ["u16_wide"]),
        const("neg", np.array([-1, 5], np.int32)),
        helper.make_node("Cast", ["neg"], ["as_u32"], to=TensorProto.UINT32),
        helper.make_node("Cast", ["Y"], ["y_i32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["y_i32"], ["y_u64"], to=TensorProto.UINT64),  # negatives wrap
    ], ["u_out", "u16_wide", "as_u32", "y_u64"])


def _weights(dtype: int, np_dtype) -> onnx.ModelProto:
    """A MatMul + Gemm network computed in ``dtype`` (weights, bias and a 0-d scale of that type);
    integer types get MatMul + Add (onnxruntime has no integer Gemm)."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array((rng.standard_normal((4, 6)) * 3).astype(np_dtype), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((5, 6)) * 3).astype(np_dtype), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(5).astype(np_dtype), "b2")
    if np.issubdtype(np_dtype, np.integer):
        w2 = numpy_helper.from_array(numpy_helper.to_array(w2).T.copy(), "w2")
        fc = [helper.make_node("MatMul", ["hr", "w2"], ["zm"], name="fc"),
              helper.make_node("Add", ["zm", "b2"], ["z"], name="fc_bias")]
    else:
        fc = [helper.make_node("Gemm", ["hr", "w2", "b2"], ["z"], name="fc", transB=1)]
    g = helper.make_graph([
        helper.make_node("Cast", ["X"], ["xc"], to=dtype),
        helper.make_node("MatMul", ["xc", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        *fc,
        const("s", np.asarray(2, np_dtype)),
        helper.make_node("Mul", ["z", "s"], ["out"], name="scale"),
    ], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("out", dtype, ["B", 5])], [w1, w2, b2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


# name -> (model builder, tolerance, analog layers expected)
def _computed_bias() -> onnx.ModelProto:
    """A Gemm and a Conv whose bias is computed at run time, not a constant: they stay digital (an analog
    node takes its bias from an initializer; it used to be dropped silently). The MatMul stays analog."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float32), "wg"),
             numpy_helper.from_array(rng.standard_normal((2, 1, 1, 1)).astype(np.float32), "wc"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([-1, 1, 3, 1], np.int64), "shp")]
    g = helper.make_graph([
        helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm"),
        helper.make_node("ReduceSum", ["Y"], ["s"], keepdims=1),  # [1, 1]
        helper.make_node("Gemm", ["Y", "wg", "s"], ["g"], name="fc"),
        helper.make_node("ReduceMean", ["Y"], ["cb"], keepdims=0, axes=[0, 1]),  # 0-d
        helper.make_node("Expand", ["cb", "two"], ["cb2"]),
        helper.make_node("Reshape", ["Y", "shp"], ["y4"]),
        helper.make_node("Conv", ["y4", "wc", "cb2"], ["c"], name="conv"),
    ], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, ["B", 5]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, ["B", 2, 3, 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


GRAPHS: dict[str, tuple[Callable[[], onnx.ModelProto], float, int]] = {
    "computed_bias_stays_digital": (_computed_bias, 1e-5, 1),
    "gather_0d_index": (_gather_0d_index, 1e-5, 1),
    "value_attributes": (_value_attributes, 1e-5, 1),
    "int32_index": (_int32_index, 1e-5, 1),
    "empty": (_empty, 1e-5, 1),
    "flatten_axis_rank": (_flatten_axes, 1e-5, 1),
    "bool": (_bool, 1e-5, 1),
    "float16_float64_constants": (_float16_float64, 1e-5, 1),
    "unsigned": (_unsigned, 1e-5, 1),
    "float16_weights": (lambda: _weights(TensorProto.FLOAT16, np.float16), 2e-3, 2),
    "float64_weights": (lambda: _weights(TensorProto.DOUBLE, np.float64), 1e-5, 2),
    "int32_weights_stay_digital": (lambda: _weights(TensorProto.INT32, np.int32), 0, 0),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_constant_kinds_ideal_equals_onnxruntime(name, tmp_path):
    build, tol, n_analog = GRAPHS[name]
    src = tmp_path / f"{name}.onnx"
    onnx.save(build(), str(src))
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32) * 2
    mapped = compile_and_compare(src, tmp_path, [x], tol)
    assert sum(n.domain == contract.DOMAIN for n in mapped.graph.node) == n_analog
    # every ai.acompile node is float32 (CONTRACTS section 3) whatever the model's own float type: a
    # float16 / float64 layer computes between two Casts
    for t in mapped.graph.initializer:
        if t.name.endswith((".W", ".G_SCALE", ".B_f32")):
            assert t.data_type == TensorProto.FLOAT, t.name
    casts = {n.name for n in mapped.graph.node if n.op_type == "Cast"}
    if name in ("float16_weights", "float64_weights"):
        assert {"mm1.cast_x", "mm1.cast_y", "fc.cast_x", "fc.cast_y"} <= casts
        assert any(t.name == "fc.B_f32" for t in mapped.graph.initializer)


def test_to_torch_keeps_rank_and_dtype():
    import ml_dtypes

    cases = [(np.float32(2.5), torch.float32), (np.zeros((0, 3), np.float16), torch.float16),
             (np.array(True), torch.bool), (np.array([1, 2], np.int32), torch.int32),
             (np.array(7, np.uint32), torch.int64), (np.array(2**64 - 1, np.uint64), torch.int64),
             (np.array([1.5, -2.0], ml_dtypes.bfloat16), torch.bfloat16),
             (np.array(0.5, ml_dtypes.float8_e4m3fn), torch.float8_e4m3fn),
             (np.array([-3, 7], ml_dtypes.int4), torch.int8)]
    for arr, dtype in cases:
        t = to_torch(arr)
        assert t.dtype == dtype and tuple(t.shape) == arr.shape, (arr.dtype, t.dtype, t.shape)
        if dtype in (torch.bfloat16, torch.float8_e4m3fn):
            np.testing.assert_array_equal(t.float().numpy(), arr.astype(np.float32))
        elif arr.dtype != np.uint64:
            np.testing.assert_array_equal(t.numpy(), arr.astype(t.numpy().dtype))
    assert to_torch(np.array(2**64 - 1, np.uint64)).to(torch.uint64).item() == 2**64 - 1
    from runtime.errors import AcompileError

    with pytest.raises(AcompileError, match="not supported"):
        to_torch(np.array(["a"], dtype=object))


def test_bfloat16_constant_runs_in_the_emulator(tmp_path):
    """A bfloat16 Constant the executor itself loads (no frontend folding on a plain model)."""
    g = helper.make_graph([
        helper.make_node("Constant", [], ["h"], value=helper.make_tensor("hv", TensorProto.BFLOAT16, [3],
                                                                          [1.5, -2.0, 0.25])),
        helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["X", "h32"], ["out"]),
    ], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "bf16.onnx"
    onnx.save(m, str(src))
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    assert_same(Executor(m)(torch.from_numpy(x)).numpy(), ort_run(src, x)[0], 0.0, "bfloat16 constant")


@pytest.mark.parametrize("case", ["reshape_count", "flatten_axis"])
def test_constant_that_does_not_fit_its_op_is_one_error_line(run_cli, tmp_path, case):
    """A fold numpy refuses is the user's graph: one `acompile: error:` line naming the node, no files."""
    k = numpy_helper.from_array(np.ones((2, 3), np.float32), "k")
    if case == "reshape_count":  # 6 elements into [4]: the checker does not look at values
        bad = [helper.make_node("Reshape", ["k", "s"], ["r"], name="bad")]
        extra = [numpy_helper.from_array(np.array([4], np.int64), "s")]
    else:  # axis outside [-r, r]
        bad = [helper.make_node("Flatten", ["k"], ["r"], name="bad", axis=3)]
        extra = []
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm"), *bad,
                           helper.make_node("Identity", ["r"], ["out"])], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["B", 3]),
                           helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])],
                          [numpy_helper.from_array(W, "W"), k, *extra])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "bad.onnx"
    src.write_bytes(m.SerializeToString())
    before = sha256(src)
    out_dir = tmp_path / "out"
    code, stdout, stderr = run_cli(src, "--target", "ideal", "-o", out_dir / "m.onnx")
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acompile: error: node 'bad' ("), stderr
    assert "constant inputs do not fit" in lines[0]
    assert not out_dir.exists() or not list(out_dir.iterdir())
    assert sha256(src) == before
