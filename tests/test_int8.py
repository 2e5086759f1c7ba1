"""Int8 (avfast.export.int8) and `precision=` on every runtime: the calibration records the timesteps it says
it does; an int8 export holds its parity bound on ONNX Runtime and OpenVINO and really runs int8; a graph
without int8 ops does not pass as int8; each runtime runs the precision asked for or refuses it by name."""
from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch

from _exported import have, requires_onnx, tiny_export, tiny_model

requires_nncf = pytest.mark.skipif(not have("nncf"), reason="nncf is not installed (pip install \"avfast[int8]\")")
requires_openvino = pytest.mark.skipif(not have("openvino"),
                                       reason="openvino is not installed (pip install \"avfast[openvino]\")")
FRAMES, AUDIO = 6, 37   # the smallest clip the synthetic held-out set draws (events need 6 frames)


def _settings(**kw):
    from avfast.export.int8 import CalibrationSettings

    return CalibrationSettings(**{"clips": 2, "steps": 5, "every": 2, **kw})


# ------------------------------------------------------------------ calibration data
def test_calibration_records_the_timesteps_it_says():
    from avfast.diffusion.timesteps import timestep_grid
    from avfast.export.int8 import collect_calibration

    settings = _settings()
    assert settings.recorded_steps() == [0, 2, 4]
    cal = collect_calibration(tiny_model(), FRAMES, AUDIO, settings)
    grid = timestep_grid(settings.steps, 1000, settings.spacing)
    expected = [float(grid[s]) for s in settings.recorded_steps()]
    # joint: one call of 2 clips; v2a and a2v: 1 clip with a clean condition + 1 forward-noised
    assert [(r["task"], r["condition_mode"]) for r in cal.records[::3]] == [
        ("joint", "replace"), ("v2a", "clean"), ("v2a", "replace"), ("a2v", "clean"), ("a2v", "replace")]
    for r in cal.records:
        generated, given = ("t_a", "t_v") if r["task"] == "v2a" else ("t_v", "t_a")
        assert r[generated] == expected[settings.recorded_steps().index(r["step"])]
        assert r[given] == (0.0 if r["condition_mode"] == "clean" else r[generated])
    assert cal.timesteps()["joint"] == expected and len(expected) == 3 and len(set(expected)) == 3
    assert cal.samples == 3 * 2 * 3 and len(cal.feeds(None)) == 18 and len(cal.feeds(4)) == 4
    for (v, a, t_v, t_a), r in zip(cal.inputs, cal.records):
        assert v.shape[1:] == (3, FRAMES, 32, 32) and a.shape[1:] == (80, AUDIO)
        assert torch.all(t_v == r["t_v"]) and torch.all(t_a == r["t_a"])
    described = cal.describe()
    assert described["recorded_steps"] == [0, 2, 4] and described["samples"] == 18
    assert "data seed 3" in described["source"]


def test_calibration_is_recorded_once_per_model_shapes_and_settings(monkeypatch):
    """Exports of one model at several batch sizes share one calibration set; other weights, shapes or
    settings record their own."""
    import avfast.diffusion.sampling as sampling
    from avfast.export.int8 import collect_calibration

    calls = []
    real = sampling.sample
    monkeypatch.setattr(sampling, "sample", lambda *a, **k: (calls.append(k["task"]), real(*a, **k))[1])
    model, settings = tiny_model(), _settings(tasks=("joint",))
    first = collect_calibration(model, FRAMES, AUDIO, settings)
    assert calls == ["joint"]
    assert collect_calibration(model, FRAMES, AUDIO, settings) is first and calls == ["joint"]
    assert collect_calibration(model, FRAMES, AUDIO, _settings(tasks=("joint",), seed=1)) is not first
    assert collect_calibration(model, FRAMES + 1, AUDIO, settings) is not first
    assert collect_calibration(model, FRAMES, AUDIO, settings, first_step=True) is not first
    assert len(calls) == 4
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    changed = collect_calibration(model, FRAMES, AUDIO, settings)
    assert changed is not first and len(calls) == 5
    assert not torch.equal(changed.inputs[-1][0], first.inputs[-1][0])   # the new weights' own trajectory


def test_a_distilled_student_is_calibrated_on_its_own_step_grid():
    """A student refuses step counts its grid does not hold; its calibration follows its distilled sampler."""
    from avfast.diffusion.timesteps import timestep_grid
    from avfast.export.int8 import CalibrationSettings, collect_calibration

    student = tiny_model()
    student.config = student.config.replace(distilled_steps=4, distilled_sampler="ddim")
    cal = collect_calibration(student, FRAMES, AUDIO, CalibrationSettings(clips=2, tasks=("joint",)))
    assert (cal.settings.steps, cal.settings.sampler, cal.settings.recorded_steps()) == (4, "ddim", [0, 1, 2, 3])
    assert cal.timesteps()["joint"] == [float(t) for t in timestep_grid(4, 1000, "trailing")[:4]]  # 4 calls: T .. T/4
    teacher = CalibrationSettings().for_model(tiny_model().config)
    assert (teacher.steps, teacher.sampler, teacher.recorded_steps()) == (25, "dpmpp2m", [0, 4, 8, 12, 16, 20, 24])
    with pytest.raises(ValueError, match="not divisible by the 4"):
        CalibrationSettings(steps=25).for_model(student.config)


def test_a_latent_models_v2a_is_calibrated_on_its_own_joint_video_latents():
    from avfast.export.int8 import collect_calibration
    from avfast.models import create

    torch.manual_seed(0)
    latent = create("tiny-latent", base_channels=16, audio_base_channels=16, head_dim=8, norm_groups=4).eval()
    cfg = latent.config
    settings = _settings(steps=3, every=3)
    cal = collect_calibration(latent, cfg.frames, cfg.audio_length, settings)
    tasks = {r["task"] for r in cal.records}
    assert tasks == {"joint", "v2a", "a2v"} and "latent" in cal.describe()["notes"]["v2a"]
    clean_v2a = [x for x, r in zip(cal.inputs, cal.records) if r["task"] == "v2a" and r["condition_mode"] == "clean"]
    assert clean_v2a and all(v.shape[1:] == cfg.video_shape for v, *_ in clean_v2a)
    # the clean condition is a generated latent clip: finite, not the noise it started from, not zero
    v = clean_v2a[0][0]
    assert torch.isfinite(v).all() and v.abs().mean() > 0.05


def test_the_first_step_set_records_only_the_first_call_of_more_clips():
    """The first-step graph's calibration: `first_step_clips` clips per task, the sampler's first call only
    (stopped there), at the grid's first timestep; t_min is that timestep."""
    from avfast.diffusion.timesteps import timestep_grid
    from avfast.export.int8 import collect_calibration, first_step_t_min

    settings = _settings(first_step_clips=3)
    cal = collect_calibration(tiny_model(), FRAMES, AUDIO, settings, first_step=True)
    first = float(timestep_grid(settings.steps, 1000, settings.spacing)[0])
    assert cal.first_step and {r["step"] for r in cal.records} == {0}
    assert cal.samples == 3 * 3   # 3 clips x joint, v2a, a2v
    for r in cal.records:
        generated, given = ("t_a", "t_v") if r["task"] == "v2a" else ("t_v", "t_a")
        assert r[generated] == first and r[given] == (0.0 if r["condition_mode"] == "clean" else first)
    assert first_step_t_min(cal) == first and cal.describe()["recorded_steps"] == [0]
    with pytest.raises(ValueError, match="needs a first-step calibration set"):
        first_step_t_min(collect_calibration(tiny_model(), FRAMES, AUDIO, _settings(tasks=("joint",))))
    with pytest.raises(ValueError, match="`first_step_clips` must be an int >= 0"):
        _settings(first_step_clips=-1)


def test_calibration_refuses_the_training_seed():
    with pytest.raises(ValueError, match="data seed 0 made the training clips"):
        _settings(data_seed=0)


# ------------------------------------------------------------------ an int8 export
@functools.cache
def _int8_export():
    """(model, manifest, path) of a tiny int8 export at 6 frames, through the command's pipeline."""
    import tempfile
    from pathlib import Path

    from avfast.export.pipeline import ExportOptions, run_export

    model = tiny_model()
    out = Path(tempfile.mkdtemp(prefix="avfast-int8-test-"))
    import atexit

    atexit.register(shutil.rmtree, out, ignore_errors=True)
    result = run_export(model, ExportOptions(out=out, name="tiny-int8", frames=FRAMES, audio_length=AUDIO,
                                             precision="int8", bench_calls=1, runtimes=(), progress=False,
                                             calibration=_settings(steps=8, every=2, first_step_clips=4)))
    return model, result.manifest, out / "tiny-int8.onnx"


@requires_onnx
@requires_nncf
@pytest.mark.slow
def test_int8_export_is_int8_and_holds_its_parity_bound():
    from avfast.export import BOUNDS
    from avfast.export.int8 import KEEP_FLOAT, check_int8_graph

    _, m, path = _int8_export()
    assert m["precision"] == "int8"
    q = m["quantization"]
    assert q["calibration"]["recorded_steps"] == [0, 2, 4, 6, 7] and q["calibration"]["samples"] == 3 * 2 * 5
    assert set(q["kept_float"]) == set(KEEP_FLOAT)
    stats = check_int8_graph(path)
    assert stats["int8_layers"] == q["graph"]["int8_layers"] > stats["compute_layers"] / 2
    assert m["operators"]["QuantizeLinear"] > 0 and m["operators"]["DequantizeLinear"] > 0
    runtimes = ["onnxruntime"] + (["openvino"] if have("openvino") else [])
    for name in runtimes:
        p = m["parity"][name]
        assert p["passed"] and p["bound"] == BOUNDS["int8"] and p["worst_relative"] <= BOUNDS["int8"]
        # really quantised: far from fp32 agreement
        assert p["worst_relative"] > 10 * BOUNDS["fp32"], p
    # the first-step graph: its own file, calibrated on the first call of 4 clips per task, within the bound at T
    first = q["first_step"]
    assert first["onnx"] == "tiny-int8.first-step.onnx" and (path.parent / first["onnx"]).is_file()
    assert first["calibration"]["recorded_steps"] == [0] and first["calibration"]["samples"] == 3 * 4
    assert first["t_min"] == 1000.0
    assert check_int8_graph(path.parent / first["onnx"])["int8_layers"] == first["graph"]["int8_layers"] > 0
    for name in runtimes:
        p = first["parity"][name]
        assert p["passed"] and p["worst_relative"] <= BOUNDS["int8"] and p["worst_relative"] > 10 * BOUNDS["fp32"], p


@requires_onnx
@requires_nncf
@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_calls_at_the_first_step_run_the_first_step_graph(name, tmp_path):
    if name == "openvino" and not have("openvino"):
        pytest.skip("openvino is not installed (pip install \"avfast[openvino]\")")
    from avfast.runtime import load

    _, m, path = _int8_export()
    first_file = path.parent / m["quantization"]["first_step"]["onnx"]
    routed, main, first = load(name, path), load(name, path, first_step=False), load(name, first_file,
                                                                                     first_step=False)
    assert routed.first_step is not None and routed.first_step_t_min == 1000.0 and main.first_step is None
    g = torch.Generator().manual_seed(5)
    v, a = torch.randn(1, 3, FRAMES, 32, 32, generator=g), torch.randn(1, 80, AUDIO, generator=g)
    for t_v, t_a, expected in ((1000.0, 1000.0, first), (0.0, 1000.0, first), (1000.0, 0.0, first),
                               (750.0, 750.0, main), (999.0, 999.0, main)):
        got, want, other = routed(v, a, t_v, t_a), expected(v, a, t_v, t_a), (main if expected is first else first)(
            v, a, t_v, t_a)
        for x, y, z in zip(got, want, other):
            assert torch.equal(x, y), (t_v, t_a)
            assert not torch.equal(x, z)   # the two graphs differ: the routing is observable
    # a manifest naming a first-step graph that is not there: one clear error
    for f in (path, path.with_suffix(".json")):
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError, match="first-step graph tiny-int8.first-step.onnx that is not there"):
        load(name, tmp_path / path.name)


@requires_onnx
@requires_nncf
@requires_openvino
@pytest.mark.slow
def test_openvino_runs_the_int8_export_on_int8_kernels():
    from avfast.export import BOUNDS
    from avfast.runtime import load

    from avfast.runtime.ov import int8_float_precision

    model, _, path = _int8_export()
    g = torch.Generator().manual_seed(11)
    v, a = torch.randn(1, 3, FRAMES, 32, 32, generator=g), torch.randn(1, 80, AUDIO, generator=g)
    with torch.no_grad():
        ref_v, ref_a = model(v, a, 400.0, 400.0)
    # the default (float layers at int8_float_precision(): bf16 on a bf16 CPU) and f32 float layers
    for precision, expected in ((None, int8_float_precision()), ("fp32", "fp32")):
        rt = load("openvino", path, precision=precision)
        assert rt.inference_precision == expected
        hint = rt.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        assert hint == {"fp32": "f32", "bf16": "bf16"}[expected], hint
        assert rt.int8_layers["int8_layers"] > rt.int8_layers["compute_layers"] / 2, rt.int8_layers
        out_v, out_a = rt(v, a, 400.0, 400.0)
        assert out_v.dtype == torch.float32
        for o, r in ((out_v, ref_v), (out_a, ref_a)):
            assert (o - r).abs().max() <= BOUNDS["int8"] * r.abs().max()


@requires_openvino
def test_int8_float_layers_default_to_bf16_only_where_the_cpu_computes_bf16():
    from avfast.runtime.ov import int8_float_precision

    class Core:  # OpenVINO's Core as far as the choice reads it
        def __init__(self, caps):
            self.caps = caps

        def get_property(self, device, name):
            assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
            return self.caps

    assert int8_float_precision(Core(["FP32", "BF16", "INT8"])) == "bf16"
    assert int8_float_precision(Core(["FP32", "INT8"])) == "fp32"
    assert int8_float_precision() in ("bf16", "fp32")


@requires_onnx
def test_a_float_graph_does_not_pass_as_int8(tmp_path):
    from avfast.export import GraphCheckError
    from avfast.export.int8 import check_int8_graph

    _, path = tiny_export()
    with pytest.raises(GraphCheckError, match="not an int8 graph"):
        check_int8_graph(path)


@requires_onnx
@requires_openvino
def test_openvino_refuses_an_int8_manifest_on_a_float_graph(tmp_path):
    """A manifest that says int8 over a graph without quantised ops: the compiled model runs no int8 layer."""
    from avfast.runtime import load
    from avfast.runtime.manifest import read_manifest

    _, path = tiny_export()
    fake = tmp_path / "fake-int8.onnx"
    shutil.copy(path, fake)
    (tmp_path / "fake-int8.json").write_text(json.dumps({**read_manifest(path), "precision": "int8"}))
    with pytest.raises(ValueError, match="runs none of its"):
        load("openvino", fake)


@requires_onnx
def test_create_refuses_a_file_exported_in_another_precision():
    from avfast.runtime import create

    _, path = tiny_export()
    with pytest.raises(ValueError, match="needs a int8 export; .* was exported in fp32"):
        create("onnxruntime", path=path, precision="int8")


# ------------------------------------------------------------------ precision= on every runtime
def _pairs(supported: bool):
    from avfast._precision import PRECISIONS
    from avfast.runtime import NAMES, RUNTIME_PRECISIONS

    return [(n, p) for n in NAMES for p in PRECISIONS if (p in RUNTIME_PRECISIONS[n]) == supported]


@pytest.mark.parametrize("name, precision", _pairs(supported=False))
def test_a_precision_a_runtime_does_not_run_is_refused_naming_what_it_runs(name, precision):
    from avfast.runtime import RUNTIME_PRECISIONS, create

    with pytest.raises(ValueError, match=rf"cannot run precision '{precision}'.*it runs "
                                         rf"{', '.join(RUNTIME_PRECISIONS[name])}"):
        create(name, torch.nn.Linear(1, 1), precision=precision)  # refused before any model check or export


def test_every_runtime_runs_fp32_and_int8_runs_somewhere():
    from avfast._precision import PRECISIONS
    from avfast.runtime import RUNTIME_PRECISIONS

    assert all("fp32" in p for p in RUNTIME_PRECISIONS.values())
    assert all(any(p in runs for runs in RUNTIME_PRECISIONS.values()) for p in PRECISIONS)


@pytest.mark.parametrize("name", ["eager-reference", "eager-fused"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_runtimes_compute_in_the_precision_asked(name, precision):
    """Autocast takes effect: fp32 outputs (the sampler's state dtype) that differ from the fp32 run by more
    than the fp32 bound and less than the precision's."""
    from avfast.export import BOUNDS
    from avfast.runtime import create

    model = tiny_model()
    g = torch.Generator().manual_seed(2)
    v, a = torch.randn(1, 3, 2, 32, 32, generator=g), torch.randn(1, 80, 8, generator=g)
    with torch.no_grad():
        ref = create(name, model)(v, a, 300.0, 600.0)
        rt = create(name, model, precision=precision)
        out = rt(v, a, 300.0, 600.0)
    assert rt.precision == precision
    for o, r in zip(out, ref):
        assert o.dtype == torch.float32
        err = ((o - r).abs().max() / r.abs().max()).item()
        assert BOUNDS["fp32"] < err <= BOUNDS[precision], err


def test_compile_runtime_takes_the_precision():
    from avfast.runtime import create

    rt = create("compile", tiny_model(), precision="bf16")  # compiles lazily, on the first call
    assert rt.precision == "bf16" and rt.autocast == torch.bfloat16
    assert create("compile", tiny_model()).autocast is None


def test_pytorch_denoisers_refuse_int8_naming_the_runtimes_that_run_it():
    from avfast._precision import in_precision
    from avfast.runtime.torch_runtimes import EagerDenoiser

    with pytest.raises(ValueError, match="cannot run precision 'int8'; it runs fp32, bf16, fp16"):
        EagerDenoiser(tiny_model(), "fused", precision="int8")
    with pytest.raises(ValueError, match="runtime 'openvino' or 'onnxruntime'"):
        in_precision(tiny_model(), "int8")


@requires_nncf
@pytest.mark.parametrize("progress", [True, False])
def test_quantisation_without_progress_silences_nncfs_own_bars(progress, tmp_path, monkeypatch, capsys):
    # NNCF draws rich progress bars on stdout and has no switch for them; --no-progress must hide them too.
    # NNCF's work is replaced by a stand-in that draws like it: what is under test is quantize_onnx's wrapper.
    import nncf
    import onnx
    from onnx import TensorProto, helper

    from avfast.export.int8 import QuantizeOptions, quantize_onnx

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    src = tmp_path / "f.onnx"
    onnx.save(helper.make_model(graph), str(src))

    def drawing_quantize(model, *args, **kwargs):
        print("Statistics collection ━━━━━━━━━━ 100% 48/48")
        return model

    class OneFeed:
        samples = 1

        def feeds(self, batch):
            return [{"x": np.zeros((1, 2), np.float32)}]

    monkeypatch.setattr(nncf, "quantize", drawing_quantize)
    quantize_onnx(src, tmp_path / "q.onnx", OneFeed(), 1, QuantizeOptions(keep_float=()), progress=progress)
    assert ("Statistics collection" in capsys.readouterr().out) == progress
    assert (tmp_path / "q.onnx").is_file()
