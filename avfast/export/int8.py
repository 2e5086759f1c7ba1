"""Int8 post-training quantisation of the exported denoiser: NNCF on the ONNX graph, QDQ out.

    python -m avfast.export --precision int8            # export fp32, calibrate, quantise, check, compare

NNCF's ONNX backend (`nncf.quantize`) calibrates the fp32 graph and writes QuantizeLinear /
DequantizeLinear pairs around the inputs of its convolutions and matmuls (weights int8 per output
channel, activations int8 per tensor). One QDQ file serves both CPU runtimes: OpenVINO turns each pair
into a FakeQuantize and runs the layer on its int8 (VNNI) kernels, ONNX Runtime fuses QDQ into
QLinearConv/QLinearMatMul. Nothing here quantises by hand.

Calibration data are the denoiser's real inputs along the sampler's trajectory (`collect_calibration`):
held-out synthetic clips (data seed 3: 0 trained the models, 1 made the demo's clips, 2 is the quality
report's), sampled by the fp32 model for every task -- joint from noise, v2a and a2v conditioned on the
clips' own video/sound (a latent model's v2a: the video latents its own joint samples of those clips
ended at, since the export carries no frame codec to encode the clips' pixels), half the clips with the
condition clean at t = 0 (the quality report's mode)
and half forward-noised (the pipeline's) -- and (v_t, a_t, t_v, t_a) recorded at every `every`-th step of
the sampler's grid and its last, because activation ranges differ across timesteps (at t near T the
inputs are noise, near 0 they are data). The sampler is the one the model is used with: a distilled
student's own step count and sampler (every step of a 4-step grid), else 25 DPM-Solver++ steps.

The first step gets its own graph (`first_step_clips`, on by default). At t = T the inputs are pure noise
(and a clean or fully noised condition), and their activation ranges are the widest of the trajectory:
one per-tensor scale for every timestep costs most there, and on the default model it was the one step
whose int8 error moved joint samples off the data's distribution (joint FD 3.0 against fp32's 1.1 on the
quality report; the same graph with the first step in fp32: 1.1; docs/int8.md). So the export also writes
`<name>.first-step.onnx`: the same fp32 graph quantised on first-step inputs only (`first_step_clips`
held-out clips per task, the sampler stopped after its first call), and the runtimes send every call whose
timesteps all lie at the first step's (max(t_v, t_a) >= `t_min`, the smallest first-step timestep
recorded) to it. Every step still runs in int8.

Layers kept in float (`KEEP_FLOAT`, NNCF's ignored_scope, found by name scope in the graph's metadata)
were chosen by measurement (bench/int8_sensitivity.py, docs/int8.md).
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..runtime._optional import require
from .checks import GraphCheckError

CALIBRATION_DATA_SEED = 3
# Name-scope groups of the U-Net (ONNX node metadata "pkg.torch.onnx.name_scopes", the module path).
GROUPS: dict[str, str] = {
    "stem": "the input convolutions (model.stem_v/stem_a)",
    "time_mlp": "the timestep MLP (model.time_v/time_a)",
    "time_proj": "each ResBlock's timestep projection (res_*.emb)",
    "attention": "the attention matmuls around the softmax (QK^T and PV)",
    "fusion": "the fusion projections (fusion.proj_v/proj_a)",
    "output": "the output convolutions (model.out_v/out_a)",
    "wide_range": "layers whose input range varies over WIDE_RANGE x across the calibration set (timesteps)",
}
KEEP_FLOAT: tuple[str, ...] = ("wide_range",)  # measured: docs/int8.md (bench/results/int8-sensitivity-tiny.json); the
# fusion projections tolerate int8 since the export gives each modality its own input (split_concat_convs)
# Elementwise ops keep float inputs (NNCF's ignored_scope by type): NNCF's CPU default also quantises the
# inputs of residual Adds, the timestep scale-shift Muls, fusion's Concat/ReduceMean and the Resizes, with
# one per-tensor range for every timestep; measured on the default model, that made the error at t = T 3x
# the output's scale (docs/int8.md). Only convolutions and matmuls take int8 inputs.
FLOAT_OP_TYPES = ("Add", "Mul", "Sub", "Div", "Concat", "ReduceMean", "Resize")
WIDE_RANGE = 8.0  # max / median over calibration samples of a layer input's max |x|: 8x costs 3 of int8's bits
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear")
_COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "ConvTranspose")


# --------------------------------------------------------------------------------- calibration data
@dataclass(frozen=True)
class CalibrationSettings:
    clips: int = 4                 # held-out clips per task
    steps: int | None = None       # sampler steps; None: the model's own (a student's distilled count, else 25)
    sampler: str | None = None     # None: the model's own (a student's distilled sampler, else dpmpp2m)
    spacing: str = "trailing"
    every: int | None = None       # record every `every`-th step, and the last; None: about six steps of the grid
    data_seed: int = CALIBRATION_DATA_SEED
    seed: int = 0                  # sampling noise of clip i: seed + i
    tasks: tuple[str, ...] = ("joint", "v2a", "a2v")
    # held-out clips per task whose first sampler call calibrates the first-step graph; 0: no such graph.
    # 16 (48 samples): with 4 (12 samples, 1 feed at batch 8) joint FD stayed at 3.2 (docs/int8.md).
    first_step_clips: int = 16

    def __post_init__(self) -> None:
        for name in ("clips", "steps", "every"):
            value = getattr(self, name)
            if name != "clips" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"calibration: `{name}` must be an int >= 1, got {value!r}")
        value = self.first_step_clips
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"calibration: `first_step_clips` must be an int >= 0 (0: no first-step graph), "
                             f"got {value!r}")
        if self.data_seed == 0:
            raise ValueError("calibration: data seed 0 made the training clips; use a held-out seed")

    def for_model(self, config) -> "CalibrationSettings":
        """These settings with the sampler the model is sampled with filled in: a distilled student's own step
        count and sampler (calibrating it on a 25-step trajectory would record inputs it never sees, and its
        sampler refuses step counts its grid does not hold), else 25 DPM-Solver++ steps (the pipeline's)."""
        from ..diffusion.distilled import resolve

        r = resolve(config, self.steps, self.sampler, self.spacing, None, default_steps=25,
                    default_sampler="dpmpp2m", warn=False)
        every = self.every if self.every is not None else max(1, r.steps // 6)
        return replace(self, steps=r.steps, sampler=r.sampler, spacing=r.spacing, every=every)

    def recorded_steps(self) -> list[int]:
        """The sampler steps (0-based calls of the denoiser) whose inputs are recorded."""
        if self.steps is None or self.every is None:
            raise ValueError("calibration: recorded_steps needs resolved settings (CalibrationSettings.for_model)")
        return sorted(set(range(0, self.steps, self.every)) | {self.steps - 1})


@dataclass
class Calibration:
    """Recorded denoiser calls: `inputs[i]` = (v_t, a_t, t_v, t_a), batch = the clips of one sampler call;
    `records[i]` says which task, condition mode and step it came from and its timesteps."""

    settings: CalibrationSettings
    first_step: bool = False       # only the sampler's first call recorded (the first-step graph's set)
    inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # task -> where its inputs came from, where not the clips

    @property
    def samples(self) -> int:
        return sum(x[0].shape[0] for x in self.inputs)

    def timesteps(self) -> dict[str, list[float]]:
        """Task -> the generated modality's timesteps recorded, in order (one per recorded call)."""
        out: dict[str, list[float]] = {}
        for r in self.records:
            key = "t_a" if r["task"] == "v2a" else "t_v"
            out.setdefault(r["task"], []).append(r[key])
        return out

    def feeds(self, batch: int | None) -> list[dict[str, Any]]:
        """The recorded samples as graph feeds (numpy) of `batch` samples each (None: 1, a dynamic graph);
        a last incomplete group is dropped."""
        b = batch or 1
        names = ("v_t", "a_t", "t_v", "t_a")
        flat = [tuple(x[i:i + 1] for x in call) for call in self.inputs for i in range(call[0].shape[0])]
        out = []
        for start in range(0, len(flat) - b + 1, b):
            group = flat[start:start + b]
            out.append({n: torch.cat([s[k] for s in group]).float().numpy() for k, n in enumerate(names)})
        return out

    def describe(self) -> dict:
        """What the manifest records about the calibration set."""
        tasks = sorted({(r["task"], r["condition_mode"]) for r in self.records})
        return {"source": f"held-out synthetic clips (avfast.data.synthetic, data seed {self.settings.data_seed}) "
                          f"sampled by the fp32 model; the denoiser's inputs recorded along the trajectory",
                "settings": {**asdict(self.settings), "tasks": list(self.settings.tasks)},
                "recorded_steps": [0] if self.first_step else self.settings.recorded_steps(),
                "calls": len(self.inputs),
                "samples": self.samples, "tasks": [f"{t} ({m})" for t, m in tasks],
                "timesteps": self.timesteps(), "notes": self.notes}


class _Recorded(Exception):
    """Raised by a `_Recorder` with `stop=True` once it has recorded its last step: the rest of the
    trajectory is not needed."""


class _Recorder:
    """The fp32 denoiser, recording the inputs of the calls whose index is in `steps` (and stopping the
    sampler after the last of them when `stop`)."""

    def __init__(self, denoiser, steps: list[int], calibration: Calibration, task: str, mode: str,
                 stop: bool = False) -> None:
        self.denoiser, self.steps, self.calibration = denoiser, set(steps), calibration
        self.task, self.mode, self.calls, self.stop = task, mode, 0, stop
        self.config = getattr(denoiser, "config", None)
        self.supports_grad = False

    def __call__(self, v_t, a_t, t_v, t_a, labels=None):
        if self.calls in self.steps:
            t_v, t_a = (torch.as_tensor(t, dtype=torch.float32).expand(v_t.shape[0]).clone() for t in (t_v, t_a))
            self.calibration.inputs.append(tuple(x.detach().float().cpu().clone() for x in (v_t, a_t, t_v, t_a)))
            self.calibration.records.append({"task": self.task, "condition_mode": self.mode, "step": self.calls,
                                             "t_v": float(t_v[0]), "t_a": float(t_a[0])})
        self.calls += 1
        if self.stop and self.calls > max(self.steps):
            raise _Recorded
        return self.denoiser(v_t, a_t, t_v, t_a, labels)


def held_out_clips(config, n: int, data_seed: int = CALIBRATION_DATA_SEED) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(video [n, *video_shape] or None for a latent model (no autoencoder here), audio [n, mel, T]) in
    model space: clips 0..n-1 of the synthetic set with seed `data_seed` (SyntheticAVDataset's rule)."""
    from ..data.synthetic import make_clip
    from ..models.codec import audio_to_model, video_to_model

    fit = (config.frames - 6) // 6 + 1
    if fit < 1:
        raise ValueError(f"calibration: synthetic clips need >= 6 frames, the export has {config.frames}")
    videos, audios = [], []
    for i in range(n):
        g = torch.Generator().manual_seed(data_seed * 1_000_003 + i)
        n_events = int(torch.randint(1, min(3, fit) + 1, (1,), generator=g))
        clip = make_clip(duration=config.frames / config.fps, fps=int(config.fps), sample_rate=config.sample_rate,
                         size=config.height if config.video_space == "pixels" else 32, n_events=n_events,
                         kinds="mixed", generator=g)
        if config.video_space == "pixels":
            videos.append(video_to_model(clip.video[None, :, :config.frames], config)[0])
        a = audio_to_model(clip.audio[None], config)[0]
        T = config.audio_length
        a = a[..., :T] if a.shape[-1] >= T else torch.nn.functional.pad(a, (0, T - a.shape[-1]), mode="replicate")
        audios.append(a)
    return (torch.stack(videos) if videos else None), torch.stack(audios)


# The last few calibration sets, by what determines them: exports of one model at several batch sizes
# (export_cached makes one per runtime batch size) sample the held-out clips once.
_CALIBRATION_CACHE: "OrderedDict[tuple, Calibration]" = OrderedDict()
_CALIBRATION_CACHE_SIZE = 4


def collect_calibration(model: torch.nn.Module, frames: int, audio_length: int,
                        settings: CalibrationSettings = CalibrationSettings(), first_step: bool = False) -> Calibration:
    """Samples held-out clips with the fp32 model (eager, fused ops) and records the denoiser's inputs at
    `settings.recorded_steps()` for every task (see the module docstring). `first_step`: the first-step
    graph's set instead: `settings.first_step_clips` clips per task, only the sampler's first call.

    The set depends only on the weights, the config, the shapes and the settings (the sampling is seeded), so
    the last few are kept in memory and a repeat call returns the same object: do not modify it."""
    import json

    from ..models.weights import weights_checksum

    key = (weights_checksum(model.state_dict()), json.dumps(model.config.to_dict(), sort_keys=True, default=str),
           int(frames), int(audio_length), repr(settings), bool(first_step))
    if key in _CALIBRATION_CACHE:
        _CALIBRATION_CACHE.move_to_end(key)
        return _CALIBRATION_CACHE[key]
    calibration = _collect_calibration(model, frames, audio_length, settings, first_step)
    _CALIBRATION_CACHE[key] = calibration
    while len(_CALIBRATION_CACHE) > _CALIBRATION_CACHE_SIZE:
        _CALIBRATION_CACHE.popitem(last=False)
    return calibration


def _collect_calibration(model: torch.nn.Module, frames: int, audio_length: int, settings: CalibrationSettings,
                         first_step: bool) -> Calibration:
    from ..diffusion.sampling import sample
    from ..runtime.torch_runtimes import EagerDenoiser

    cpu_model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    cfg = cpu_model.config.replace(frames=frames, audio_length=audio_length)
    fp32 = EagerDenoiser(cpu_model, "fused")
    settings = settings.for_model(cpu_model.config)
    calibration = Calibration(settings, first_step=first_step)
    clips = settings.first_step_clips if first_step else settings.clips
    if clips < 1:
        raise ValueError("calibration: `first_step_clips` is 0, so there is no first-step graph to calibrate")
    video, audio = held_out_clips(cfg, clips, settings.data_seed)
    steps = [0] if first_step else settings.recorded_steps()
    half = clips // 2
    unknown = [t for t in settings.tasks if t not in ("joint", "v2a", "a2v")]
    if unknown:
        raise ValueError(f"calibration: unknown task {unknown[0]!r}")
    if video is None and "v2a" in settings.tasks:
        # A latent model's export has no frame codec to encode the clips' pixels; its own joint samples of the
        # same clips' seeds end at video latents from the model's distribution, which is what v2a is given.
        video, _ = sample(fp32, task="joint", steps=settings.steps, sampler=settings.sampler,
                          spacing=settings.spacing, seed=settings.seed, batch_size=clips,
                          video_shape=cfg.video_shape, audio_shape=cfg.audio_shape, progress=False)
        calibration.notes["v2a"] = "condition: the video latents of the fp32 model's joint samples (latent model)"
    for task in settings.tasks:
        parts = ([("replace", 0, clips)] if task == "joint" else
                 [(m, a, b) for m, a, b in (("clean", 0, clips - half), ("replace", clips - half, clips)) if b > a])
        for mode, lo, hi in parts:
            condition = None if task == "joint" else (video if task == "v2a" else audio)[lo:hi]
            recorder = _Recorder(fp32, steps, calibration, task, mode, stop=first_step)
            try:
                sample(recorder, task=task, condition=condition, steps=settings.steps, sampler=settings.sampler,
                       spacing=settings.spacing, seed=settings.seed + lo, batch_size=hi - lo, condition_mode=mode,
                       video_shape=cfg.video_shape, audio_shape=cfg.audio_shape, progress=False)
            except _Recorded:
                pass
    return calibration


def first_step_t_min(calibration: Calibration) -> float:
    """The smallest max(t_v, t_a) of a first-step calibration set: runtimes send calls at or above it to the
    first-step graph (the sampler's first call has the largest timesteps of its trajectory)."""
    if not calibration.first_step or not calibration.records:
        raise ValueError("first_step_t_min: needs a first-step calibration set (collect_calibration(first_step=True))")
    return min(max(r["t_v"], r["t_a"]) for r in calibration.records)


# --------------------------------------------------------------------------------- the graph's groups
def _scopes(node) -> list[str]:
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def node_group(node) -> str | None:
    """The GROUPS entry an ONNX node of the exported U-Net belongs to, from its module path; None: others."""
    mods = [s for s in _scopes(node) if s.startswith("model.")]
    last = mods[-1] if mods else ""
    if any(m in ("model.stem_v", "model.stem_a") for m in mods):
        return "stem"
    if any(m in ("model.time_v", "model.time_a") for m in mods):
        return "time_mlp"
    if last.endswith(".emb") and ".res_" in last:
        return "time_proj"
    if any(m.startswith(("model.out_v", "model.out_a")) for m in mods):
        return "output"
    if any(".fusion" in m for m in mods):
        return "fusion"
    if node.op_type == "MatMul" and any(".attn_" in m for m in mods):
        return "attention"
    return None


def group_nodes(model, spread: dict[str, float] | None = None) -> dict[str, list[str]]:
    """GROUPS name -> the names of its compute nodes (Conv/MatMul/Gemm) in the ONNX `model`; "wide_range"
    from `spread` (node -> input range spread, `activation_spread`) when given."""
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for node in model.graph.node:
        if node.op_type in _COMPUTE_OPS:
            g = node_group(node)
            if g is not None:
                out[g].append(node.name)
    out["wide_range"] = sorted(n for n, s in (spread or {}).items() if s > WIDE_RANGE)
    return out


def activation_spread(path: str | Path, calibration: Calibration, batch: int | None) -> dict[str, float]:
    """Compute node -> how much its activation inputs' range varies over the calibration samples: the
    largest per-sample max |x| over the median one (ONNX Runtime, fp32 graph, every calibration feed)."""
    import numpy as np

    onnx = require("onnx", "int8 quantisation")
    ort = require("onnxruntime", "int8 quantisation")
    model = onnx.load(str(path))
    weights = {i.name for i in model.graph.initializer}
    inputs: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in _COMPUTE_OPS:
            for x in node.input[:2]:
                if x and x not in weights:
                    inputs.setdefault(x, []).append(node.name)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(x) for x in inputs if x not in have)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = list(inputs)
    amax = np.array([[float(np.abs(o).max()) for o in session.run(names, feed)] for feed in calibration.feeds(batch)])
    ratio = amax.max(0) / np.maximum(np.median(amax, 0), 1e-12)
    spread: dict[str, float] = {}
    for name, r in zip(names, ratio):
        for node in inputs[name]:
            spread[node] = max(spread.get(node, 0.0), float(r))
    return spread


# --------------------------------------------------------------------------------- quantisation
@dataclass
class QuantizeOptions:
    keep_float: tuple[str, ...] = KEEP_FLOAT
    preset: str = "performance"            # NNCF preset: symmetric int8 activations (mixed: asymmetric)
    fast_bias_correction: bool = True
    float_op_types: tuple[str, ...] = FLOAT_OP_TYPES


def quantize_onnx(src: str | Path, dst: str | Path, calibration: Calibration, batch: int | None,
                  options: QuantizeOptions = QuantizeOptions(), progress: bool = True) -> dict:
    """NNCF post-training quantisation of the fp32 ONNX at `src` into the QDQ ONNX at `dst`. Returns what
    the manifest records (tool, settings, float groups and their nodes, quantised-op counts). progress=False
    also silences NNCF's own progress bars (rich, on stdout; NNCF has no switch for them)."""
    onnx = require("onnx", "int8 quantisation")
    nncf = require("nncf", "int8 quantisation", extra="int8")
    model = onnx.load(str(src))
    spread = activation_spread(src, calibration, batch) if "wide_range" in options.keep_float else None
    groups = group_nodes(model, spread)
    unknown = [g for g in options.keep_float if g not in GROUPS]
    if unknown:
        raise ValueError(f"int8: unknown layer group(s) {unknown}; groups are {', '.join(GROUPS)}")
    ignored = sorted(n for g in options.keep_float for n in groups[g])
    feeds = calibration.feeds(batch)
    if not feeds:
        raise ValueError(f"int8: the calibration set has {calibration.samples} samples, fewer than the graph's "
                         f"batch {batch}")
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[options.preset]
    import logging

    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=preset, subset_size=len(feeds),
                                      fast_bias_correction=options.fast_bias_correction,
                                      ignored_scope=nncf.IgnoredScope(names=ignored,
                                                                      types=list(options.float_op_types),
                                                                      validate=False))
    finally:
        nncf_log.setLevel(level)
    from .graph import EXTERNAL_DATA_BYTES

    big = sum(t.ByteSize() for t in quantized.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save(quantized, str(dst), save_as_external_data=big, location=Path(dst).name + ".data" if big else None)
    return {"tool": f"nncf {nncf.__version__} post-training quantisation, ONNX backend (QuantizeLinear/"
                    f"DequantizeLinear pairs)", "preset": options.preset,
            "fast_bias_correction": options.fast_bias_correction, "calibration_feeds": len(feeds),
            "kept_float": {g: {"why": GROUPS[g], "nodes": len(groups[g])} for g in options.keep_float},
            "float_op_types": list(options.float_op_types),
            "external_data": Path(dst).name + ".data" if big else None}


def int8_stats(path: str | Path) -> dict:
    """Counts of quantised ops and of compute layers (Conv/MatMul/Gemm) with int8 inputs in the ONNX at
    `path`: a layer is int8 when its first input (activation) comes from a DequantizeLinear."""
    onnx = require("onnx", "checking an int8 graph")
    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    ops = Counter(n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS)
    compute = [n for n in model.graph.node if n.op_type in _COMPUTE_OPS or n.op_type.startswith("QLinear")]
    int8 = [n for n in compute if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")
            or (n.input and n.input[0] in producer and producer[n.input[0]].op_type == "DequantizeLinear")]
    return {"quantized_ops": dict(sorted(ops.items())), "compute_layers": len(compute), "int8_layers": len(int8),
            "float_layers": [n.name for n in compute if n not in int8]}


def check_int8_graph(path: str | Path) -> dict:
    """Raises GraphCheckError unless the graph really computes in int8 (quantised ops, and most compute
    layers fed by them); returns `int8_stats`."""
    stats = int8_stats(path)
    if not stats["quantized_ops"] or stats["int8_layers"] == 0:
        raise GraphCheckError(f"{Path(path).name} is not an int8 graph: it has no quantised ops "
                              f"({', '.join(QUANTIZED_OPS[:4])}) feeding its {stats['compute_layers']} "
                              f"Conv/MatMul/Gemm layers")
    if stats["int8_layers"] < stats["compute_layers"] / 2:
        raise GraphCheckError(f"{Path(path).name} runs only {stats['int8_layers']} of its {stats['compute_layers']} "
                              f"Conv/MatMul/Gemm layers in int8: not an int8 graph")
    return stats
