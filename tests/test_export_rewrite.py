"""avfast.export.rewrite: split_projections (Conv -> [Unsqueeze ->] Split(axis=1) becomes one Conv per part)
and split_concat_convs (Conv(Concat(parts)) becomes a sum of one Conv per part, an Expand part convolved
before its broadcast), with the same outputs; anything they cannot prove equivalent is left alone."""
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
    assert m["rewrites"] == {"split_projections": 21, "split_concat_convs": 16}
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    for n in graph.node:
        if n.op_type == "Split":
            src = producer[n.input[0]]
            while src.op_type in ("Unsqueeze", "Reshape"):
                src = producer[src.input[0]]
            assert src.op_type != "Conv", f"{n.name} still splits a convolution's output"
    # easy fusion's 8 video and 8 audio projections: no Concat feeds a Conv alone, no Expand is left
    consumers: dict = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    assert not [n.name for n in graph.node if n.op_type == "Concat" and consumers[n.output[0]] == ["Conv"]]
    assert "Expand" not in {n.op_type for n in graph.node}


def _concat_graph(expand=True, kernel=1, pads=0, axis=1, extra_consumer=False, channel_broadcast=False,
                  all_expand=False, bias=True, group=1):
    """x [2, 4, 3, 5, 5] and u [2, 3, 3, 1, 1] -> Concat(axis)(x, Expand(u) or u') -> Conv(kernel) -> y:
    easy fusion's video projection, cat(v, a over H x W) -> 1x1x1 Conv, and the variants it must refuse."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    cu = 1 if channel_broadcast else 3
    cin = (3 if all_expand else 4) + 3
    inits = [numpy_helper.from_array(rng.standard_normal((6, cin // group, kernel, kernel, kernel)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([2, 3, 3, 5, 5], np.int64), "shape")]
    conv_in = ["cat", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b"))
        conv_in.append("b")
    nodes, value_info = [], [helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, cu, 3, 1, 1])]
    if expand:
        nodes.append(helper.make_node("Expand", ["u", "shape"], ["ue"], name="expand"))
        second = "ue"
        value_info.append(helper.make_tensor_value_info("ue", TensorProto.FLOAT, [2, 3, 3, 5, 5]))
    else:
        nodes.append(helper.make_node("Tile", ["u", "reps"], ["ue"], name="tile"))
        inits.append(numpy_helper.from_array(np.array([1, 1, 1, 5, 5], np.int64), "reps"))
        value_info.append(helper.make_tensor_value_info("ue", TensorProto.FLOAT, [2, 3, 3, 5, 5]))
        second = "ue"
    first = "x"
    if all_expand:  # a second Expand of u: both parts could move their broadcast after the Conv
        nodes.append(helper.make_node("Expand", ["u", "shape"], ["ue2"], name="expand2"))
        value_info.append(helper.make_tensor_value_info("ue2", TensorProto.FLOAT, [2, 3, 3, 5, 5]))
        first = "ue2"
    nodes.append(helper.make_node("Concat", [first, second], ["cat"], name="cat", axis=axis))
    value_info.append(helper.make_tensor_value_info("cat", TensorProto.FLOAT, [2, cin, 3, 5, 5]))
    nodes.append(helper.make_node("Conv", conv_in, ["y"], name="proj_v", kernel_shape=[kernel] * 3,
                                  pads=[pads] * 6, group=group))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(5)])]
    if extra_consumer:
        nodes.append(helper.make_node("Relu", ["cat"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [f"d{i}" for i in range(5)]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 5, 5]),
              helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, cu, 3, 1, 1])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits, value_info=value_info[1:])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run_concat(model):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    return session.run(None, feeds)


def _close(after, before):
    """Within float32 summation-order error of the reference's own scale (not bit-equal: the channel sum
    is split in two)."""
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.shape == b.shape
        scale = float(np.abs(b).max())
        assert scale > 0
        assert float(np.abs(a - b).max()) <= 1e-5 * scale


@requires_onnx
@pytest.mark.parametrize("case, convs, expands", [
    (dict(), 2, 0),                               # easy fusion: the Expand is gone, the Add broadcasts
    (dict(bias=False), 2, 0),
    (dict(expand=False), 2, 0),                   # a plain part (Tile) stays an input of its own Conv
    (dict(kernel=3, pads=1), 2, 1),               # not pointwise: split, but the broadcast stays before it
    (dict(axis=-4), 2, 0),                        # axis -4 of rank 5 is the channel axis
    (dict(all_expand=True), 2, 1),                # every part an Expand: one keeps its broadcast (full shape)
], ids=["fusion", "no-bias", "plain-part", "not-pointwise", "negative-axis", "all-expand"])
def test_concat_rewrite_splits_the_conv_and_keeps_the_outputs(case, convs, expands):
    from avfast.export.rewrite import split_concat_convs

    model = _concat_graph(**case)
    before = _run_concat(model)
    assert split_concat_convs(model) == 1
    ops = _ops(model)
    assert "Concat" not in ops
    assert ops.count("Conv") == convs and ops.count("Add") == 1 and ops.count("Expand") == expands
    assert "w" not in {t.name for t in model.graph.initializer}
    _close(_run_concat(model), before)


def test_close_helper_rejects_a_one_percent_error_and_zeros():
    ref = [np.linspace(-2, 3, 60, dtype=np.float32).reshape(3, 20)]
    with pytest.raises(AssertionError):
        _close([ref[0] * 1.01], ref)
    with pytest.raises(AssertionError):
        _close([np.zeros_like(ref[0])], ref)
    _close([ref[0] + 1e-6], ref)


@requires_onnx
@pytest.mark.parametrize("case", [
    dict(axis=2),                                 # not the channel axis
    dict(extra_consumer=True),                    # the concatenation is used elsewhere too
    dict(group=7),                                # grouped: parts do not map to weight slices
], ids=["axis-2", "shared-concat", "grouped"])
def test_concat_rewrite_leaves_what_it_cannot_prove(case):
    from avfast.export.rewrite import split_concat_convs

    model = _concat_graph(**case) if case.get("axis") != 2 else _concat_axis2()
    ops = _ops(model)
    assert split_concat_convs(model) == 0
    assert _ops(model) == ops


def _concat_axis2():
    """Concat along frames (axis 2) of two [2, 7, 3, 5, 5] tensors -> 1x1x1 Conv: not a channel concat."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((6, 7, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Concat", ["x", "z"], ["cat"], name="cat", axis=2),
             helper.make_node("Conv", ["cat", "w"], ["y"], name="conv", kernel_shape=[1, 1, 1])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 7, 3, 5, 5]) for n in ("x", "z")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(5)])], [w],
                              value_info=[helper.make_tensor_value_info("cat", TensorProto.FLOAT, [2, 7, 6, 5, 5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@requires_onnx
def test_concat_rewrite_keeps_a_channel_broadcast():
    """An Expand that broadcasts the channel axis (1 -> 3) cannot move after the Conv (it mixes channels):
    the Conv is split, the Expand stays."""
    from avfast.export.rewrite import split_concat_convs

    model = _concat_graph(channel_broadcast=True)
    before = _run_concat(model)
    assert split_concat_convs(model) == 1
    assert _ops(model).count("Expand") == 1
    _close(_run_concat(model), before)


@requires_onnx
@pytest.mark.slow
def test_external_weights_export_is_rewritten_and_computes_the_same(tmp_path, monkeypatch):
    """Above EXTERNAL_DATA_BYTES the weights go to `<name>.data`: the rewritten graph is written once, with
    every initializer in that file, and computes what the embedded-weights export computes."""
    import onnx
    import onnxruntime as ort
    import torch

    import avfast.models
    from avfast.export import graph, randomize_zero_layers_
    from avfast.export.parity import parity_inputs

    model = randomize_zero_layers_(avfast.models.create("tiny", frames=4, audio_length=24), seed=0).eval()
    inside = graph.export_onnx(model, tmp_path / "inside.onnx", frames=4, audio_length=24)
    monkeypatch.setattr(graph, "EXTERNAL_DATA_BYTES", 0)
    outside = graph.export_onnx(model, tmp_path / "outside.onnx", frames=4, audio_length=24)
    assert inside.external_data is None and outside.external_data == "outside.onnx.data"
    assert outside.rewrites == inside.rewrites and sum(outside.rewrites.values()) > 0
    data = tmp_path / "outside.onnx.data"
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert data.stat().st_size > 0.9 * weights
    proto = onnx.load(str(tmp_path / "outside.onnx"), load_external_data=False)
    kept = sum(t.ByteSize() for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL)
    assert kept < 0.01 * weights       # only onnx's small tensors (<= 1 KiB each) stay in the graph file
    feeds = {n: t.numpy() for n, t in zip(("v_t", "a_t", "t_v", "t_a"), parity_inputs(model, 1, 4, 24))}
    a = ort.InferenceSession(str(tmp_path / "inside.onnx")).run(None, feeds)
    b = ort.InferenceSession(str(tmp_path / "outside.onnx")).run(None, feeds)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("v_t", "a_t", "t_v", "t_a")))
    assert float(np.abs(b[0] - ref[0].numpy()).max()) < 1e-3 * float(np.abs(ref[0].numpy()).max())
