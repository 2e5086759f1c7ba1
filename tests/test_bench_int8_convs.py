"""bench/int8_convs.py: which convolutions it times, the one-layer graphs it builds, and its sum."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not an installed package

onnx = pytest.importorskip("onnx", reason="int8_convs reads ONNX graphs (the `onnx` extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bench import int8_convs  # noqa: E402
from _compare import assert_accurate  # noqa: E402

X_SHAPE = (1, 6, 5, 7)


def _qdq_model(path: Path) -> None:
    """x -> QDQ -> Conv(int8 weights) -> QDQ -> Conv(same shape, int8 weights) -> Conv(float weights)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.full(6, 0.02, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(6, np.int8), "wz"),
             numpy_helper.from_array(rng.standard_normal((6, 6, 3, 3)).astype(np.float32), "w_float")]
    nodes = []
    x = "x"
    for i in range(2):
        inits.append(numpy_helper.from_array(rng.integers(-127, 128, (6, 6, 3, 3)).astype(np.int8), f"wq{i}"))
        nodes += [helper.make_node("QuantizeLinear", [x, "s", "z"], [f"xq{i}"]),
                  helper.make_node("DequantizeLinear", [f"xq{i}", "s", "z"], [f"xd{i}"]),
                  helper.make_node("DequantizeLinear", [f"wq{i}", "ws", "wz"], [f"w{i}"], axis=0),
                  helper.make_node("Conv", [f"xd{i}", f"w{i}"], [f"y{i}"], pads=[1, 1, 1, 1], name=f"conv{i}")]
        x = f"y{i}"
    nodes.append(helper.make_node("Conv", [x, "w_float"], ["y"], pads=[1, 1, 1, 1], name="conv_float"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X_SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(X_SHAPE))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_int8_convolutions_counts_the_int8_layers_once_per_kind(tmp_path):
    _qdq_model(tmp_path / "m.onnx")
    convs = int8_convs.int8_convolutions(tmp_path / "m.onnx")
    assert len(convs) == 1  # the two int8 layers are alike; the float one is not counted
    (x_shape, w_shape, attrs), count = next(iter(convs.items()))
    assert count == 2 and x_shape == X_SHAPE and w_shape == (6, 6, 3, 3)
    assert dict(attrs)["pads"] == (1, 1, 1, 1)


@pytest.mark.parametrize("int8", [False, True])
def test_conv_graph_computes_its_convolution(int8):
    ort = pytest.importorskip("onnxruntime", reason="runs the one-layer graph (the `ort` extra)")
    x_shape, w_shape, attrs = (1, 5, 3, 6, 7), (4, 5, 1, 3, 3), (("pads", (0, 1, 1, 0, 1, 1)), ("strides", (1, 2, 1)))
    model = int8_convs.conv_graph(x_shape, w_shape, attrs, int8)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    xt = torch.from_numpy(x).double()
    if int8:  # the oracle quantises x and dequantises the weights itself
        s = float(inits["x_scale"])
        xt = torch.clamp(torch.round(xt / s), -128, 127) * s
        w = torch.from_numpy(inits["w_q"]).double() * torch.from_numpy(inits["w_scale"]).double().view(-1, 1, 1, 1, 1)
    else:
        w = torch.from_numpy(inits["w"]).double()
    want = torch.nn.functional.conv3d(xt, w, padding=(0, 1, 1), stride=(1, 2, 1))
    assert_accurate(torch.from_numpy(got), want, what=f"one-layer conv graph (int8={int8})", floor_ulps=8)


def test_conv_graph_compiles_to_an_int8_convolution_on_openvino_and_the_float_one_does_not():
    pytest.importorskip("openvino", reason="the timing runs on OpenVINO (the `openvino` extra)")
    shape, w, attrs = (1, 16, 2, 8, 8), (16, 16, 1, 3, 3), (("pads", (0, 1, 1, 0, 1, 1)),)
    _, int8 = int8_convs._compile(int8_convs.conv_graph(shape, w, attrs, True), threads=1)
    _, float_ = int8_convs._compile(int8_convs.conv_graph(shape, w, attrs, False), threads=1)
    assert any(p in ("I8", "U8") for p in int8), int8
    assert int8 and float_ and not any(p in ("I8", "U8") for p in float_), float_


def test_summary_is_the_count_weighted_sum():
    rows = [{"count": 3, "median_ms": {"bf16": 2.0, "int8": 1.0}, "bf16_over_int8": 2.0},
            {"count": 1, "median_ms": {"bf16": 4.0, "int8": 4.0}, "bf16_over_int8": 1.0}]
    s = int8_convs.summary(rows)
    assert s["sum_ms"] == {"bf16": 10.0, "int8": 7.0} and s["layers"] == 4 and s["distinct"] == 2
    assert s["bf16_over_int8"] == pytest.approx(10 / 7) and s["per_layer_ratio_range"] == [1.0, 2.0]


def test_measure_refuses_an_int8_graph_that_does_not_run_in_int8(monkeypatch):
    compiled = types.SimpleNamespace(create_infer_request=lambda: None)
    monkeypatch.setattr(int8_convs, "_compile", lambda model, threads: (compiled, ["BF16"]))  # as if int8 fell back
    convs = {((1, 4, 6, 6), (4, 4, 3, 3), (("pads", (1, 1, 1, 1)),)): 1}
    with pytest.raises(RuntimeError, match="did not compile to an int8 convolution"):
        int8_convs.measure(convs, rounds=1, threads=1, progress=False)
