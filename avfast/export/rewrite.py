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

`split_concat_convs`: easy fusion's projections read the concatenation of one modality's features and
the other's, resampled (CMMD's fusion: `proj_v(cat(v, a over H x W))`, `proj_a(cat(a, pooled v))`). A
convolution is linear in its input channels, so Conv(Concat(x_1, ..., x_n), W, b) = sum_i Conv(x_i, W_i)
+ b with W_i the weight's input-channel slice of x_i. Two things follow. Each part gets its own input
(and so its own int8 scale: the two modalities' ranges differ by up to 22x, which one per-tensor scale
could not serve, the reason the fusion projections stayed float). And where a part is an Expand that
only broadcasts (the audio vector repeated over H x W) and the convolution is pointwise, the convolution
runs on the Expand's input and the Add broadcasts it: no Expand (OpenVINO's reference `Broadcast`
kernel) or Concat is left, and that part costs F instead of F x H x W positions. Rewritten only when the
Concat is along axis 1 and the Conv is its only consumer, group 1, weights (and bias) initializers, and
every part's channel count known from the graph's shapes.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

# The passes export_onnx applies, in order (part of the export cache's key: a new pass is a new graph)
PASSES = ("split_projections", "split_concat_convs")


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


def _index(graph):
    """(initializers by name, tensor -> consuming nodes, tensor -> producing node, graph output names)."""
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    return ({t.name: t for t in graph.initializer}, consumers, {o: n for n in graph.node for o in n.output},
            {o.name for o in graph.output})


def _constant_conv(node, initializers: dict) -> bool:
    """A Conv of groups 1 whose weight (and bias, if any) are initializers: its slices can be new initializers."""
    return (node is not None and node.op_type == "Conv" and _attribute(node, "group", 1) == 1
            and node.input[1] in initializers
            and not (len(node.input) > 2 and node.input[2] and node.input[2] not in initializers))


def _conv_like(conv, inputs: list[str], output: str, name: str):
    """A Conv node with `conv`'s attributes and name scopes (int8's layer groups find it by them)."""
    from onnx import helper

    node = helper.make_node("Conv", inputs, [output], name=name)
    node.attribute.extend(conv.attribute)
    node.metadata_props.extend(conv.metadata_props)
    return node


def split_projections(model) -> int:
    """Rewrites every Conv -> [Unsqueeze ->] Split(axis=1) in `model` (an onnx.ModelProto, in place) into
    one Conv [-> Unsqueeze] per part. Returns the number of Splits removed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = _constants(graph)
    initializers, consumers, producer, graph_outputs = _index(graph)

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
        if not _constant_conv(src, initializers):
            continue
        chain = [src] + ([between] if between is not None else [])
        if any(len(consumers[n.output[0]]) != 1 or n.output[0] in graph_outputs for n in chain):
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
            new_nodes.append(_conv_like(src, inputs, conv_out, f"{src.name}__part{k}"))
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
    _replace_nodes(graph, replaced)
    return done


def _shapes(graph) -> dict[str, list]:
    """Tensor name -> its dims (int, a dim_param string, or None) from value_info, inputs and outputs."""
    out = {}
    for v in list(graph.value_info) + list(graph.input) + list(graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                           for d in v.type.tensor_type.shape.dim]
    return out


def _pointwise(conv) -> bool:
    """A 1 x ... x 1 convolution with unit strides and dilations and no padding."""
    kernel = _attribute(conv, "kernel_shape")
    return (kernel is not None and all(k == 1 for k in kernel)
            and all(x == 1 for x in (_attribute(conv, "strides") or [1]))
            and all(x == 1 for x in (_attribute(conv, "dilations") or [1]))
            and not any(_attribute(conv, "pads") or [0])
            and _attribute(conv, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def _broadcast_source(expand, shapes: dict, out_rank: int) -> str | None:
    """The input of `expand` when its broadcast can be left to an Add after a pointwise Conv: same rank as
    the output and the same channel count (a Conv mixes channels, so channels must not be broadcast)."""
    src, out = shapes.get(expand.input[0]), shapes.get(expand.output[0])
    if src is None or out is None or len(src) != out_rank or len(out) != out_rank:
        return None
    if not isinstance(src[1], int) or src[1] <= 0 or src[1] != out[1]:
        return None
    return expand.input[0]


def split_concat_convs(model) -> int:
    """Rewrites every Conv(Concat(axis=1, parts)) in `model` (an onnx.ModelProto, in place) into one Conv
    per part, summed by Adds (the bias on the first); an Expand part of a pointwise Conv is convolved
    before its broadcast. Returns the number of Concats removed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = _shapes(graph)
    initializers, consumers, producer, graph_outputs = _index(graph)

    replaced: dict[int, list] = {}
    done = 0
    for conv in graph.node:
        if not _constant_conv(conv, initializers):
            continue
        concat = producer.get(conv.input[0])
        if concat is None or concat.op_type != "Concat" or len(consumers[concat.output[0]]) != 1 \
                or concat.output[0] in graph_outputs:
            continue
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        rank = weight.ndim  # the Conv's input rank
        axis = _attribute(concat, "axis")
        if axis is None or axis + (rank if axis < 0 else 0) != 1:
            continue
        channels = [shapes[x][1] if len(shapes.get(x, [])) == rank else None for x in concat.input]
        if any(not isinstance(c, int) or c <= 0 for c in channels) or sum(channels) != weight.shape[1]:
            continue
        # Expand parts whose broadcast an Add can do after a pointwise Conv (not all of them: the sum
        # must still have the full shape)
        sources = list(concat.input)
        if _pointwise(conv):
            for k, x in enumerate(concat.input):
                src = producer.get(x)
                if src is not None and src.op_type == "Expand" and len(consumers[x]) == 1:
                    sources[k] = _broadcast_source(src, shapes, rank) or x
            if all(s != x for s, x in zip(sources, concat.input)):
                sources[-1] = concat.input[-1]
            for s_, x in zip(sources, concat.input):
                if s_ != x:
                    replaced[id(producer[x])] = []
        new_nodes, start, partial = [], 0, None
        for k, (x, c) in enumerate(zip(sources, channels)):
            w_name = f"{conv.input[1]}__in{k}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight[:, start:start + c]), w_name))
            inputs = [x, w_name]
            if k == 0 and len(conv.input) > 2 and conv.input[2]:
                inputs.append(conv.input[2])
            part_out = f"{conv.output[0]}__in{k}"
            new_nodes.append(_conv_like(conv, inputs, part_out, f"{conv.name}__in{k}"))
            if partial is not None:
                total = conv.output[0] if k == len(sources) - 1 else f"{conv.output[0]}__sum{k}"
                add = helper.make_node("Add", [partial, part_out], [total], name=f"{conv.name}__add{k}")
                add.metadata_props.extend(conv.metadata_props)
                new_nodes.append(add)
                part_out = total
            partial = part_out
            start += c
        if len(concat.input) == 1:  # a one-part Concat: its Conv writes the output itself
            new_nodes[0].output[0] = conv.output[0]
        replaced[id(conv)] = new_nodes
        replaced[id(concat)] = []
        done += 1
    _replace_nodes(graph, replaced)
    return done


def _replace_nodes(graph, replaced: dict[int, list]) -> None:
    """Puts each node's replacement (by id) in its place, then drops unused initializers and the
    value_info of tensors that no longer exist (nothing, when nothing was replaced)."""
    if not replaced:
        return
    nodes = []
    for n in graph.node:
        nodes.extend(replaced.get(id(n), [n]))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    live = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    keep_vi = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)
