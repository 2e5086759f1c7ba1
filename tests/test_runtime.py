"""avfast.runtime: every runtime has the denoiser signature; the exported ones check their inputs and
refuse reconstruction guidance; DDIM on ONNX Runtime equals DDIM on PyTorch for the same seed."""
from __future__ import annotations

import sys

import pytest
import torch

from _exported import AUDIO_LENGTH, FRAMES, have, requires_onnx, tiny_export, tiny_model

HAS_CUDA = torch.cuda.is_available()


def _inputs(B=1, frames=FRAMES, audio=AUDIO_LENGTH, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, frames, 32, 32, generator=g), torch.randn(B, 80, audio, generator=g)


# ------------------------------------------------------------------ registry and optional packages
def test_create_names_and_errors():
    from avfast import runtime

    assert set(runtime.NAMES) == {"eager-reference", "eager-fused", "compile", "onnxruntime", "onnxruntime-cuda",
                                  "tensorrt", "openvino"}
    with pytest.raises(ValueError, match="unknown runtime 'onnx-turbo'"):
        runtime.create("onnx-turbo")
    with pytest.raises(ValueError, match="pass `model`"):
        runtime.create("eager-fused")
    with pytest.raises(ValueError, match="needs `path`"):
        runtime.create("onnxruntime")
    with pytest.raises(TypeError, match="must be a JointUNet"):
        runtime.create("eager-fused", torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name, module, extra", [("tensorrt", "tensorrt", "tensorrt"),
                                                  ("openvino", "openvino", "openvino"),
                                                  ("onnxruntime", "onnxruntime", "ort")])
def test_missing_package_names_the_extra(monkeypatch, tmp_path, name, module, extra):
    from avfast import runtime

    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail like a missing package
    with pytest.raises(runtime.RuntimeUnavailable, match=rf'pip install "avfast\[{extra}\]"'):
        runtime.load(name, tmp_path / "x.onnx")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without a CUDA GPU")
@pytest.mark.skipif(not have("onnxruntime"), reason="onnxruntime is not installed (pip install \"avfast[ort]\")")
def test_cuda_runtime_without_a_gpu_says_so(tmp_path):
    from avfast import runtime

    with pytest.raises(runtime.RuntimeUnavailable, match="needs a CUDA GPU"):
        runtime.load("onnxruntime-cuda", tmp_path / "x.onnx")


# ------------------------------------------------------------------ torch runtimes
def test_eager_reference_and_fused_agree_and_support_grad():
    from avfast.runtime import create

    model = tiny_model()
    ref, fused = create("eager-reference", model), create("eager-fused", model)
    assert ref.supports_grad and fused.supports_grad and ref.name == "eager-reference"
    v, a = _inputs(frames=2, audio=8)
    with torch.no_grad():
        (rv, ra), (fv, fa) = ref(v, a, 300.0, 700.0), fused(v, a, 300.0, 700.0)
    # two implementations of the same fp32 function: summation-order differences only
    assert (rv - fv).abs().max() <= 1e-4 * rv.abs().max() and (ra - fa).abs().max() <= 1e-4 * ra.abs().max()


# ------------------------------------------------------------------ ONNX Runtime (CPU)
@requires_onnx
@pytest.mark.slow
def test_onnxruntime_checks_its_inputs():
    from avfast.runtime import load

    _, path = tiny_export()
    rt = load("onnxruntime", path)
    assert rt.name == "onnxruntime" and rt.supports_grad is False
    assert rt.config.frames == FRAMES and rt.config.audio_length == AUDIO_LENGTH  # shapes for avfast.sample
    v, a = _inputs()
    with pytest.raises(ValueError, match="built for batch 1, got batch 2"):
        rt(torch.cat([v, v]), torch.cat([a, a]), 1.0, 1.0)
    with pytest.raises(ValueError, match=rf"`v_t` of shape \[B, 3, {FRAMES}, 32, 32\]"):
        rt(torch.randn(1, 3, FRAMES + 1, 32, 32), a, 1.0, 1.0)
    with pytest.raises(ValueError, match="no label conditioning"):
        rt(v, a, 1.0, 1.0, labels=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1000\]"):
        rt(v, a, 1001.0, 1.0)
    with pytest.raises(TypeError, match="floating-point tensor"):
        rt(v.long(), a, 1.0, 1.0)


@requires_onnx
@pytest.mark.slow
def test_onnxruntime_outputs_are_fresh_tensors_each_call():
    """IO binding writes into tensors allocated per call: a kept prediction is not overwritten by the next."""
    from avfast.runtime import load

    model, path = tiny_export()
    rt = load("onnxruntime", path)
    v1, a1 = _inputs(seed=1)
    v2, a2 = _inputs(seed=2)
    first = rt(v1, a1, 500.0, 500.0)
    kept = [x.clone() for x in first]
    second = rt(v2, a2, 200.0, 800.0)
    assert all(torch.equal(k, f) for k, f in zip(kept, first))
    assert not torch.allclose(first[0], second[0])
    with torch.no_grad():
        ref_v, ref_a = model(v2, a2, 200.0, 800.0)
    assert (second[0] - ref_v).abs().max() <= 1e-4 * ref_v.abs().max()
    assert (second[1] - ref_a).abs().max() <= 1e-4 * ref_a.abs().max()


@requires_onnx
@pytest.mark.slow
def test_create_reuses_the_cached_export():
    from avfast.export import create_runtime

    model, path = tiny_export()
    rt = create_runtime("onnxruntime", model, frames=FRAMES, audio_length=AUDIO_LENGTH, cache_dir=path.parent)
    assert rt.path == path  # same weights and options: no second export


@requires_onnx
@pytest.mark.slow
def test_runtime_create_exporting_on_demand_is_deprecated_but_works():
    from avfast.runtime import create

    model, path = tiny_export()
    with pytest.warns(DeprecationWarning, match="avfast.export.create_runtime"):
        rt = create("onnxruntime", model, frames=FRAMES, audio_length=AUDIO_LENGTH, cache_dir=path.parent)
    assert rt.path == path


def _ddim(denoiser, **kw):
    import avfast

    shapes = dict(video_shape=(3, FRAMES, 32, 32), audio_shape=(80, AUDIO_LENGTH))
    return avfast.diffusion.sample(denoiser, steps=STEPS, sampler="ddim", seed=3, progress=False, **shapes, **kw)


STEPS = 4


@requires_onnx
@pytest.mark.slow
@pytest.mark.parametrize("task", ["joint", "v2a"])
def test_ddim_on_onnxruntime_equals_ddim_on_torch(task):
    """Same seed, same noise: each step adds at most one denoiser call's error (<= 1e-4 of the output's
    scale, the fp32 parity bound) times the step's velocity coefficient (|c_v| <= 1), and DDIM's state
    coefficient is <= 1, so after STEPS steps the difference stays below STEPS x 1e-4 of the output's scale."""
    from avfast.runtime import load

    pytest.importorskip("avfast.sample", reason="avfast.sample (the sampler issue) is not in this tree")
    model, path = tiny_export()
    rt = load("onnxruntime", path)
    condition = _inputs(seed=9)[0][0] if task == "v2a" else None
    kw = dict(task=task, condition=condition)
    ref_v, ref_a = _ddim(model, **kw)
    got_v, got_a = _ddim(rt, **kw)
    for got, ref in ((got_v, ref_v), (got_a, ref_a)):
        assert got.shape == ref.shape
        assert (got - ref).abs().max() <= STEPS * 1e-4 * ref.abs().max()
    if task == "v2a":
        assert torch.equal(got_v, ref_v)  # the condition comes back as given


@requires_onnx
@pytest.mark.slow
def test_reconstruction_guidance_needs_a_torch_runtime():
    from avfast.runtime import load

    pytest.importorskip("avfast.sample", reason="avfast.sample (the sampler issue) is not in this tree")
    _, path = tiny_export()
    with pytest.raises(ValueError, match="supports_grad = False"):
        _ddim(load("onnxruntime", path), task="v2a", condition=_inputs()[0][0], guidance=1.0)


# ------------------------------------------------------------------ GPU runtimes
def _need(module: str, extra: str):
    if not have(module):
        pytest.skip(f"{module} is not installed (pip install \"avfast[{extra}]\")")
    if not HAS_CUDA:
        pytest.skip("needs a CUDA GPU (none visible to torch here)")


@requires_onnx
@pytest.mark.gpu
def test_onnxruntime_cuda_io_binding_matches_torch():
    _need("onnxruntime", "ort-gpu")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA execution provider (pip install \"avfast[ort-gpu]\")")
    from avfast.runtime import load

    model, path = tiny_export()
    rt = load("onnxruntime-cuda", path)
    v, a = _inputs()
    out_v, out_a = rt(v.cuda(), a.cuda(), 400.0, 600.0)
    assert out_v.is_cuda and out_a.is_cuda  # bound device memory: no host round trip
    with torch.no_grad():  # the reference on the CPU: cuDNN would use TF32 for torch's convolutions
        ref_v, ref_a = model(v, a, 400.0, 600.0)
    assert (out_v.cpu() - ref_v).abs().max() <= 1e-4 * ref_v.abs().max()
    assert (out_a.cpu() - ref_a).abs().max() <= 1e-4 * ref_a.abs().max()


@requires_onnx
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [True, False], ids=["cuda-graph", "plain"])
def test_tensorrt_engine_matches_torch(tmp_path, cuda_graph):
    _need("tensorrt", "tensorrt")
    from avfast.runtime.trt import TensorRTDenoiser, build_engine

    model, path = tiny_export()
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(build_engine(path, workspace_gib=1))
    rt = TensorRTDenoiser(engine, cuda_graph=cuda_graph)
    assert rt.cuda_graph is cuda_graph and rt.supports_grad is False
    for seed in (0, 1):  # a second call replays the captured graph with new inputs
        v, a = _inputs(seed=seed)
        out_v, out_a = rt(v.cuda(), a.cuda(), 300.0, 700.0)
        with torch.no_grad():  # the reference on the CPU: cuDNN would use TF32 for torch's convolutions
            ref_v, ref_a = model(v, a, 300.0, 700.0)
        # an fp32 engine (build_engine turns TensorRT's TF32 off) holds the fp32 parity bound
        assert (out_v.cpu() - ref_v).abs().max() <= 1e-4 * ref_v.abs().max()
        assert (out_a.cpu() - ref_a).abs().max() <= 1e-4 * ref_a.abs().max()


# ------------------------------------------------------------------ OpenVINO (optional)
requires_openvino = pytest.mark.skipif(not have("openvino"),
                                       reason="openvino is not installed (pip install \"avfast[openvino]\")")


@requires_onnx
@requires_openvino
@pytest.mark.slow
def test_openvino_matches_torch():
    from avfast.runtime import load

    model, path = tiny_export()
    rt = load("openvino", path)
    assert rt.name == "openvino" and rt.supports_grad is False
    v, a = _inputs(seed=4)
    out_v, out_a = rt(v, a, 250.0, 750.0)
    with torch.no_grad():
        ref_v, ref_a = model(v, a, 250.0, 750.0)
    assert (out_v - ref_v).abs().max() <= 1e-4 * ref_v.abs().max()
    assert (out_a - ref_a).abs().max() <= 1e-4 * ref_a.abs().max()


@requires_onnx
@requires_openvino
@pytest.mark.slow
def test_openvino_bf16_holds_the_bf16_bound():
    import openvino as ov

    from avfast.export import BOUNDS
    from avfast.runtime import load

    model, path = tiny_export()
    rt = load("openvino", path, precision="bf16")
    assert rt.inference_precision == "bf16" and load("openvino", path).inference_precision == "fp32"
    v, a = _inputs(seed=5)
    out_v, out_a = rt(v, a, 250.0, 750.0)
    with torch.no_grad():
        ref_v, ref_a = model(v, a, 250.0, 750.0)
    errors = [((o - r).abs().max() / r.abs().max()).item() for o, r in ((out_v, ref_v), (out_a, ref_a))]
    assert max(errors) <= BOUNDS["bf16"], errors
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert max(errors) > BOUNDS["fp32"], f"bf16 asked for, but the result has fp32 accuracy: {errors}"


@requires_onnx
@requires_openvino
@pytest.mark.slow
def test_openvino_compiles_a_dynamic_batch_graph_per_batch(tmp_path, monkeypatch):
    """A dynamic-batch export runs on static compilations, one per batch seen (the plugin's dynamic-shape
    kernels ran 1.1-1.9x slower); same outputs as the graph compiled dynamic, the oldest dropped past the cap."""
    from avfast.export.pipeline import export_cached
    from avfast.runtime import load, ov

    model, _ = tiny_export()
    path = export_cached(model, "openvino", batch_size=4, frames=FRAMES, audio_length=AUDIO_LENGTH,
                         dynamic_batch=True, cache_dir=tmp_path, progress=False)
    rt = load("openvino", path)
    plain = ov.OpenVinoDenoiser(path, static_batches=False)
    assert rt.static_batches and not plain.static_batches and rt.spec.batch is None
    assert rt.spec.batch_range[0] == 1 and list(rt._requests) == [1]   # the smallest batch, compiled on load
    assert [d.is_static for d in rt.compiled.inputs[0].get_partial_shape()] == [True] * 5
    assert not plain.compiled.inputs[0].get_partial_shape()[0].is_static
    for B in (3, 1, 3):
        v, a = _inputs(B=B, seed=B)
        t = torch.linspace(100.0, 900.0, B)
        got, want = rt(v, a, t, t.flip(0)), plain(v, a, t, t.flip(0))
        with torch.no_grad():
            ref = model(v, a, t, t.flip(0))
        for g, w, r in zip(got, want, ref):
            assert g.shape == r.shape and (g - w).abs().max() <= 1e-4 * w.abs().max()
            assert (g - r).abs().max() <= 1e-4 * r.abs().max()
    assert list(rt._requests) == [1, 3]
    monkeypatch.setattr(ov, "MAX_STATIC_BATCHES", 2)
    rt(*_inputs(B=2), 500.0, 500.0)                                    # a third batch: the least recent goes
    assert list(rt._requests) == [3, 2]


def test_load_refuses_precision_for_runtimes_that_cannot_change_it():
    from avfast.runtime import load

    with pytest.raises(ValueError, match="`precision` applies to the openvino runtime only"):
        load("onnxruntime", "x.onnx", precision="bf16")


def test_onnxruntime_cpu_refuses_bf16_before_exporting():
    from avfast.runtime import create

    with pytest.raises(ValueError, match="no bf16 kernels .*it runs fp32, fp16, int8; bf16 runs on: .*openvino"):
        create("onnxruntime", torch.nn.Linear(1, 1), precision="bf16")  # refused before any export
