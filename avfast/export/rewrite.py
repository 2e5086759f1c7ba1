"""Graph rewrites applied to the exported ONNX denoiser: same function, kernels the runtimes run faster.

`split_projections`: each attention block computes q, k and v with one 1x1 convolution (`qkv`, 3C output
channels: one weight read, and the layout the fused attention op reads in place) and its reference
composite splits the result along channels. In the exported graph that is Conv -> Split(axis=1), for the
audio branch Conv -> Unsqueeze -> Split. OpenVINO's CPU plugin runs that Split in its reference kernel
(`ref_i8` in int8, `ref` in bf16): 7.5 % of the paper-128 int8 layer time in its PERF_COUNT profile
(docs/int8.md). The rewrite replaces the pair by one convolution per part, with the weight and bias rows
of that part, so no Split is left: the outputs are the same numbers (a 1x1 convolution's output channel
depends only on its own weight row). Measured at paper-128 B1 on OpenVINO: bf16 -7 %, int8 -9 %
(docs/int8.md).

Only patterns whose meaning is certain are rewritten: the Split is the Conv's only consumer, the Conv's
weight (and bias) are initializers, the Split is along axis 1 with sizes that sum to the output
channels, and an Unsqueeze in between adds axes after the channel axis only.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def _attribute(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constants(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name (what a shape or axes input may be)."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _split_sizes(split, channels: int, constants: dict) -> list[int] | None:
    if len(split.input) > 1 and split.input[1]:
        sizes = constants.get(split.input[1])
        return None if sizes is None else [int(s) for s in np.asarray(sizes).reshape(-1)]
    parts = _attribute(split, "num_outputs") or len(split.output)
    chunk = -(-channels // parts)  # ONNX: equal parts, the last one smaller when it does not divide
    sizes = [chunk] * (parts - 1) + [channels - chunk * (parts - 1)]
    return sizes if sizes[-1] > 0 else None


def split_projections(model) -> int:
    """Rewrites every Conv -> [Unsqueeze ->] Split(axis=1) in `model` (an onnx.ModelProto, in place) into
    one Conv [-> Unsqueeze] per part. Returns the number of Splits removed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = _constants(graph)
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    producer = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name for o in graph.output}

    replaced: dict[int, list] = {}  # id(node) -> nodes to put in its place (empty: drop it)
    done = 0
    for split in graph.node:
        if split.op_type != "Split" or _attribute(split, "axis", 0) != 1:
            continue
        between = None
        src = producer.get(split.input[0])
        if src is not None and src.op_type == "Unsqueeze":
            axes = constants.get(src.input[1]) if len(src.input) > 1 else _attribute(src, "axes")
            if axes is None or not all(int(a) >= 2 for a in np.asarray(axes).reshape(-1)):
                continue  # a negative or leading axis could move the channel axis
            between, src = src, producer.get(src.input[0])
        if src is None or src.op_type != "Conv" or src.input[1] not in initializers:
            continue
        if len(src.input) > 2 and src.input[2] and src.input[2] not in initializers:
            continue
        chain = [src] + ([between] if between is not None else [])
        if any(len(consumers[n.output[0]]) != 1 or n.output[0] in graph_outputs for n in chain):
            continue
        if _attribute(src, "group", 1) != 1:
            continue
        weight = numpy_helper.to_array(initializers[src.input[1]])
        bias = numpy_helper.to_array(initializers[src.input[2]]) if len(src.input) > 2 and src.input[2] else None
        sizes = _split_sizes(split, weight.shape[0], constants)
        if sizes is None or sum(sizes) != weight.shape[0] or len(sizes) != len(split.output):
            continue
        new_nodes, start = [], 0
        for k, (size, out) in enumerate(zip(sizes, split.output)):
            w_name = f"{src.input[1]}__part{k}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight[start:start + size]), w_name))
            inputs = [src.input[0], w_name]
            if bias is not None:
                b_name = f"{src.input[2]}__part{k}"
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(bias[start:start + size]),
                                                                 b_name))
                inputs.append(b_name)
            conv_out = out if between is None else f"{src.output[0]}__part{k}"
            conv = helper.make_node("Conv", inputs, [conv_out], name=f"{src.name}__part{k}")
            conv.attribute.extend(src.attribute)
            conv.metadata_props.extend(src.metadata_props)  # name scopes: int8's layer groups find it by them
            new_nodes.append(conv)
            if between is not None:
                unsq = helper.make_node("Unsqueeze", [conv_out, *between.input[1:]], [out],
                                        name=f"{between.name}__part{k}")
                unsq.attribute.extend(between.attribute)
                new_nodes.append(unsq)
            start += size
        replaced[id(src)] = new_nodes
        replaced[id(split)] = []
        if between is not None:
            replaced[id(between)] = []
        done += 1
    if not done:
        return 0
    nodes = []
    for n in graph.node:
        nodes.extend(replaced.get(id(n), [n]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # value_info of the removed intermediate tensors would describe tensors that no longer exist
    live = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    keep_vi = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)
    return done
