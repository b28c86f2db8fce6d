"""Bad input: each case is one `acompile: error: ...` line on stderr, exit code 2, and no output files.

The bad-input set is generated here (truncated bytes, text files, hand-built ONNX graphs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import contract

ROOT = Path(__file__).resolve().parents[1]


def expect_error(run_cli, src: Path, *args: str, match: str) -> str:
    out_dir = src.parent / "out"
    code, stdout, stderr = run_cli(src, "-o", out_dir / "m.onnx", *args)
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acompile: error: "), stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not out_dir.exists() or not list(out_dir.iterdir())
    return lines[0]


def mlp_graph(weight_path: str = "init", dims=("N", 8), dyn_weight: bool = False) -> onnx.ModelProto:
    """x [N, 8] @ W [8, 4] (+ b) with the weight reached via `weight_path`."""
    w = np.arange(32, dtype=np.float32).reshape(8, 4) / 10 - 1.5
    inits, nodes = [], []
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))]
    if dyn_weight:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4]))
    elif weight_path == "init":
        inits.append(numpy_helper.from_array(w, "w"))
    elif weight_path == "identity":
        inits.append(numpy_helper.from_array(w, "w0"))
        nodes.append(helper.make_node("Identity", ["w0"], ["w"], name="id"))
    elif weight_path == "transpose":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "wt"))
        nodes.append(helper.make_node("Transpose", ["wt"], ["w1"], name="tr", perm=[1, 0]))
        inits.append(numpy_helper.from_array(np.array([8, 4], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["w1", "shape"], ["w"], name="rs"))
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4])
    g = helper.make_graph(nodes, "g", inputs, [out], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("path", ["identity", "transpose"])
def test_weight_behind_identity_transpose_reshape_is_folded(run_cli, tmp_path, path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp_graph(path), str(src))
    code, _, err = run_cli(src, "--target", "ideal")
    assert code == 0, err
    m = onnx.load(str(tmp_path / "m.pcm.onnx"))
    node = next(n for n in m.graph.node if n.domain == contract.DOMAIN)
    W = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == node.input[1]))
    assert np.array_equal(W, np.arange(32, dtype=np.float32).reshape(8, 4) / 10 - 1.5)
    assert [n.op_type for n in m.graph.node] == [contract.ANALOG_MATMUL]  # dead weight chain removed


def test_gemm_transA_transB(run_cli, tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)  # [N, K] with transB
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm", transA=1, transB=1, alpha=0.5)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(4, np.float32), "b")])
    src = tmp_path / "g.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    code, _, err = run_cli(src, "--target", "ideal")
    assert code == 0, err
    m = onnx.load(str(tmp_path / "g.pcm.onnx"))
    assert [n.op_type for n in m.graph.node] == ["Transpose", contract.ANALOG_MATMUL]
    W = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name.endswith(".W")))
    assert np.array_equal(W, w.T)
    attrs = {a.name: helper.get_attribute_value(a) for a in m.graph.node[1].attribute}
    assert attrs["alpha"] == 0.5 and attrs["orig_op"] == b"Gemm"


def test_missing_file(run_cli, tmp_path):
    expect_error(run_cli, tmp_path / "nope.onnx", match="file not found")


def test_not_onnx(run_cli, tmp_path):
    src = tmp_path / "text.onnx"
    src.write_text("this is not a protobuf at all\n" * 10)
    expect_error(run_cli, src, match="not an ONNX model")


def test_truncated_protobuf(run_cli, onnx_export, tmp_path):
    data = onnx_export("mlp_matmul").read_bytes()
    for i, cut in enumerate((len(data) // 2, len(data) - 7, 100)):
        src = tmp_path / f"trunc{i}" / "t.onnx"
        src.parent.mkdir()
        src.write_bytes(data[:cut])
        expect_error(run_cli, src, match="t.onnx")


def test_empty_file(run_cli, tmp_path):
    src = tmp_path / "e.onnx"
    src.write_bytes(b"")
    expect_error(run_cli, src, match="empty file")


def test_dynamic_spatial_shape(run_cli, tmp_path):
    w = np.ones((4, 3, 3, 3), np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_dyn")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H2", "W2"])],
                          [numpy_helper.from_array(w, "w")])
    src = tmp_path / "d.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    line = expect_error(run_cli, src, match="conv_dyn")
    assert "dynamic" in line
    # a symbolic batch alone is fine
    src2 = tmp_path / "ok" / "s.onnx"
    src2.parent.mkdir()
    onnx.save(mlp_graph("init", dims=("batch", 8)), str(src2))
    assert run_cli(src2)[0] == 0


def test_non_constant_conv_weight(run_cli, tmp_path):
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_w")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])])
    src = tmp_path / "w.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    expect_error(run_cli, src, match="node 'conv_w' (Conv): weight input 'w' is not a constant")
    # forcing it digital is the way out
    assert run_cli(src, "--digital", "conv_w", "-o", tmp_path / "ok" / "w.onnx")[0] == 0


def test_unknown_op(run_cli, tmp_path):
    m = mlp_graph("init")
    m.graph.node.append(helper.make_node("FancyOp", ["y"], ["z"], name="fancy"))
    m.graph.output[0].name = "z"
    src = tmp_path / "u.onnx"
    onnx.save(m, str(src))
    expect_error(run_cli, src, match="FancyOp")


def test_unknown_digital_name(run_cli, tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp_graph("init"), str(src))
    expect_error(run_cli, src, "--digital", "fc,conv99", match="--digital 'conv99': no such layer")


def _external(tmp_path: Path, location: str) -> Path:
    m = mlp_graph("init")
    t = m.graph.initializer[0]
    raw = numpy_helper.to_array(t).tobytes()
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        t.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    d = tmp_path / "model"
    d.mkdir()
    (tmp_path / "secret.bin").write_bytes(raw)
    (d / "w.bin").write_bytes(raw)
    src = d / "ext.onnx"
    src.write_bytes(m.SerializeToString())
    return src


def test_external_data_inside_folder_ok(run_cli, tmp_path):
    src = _external(tmp_path, "w.bin")
    code, _, err = run_cli(src, "--target", "ideal")
    assert code == 0, err


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin"])
def test_external_data_escape(run_cli, tmp_path, location):
    expect_error(run_cli, _external(tmp_path, location), match="leaves the model's folder")


def test_external_data_absolute(run_cli, tmp_path):
    expect_error(run_cli, _external(tmp_path, str(tmp_path / "secret.bin")), match="absolute path")


def test_absurd_tensor_dims(run_cli, tmp_path):
    m = mlp_graph("init")
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    del t.dims[:]
    t.dims.extend([1 << 20, 1 << 20])
    src = tmp_path / "big.onnx"
    src.write_bytes(m.SerializeToString())
    expect_error(run_cli, src, match="exceed the bound")


def test_huge_file_rejected(run_cli, tmp_path):
    src = tmp_path / "huge.onnx"
    with open(src, "wb") as f:  # sparse: no real disk use
        f.truncate(4 * 1024**3 + 1)
    expect_error(run_cli, src, match="above the 4 GiB limit")


def test_bad_target_and_tile(run_cli, tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(mlp_graph("init"), str(src))
    expect_error(run_cli, src, "--target", "nosuch", match="unknown target 'nosuch'")
    expect_error(run_cli, src, "--tile", "12by3", match="--tile")
    bad = tmp_path / "bad.toml"
    bad.write_text("[tile]\nrows = -3\n")
    expect_error(run_cli, src, "--target", bad, match="[tile].rows must be a positive integer, got -3")


def test_subprocess_one_line_no_traceback(tmp_path):
    src = tmp_path / "x.onnx"
    src.write_bytes(b"\x08\x07\x12garbage")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", str(src)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("acompile: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]
