"""avfast.export.rewrite.split_projections: Conv -> [Unsqueeze ->] Split(axis=1) becomes one Conv per part,
with the same outputs; anything it cannot prove equivalent is left alone."""
from __future__ import annotations

import numpy as np
import pytest

from _exported import requires_onnx, tiny_export


def _graph(split_axis=1, sizes=None, unsqueeze_axes=None, extra_consumer=False, parts=3, bias=True, cin=5, cout=9):
    """x [2, cin, 3, 4] -> Conv(1x1, cout) [-> Unsqueeze(axes)] -> Split(split_axis) -> parts outputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, cin, 1, 1)).astype(np.float32), "w")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["y"], name="qkv", kernel_shape=[1, 1])]
    src, rank = "y", 4
    if unsqueeze_axes is not None:
        inits.append(numpy_helper.from_array(np.array(unsqueeze_axes, np.int64), "axes"))
        nodes.append(helper.make_node("Unsqueeze", ["y", "axes"], ["y5"], name="unsq"))
        src, rank = "y5", 4 + len(unsqueeze_axes)
    split_in = [src]
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        split_in.append("sizes")
        kw = {}
    else:
        kw = {"num_outputs": parts}
    outs = [f"o{i}" for i in range(parts)]
    nodes.append(helper.make_node("Split", split_in, outs, name="split", axis=split_axis, **kw))
    dims = [f"d{i}" for i in range(rank)]  # symbolic: the checker wants a rank, ORT infers the sizes
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, dims) for o in outs]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["y"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, dims[:4]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, cin, 3, 4])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 5, 3, 4)).astype(np.float32)
    return session.run(None, {"x": x})


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


@requires_onnx
@pytest.mark.parametrize("case", [
    dict(),                                  # video: Conv -> Split, three equal parts
    dict(bias=False),
    dict(unsqueeze_axes=[3, 4]),             # audio: Conv -> Unsqueeze(after the channels) -> Split
    dict(sizes=[2, 3, 4]),                   # explicit, unequal sizes
    dict(parts=2, cout=7),                   # num_outputs that does not divide: 4 + 3
], ids=["conv-split", "no-bias", "unsqueeze", "sizes", "uneven"])
def test_rewrite_removes_the_split_and_keeps_the_outputs(case):
    from avfast.export.rewrite import split_projections

    model = _graph(**case)
    before = _run(model)
    assert split_projections(model) == 1
    assert "Split" not in _ops(model)
    assert _ops(model).count("Conv") == case.get("parts", 3)
    assert [t.name for t in model.graph.initializer if t.name in ("w", "b")] == []  # the fused weights are gone
    after = _run(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # each output channel reads only its own weight row


@requires_onnx
@pytest.mark.parametrize("case", [
    dict(split_axis=2, parts=3),             # not the channel axis
    dict(unsqueeze_axes=[1]),                # the Unsqueeze moves the channel axis: Split(1) splits something else
    dict(unsqueeze_axes=[-1]),               # negative axis: not resolved, left alone
    dict(extra_consumer=True),               # the fused output is used elsewhere too
    dict(sizes=[2, 3, 5]),                   # sizes that do not sum to the output channels (an invalid graph)
], ids=["axis-2", "unsqueeze-1", "unsqueeze-negative", "shared-output", "bad-sizes"])
def test_rewrite_leaves_what_it_cannot_prove(case):
    from avfast.export.rewrite import split_projections

    model = _graph(**case)
    ops = _ops(model)
    assert split_projections(model) == 0
    assert _ops(model) == ops


@requires_onnx
@pytest.mark.slow
def test_tiny_export_has_no_qkv_split():
    """The export rewrites every attention block's q/k/v projection (14 video + 7 audio blocks in `tiny`); the
    Splits left are the timestep scale/shift ones after a Gemm (tests/test_export.py holds parity)."""
    import onnx

    from avfast.runtime.manifest import read_manifest

    _, path = tiny_export()
    m = read_manifest(path)
    assert m["rewrites"] == {"split_projections": 21}
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type == "Split":
            src = producer[n.input[0]]
            while src.op_type in ("Unsqueeze", "Reshape"):
                src = producer[src.input[0]]
            assert src.op_type != "Conv", f"{n.name} still splits a convolution's output"
