"""python -m avfast.export: graph checks, parity bounds, the command line and its bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _exported import AUDIO_LENGTH, FRAMES, requires_onnx, tiny_export, tiny_model

pytestmark = requires_onnx


def _graph(tmp_path: Path, op: str, domain: str = "", elem=1, **attrs) -> Path:
    """A one-node ONNX model `y = op(x)` written to tmp_path."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", elem, [3, 3])
    y = helper.make_tensor_value_info("y", elem, [3, 3] if op != "Det" else [])
    node = helper.make_node(op, ["x"], ["y"], domain=domain, **attrs)
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, path)
    assert TensorProto.FLOAT == 1
    return path


# ------------------------------------------------------------------ checks (no export needed)
def test_tensorrt_operator_list_is_data_with_the_ops_the_unet_needs():
    from avfast.export.data import tensorrt_ops

    data = tensorrt_ops()
    assert data["opset_range"][0] <= 18 <= data["opset_range"][1]
    for op in ("Conv", "InstanceNormalization", "Resize", "Softmax", "MatMul", "Gemm", "Cast"):
        assert "FP32" in data["operators"][op] and "FP16" in data["operators"][op]
    assert "Unique" not in data["operators"]  # marked N in TensorRT's support matrix


def test_check_graph_accepts_a_supported_op(tmp_path):
    from avfast.export import check_graph

    assert check_graph(_graph(tmp_path, "Sigmoid")) == {"Sigmoid": 1}


@pytest.mark.parametrize("make, message", [
    (lambda p: _graph(p, "Det", elem=1), "Det node"),                             # not in TensorRT's list
    (lambda p: _graph(p, "Abs", elem=11), "takes DOUBLE"),                        # supported op, unsupported type
    (lambda p: _graph(p, "FusedThing", domain="com.example"), "non-standard"),    # custom operator
], ids=["unsupported-op", "unsupported-type", "custom-domain"])
def test_check_graph_names_what_tensorrt_cannot_parse(tmp_path, make, message):
    from avfast.export import GraphCheckError, check_graph

    path = make(tmp_path)
    with pytest.raises(GraphCheckError, match=message):
        check_graph(path)


def test_check_graph_rejects_a_resize_mode_tensorrt_lacks(tmp_path):
    import onnx
    from onnx import helper

    from avfast.export import GraphCheckError, check_graph

    x = helper.make_tensor_value_info("x", 1, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", 1, [1, 1, 8, 8])
    scales = helper.make_tensor("scales", 1, [4], [1.0, 1.0, 2.0, 2.0])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=[scales]),
                              opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, tmp_path / "r.onnx")
    with pytest.raises(GraphCheckError, match="mode='cubic'"):
        check_graph(tmp_path / "r.onnx")


def test_parity_refuses_all_zero_outputs():
    """A fresh U-Net's zero-initialised output layers make both outputs exactly 0: nothing to compare."""
    import avfast.models
    from avfast.export import measure_parity, parity_inputs
    from avfast.runtime.torch_runtimes import EagerDenoiser

    model = avfast.models.create("tiny").eval()
    inputs = parity_inputs(model, 1, 2, 8)
    with pytest.raises(ValueError, match="all zeros"):
        measure_parity(EagerDenoiser(model, "reference"), EagerDenoiser(model, "fused"), inputs, "fp32", "a", "b")


# ------------------------------------------------------------------ the shared tiny export
@pytest.mark.slow
def test_tiny_export_is_standard_tensorrt_parsable_and_static():
    import onnx

    from avfast.export import check_graph

    model, path = tiny_export()
    counts = check_graph(path)
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert counts["Conv"] > 0 and counts["Softmax"] > 0  # the convolutions and the decomposed attention
    assert "Shape" not in counts  # static shapes: no run-time shape arithmetic left
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert shapes == {"v_t": [1, 3, FRAMES, 32, 32], "a_t": [1, 80, AUDIO_LENGTH], "t_v": [1], "t_a": [1]}
    assert [o.name for o in graph.output] == ["v_pred", "a_pred"]


@pytest.mark.slow
def test_tiny_manifest_records_the_export():
    import avfast.models
    from avfast.runtime.manifest import read_manifest

    model, path = tiny_export()
    m = read_manifest(path)
    assert m["onnx"] == path.name and m["precision"] == "fp32" and m["opset"] == 18 and m["batch"] == 1
    assert m["weights"]["sha256"] == avfast.models.weights_checksum(model.state_dict())
    assert avfast.models.ModelConfig.from_dict(m["config"]).frames == FRAMES
    assert [i["name"] for i in m["inputs"]] == ["v_t", "a_t", "t_v", "t_a"]
    p = m["parity"]["onnxruntime"]
    assert p["passed"] and p["bound"] == 1e-4 and p["worst_relative"] <= 1e-4
    assert p["video"]["scale"] > 0.1 and p["audio"]["scale"] > 0.1  # real outputs, not zeros
    assert sum(m["operators"].values()) == m["nodes"]


@pytest.mark.slow
def test_fp32_parity_holds_and_the_check_catches_a_changed_weight():
    """ORT against the PyTorch model within 1e-4 of the output's scale; the same check fails against a model
    whose weights differ by 1e-3 in one layer, so the bound is tight enough to see a translation error."""
    import copy

    from avfast.export import measure_parity, parity_inputs
    from avfast.runtime import load
    from avfast.runtime.torch_runtimes import EagerDenoiser

    model, path = tiny_export()
    ort = load("onnxruntime", path)
    inputs = parity_inputs(model, 1, FRAMES, AUDIO_LENGTH, seed=7)
    good = measure_parity(ort, EagerDenoiser(model, "reference"), inputs, "fp32", "onnxruntime", "torch")
    assert good.passed, str(good)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.out_v[-1].weight.mul_(1.001)
        changed.out_a[-1].weight.mul_(1.001)
    bad = measure_parity(ort, EagerDenoiser(changed, "reference"), inputs, "fp32", "onnxruntime", "torch")
    assert not bad.passed and bad.worst > 10 * good.worst


# ------------------------------------------------------------------ the command line
def _main(argv, capsys):
    from avfast.export.__main__ import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _small_checkpoint(tmp_path: Path) -> Path:
    """A one-level `tiny` (a third of the full preset's export time) with stand-in weights."""
    import avfast.models
    from avfast.export import randomize_zero_layers_

    model = randomize_zero_layers_(avfast.models.create("tiny", channel_mult=(1,), attention_levels=(0,)))
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_stand_in_model_draws_the_same_weights_in_every_process_and_leaves_the_global_generator():
    """The export cache is keyed by the weights' checksum: stand-in weights must not depend on the global RNG."""
    from avfast.export import stand_in_model
    from avfast.models.weights import weights_checksum

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = stand_in_model("tiny", channel_mult=(1,), attention_levels=(0,))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
    torch.manual_seed(7)  # another process's global state
    b = stand_in_model("tiny", channel_mult=(1,), attention_levels=(0,))
    c = stand_in_model("tiny", seed=1, channel_mult=(1,), attention_levels=(0,))
    assert weights_checksum(a.state_dict()) == weights_checksum(b.state_dict())
    assert weights_checksum(a.state_dict()) != weights_checksum(c.state_dict())
    assert not a.training and all(p.any() for p in a.parameters() if p.dim() >= 2)  # no all-zero layer is left


@pytest.mark.parametrize("argv, message", [
    (["--preset", "nope"], "invalid choice"),
    (["--checkpoint", "/nonexistent/folder"], "is not a folder"),
    (["--frames", "0"], "--frames must be an integer >= 1"),
    (["--runtimes", "eager-fused,warp-drive"], "unknown runtime"),
    (["--runtimes", "onnxruntime,tensorrt"], "--runtimes tensorrt times the engine that --trt builds; add --trt"),
    (["--precision", "bf16", "--opset", "18"], "bf16 needs opset 22"),
    (["--opset", "30"], "opset must be an integer in 17..24"),
], ids=["preset", "checkpoint-missing", "frames", "runtime", "tensorrt-without-trt", "bf16-opset", "opset"])
def test_cli_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) if message == "invalid choice" else _nothing():
        code, out, err = _main(argv + ["--out", str(tmp_path / "out"), "--no-progress"], capsys)
    if message == "invalid choice":
        assert message in capsys.readouterr().err
        return
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cli_mismatched_and_unreadable_checkpoints(tmp_path, capsys):
    ckpt = _small_checkpoint(tmp_path)
    code, _, err = _main(["--checkpoint", str(ckpt), "--preset", "tiny", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not the --preset tiny" in err and len(err.strip().splitlines()) == 1
    (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    code, _, err = _main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a readable safetensors file" in err and len(err.strip().splitlines()) == 1


def test_cli_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = _main(["--out", str(blocker / "sub"), "--no-progress"], capsys)
    assert code == 2 and "cannot be written" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ --trt: refused before any work
def _no_export_work(monkeypatch):
    """Any export work from here on fails the test: the refusals below must come before it."""
    from avfast.export import pipeline

    def started(*args, **kwargs):
        raise AssertionError("export work started before the refusal")

    for name in ("run_export", "export_onnx", "check_graph", "measure_parity"):
        monkeypatch.setattr(pipeline, name, started)


def _installed_except(monkeypatch, *absent):
    from avfast import _deps

    real = _deps.installed
    monkeypatch.setattr(_deps, "installed", lambda module: module not in absent and real(module))


@pytest.mark.parametrize("absent, message", [
    (("tensorrt",), "exporting at fp32 with --trt needs the Python package 'tensorrt', not installed here: "
                    "pip install \"avfast[tensorrt]\""),
    # every missing package in one line, with one command
    (("onnxruntime", "tensorrt"), "exporting at fp32 with --trt needs the Python packages 'onnxruntime', "
                                  "'tensorrt', not installed here: pip install \"avfast[ort,tensorrt]\""),
], ids=["tensorrt", "tensorrt-and-onnxruntime"])
def test_cli_trt_without_tensorrt_is_refused_before_any_work(tmp_path, capsys, monkeypatch, absent, message):
    """--trt without TensorRT: one line and exit 2 (as for any missing package, and as `python -m avfast.sample
    --runtime tensorrt`), not exit 1 after the export, its checks and its parity runs."""
    _installed_except(monkeypatch, *absent)
    _no_export_work(monkeypatch)
    out = tmp_path / "out"
    code, _, err = _main(["--preset", "tiny", "--trt", "--out", str(out), "--no-progress"], capsys)
    assert code == 2, err
    assert err.strip() == f"python -m avfast.export: error: {message}", err
    assert not out.exists()


def test_cli_trt_without_cuda_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """TensorRT installed, no CUDA GPU: the engine build would fail after the export; refused before it."""
    from avfast import _deps

    monkeypatch.setattr(_deps, "installed", lambda module: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _no_export_work(monkeypatch)
    out = tmp_path / "out"
    code, _, err = _main(["--preset", "tiny", "--trt", "--out", str(out), "--no-progress"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("python -m avfast.export: error: --trt: TensorRT builds its engine on a CUDA GPU, and "
                          "torch sees none here (torch "), err
    assert err.rstrip().endswith("; leave out --trt to export, check and time the ONNX here"), err
    assert not out.exists()


def test_cli_trt_with_int8_is_refused_as_such_whatever_is_installed(tmp_path, capsys, monkeypatch):
    """--trt --precision int8 is refused for the combination, not for the packages it would not use."""
    _installed_except(monkeypatch, "tensorrt", "nncf")
    _no_export_work(monkeypatch)
    code, _, err = _main(["--preset", "tiny", "--trt", "--precision", "int8", "--out", str(tmp_path / "out"),
                          "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--trt with --precision int8" in err and "pip install" not in err, err


def test_create_runtime_tensorrt_without_tensorrt_is_refused_before_any_work(tmp_path, monkeypatch):
    """The library's export on demand refuses as the command line does (RuntimeUnavailable, as it raised
    after the export before)."""
    from avfast.export import create_runtime
    from avfast.runtime import RuntimeUnavailable

    _installed_except(monkeypatch, "tensorrt")
    _no_export_work(monkeypatch)
    with pytest.raises(RuntimeUnavailable) as e:
        create_runtime("tensorrt", tiny_model(), cache_dir=tmp_path / "cache", progress=False)
    assert str(e.value) == ("the tensorrt runtime cannot build an engine here: it needs the Python package "
                            "'tensorrt', not installed here: pip install \"avfast[tensorrt]\""), str(e.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_cli_fp16_dynamic_batch_trt_failing_after_the_export(tmp_path, capsys, monkeypatch):
    """A TensorRT that passes the up-front checks and then fails to load (here: missing, with the up-front
    checks faked to pass): the checked ONNX and its manifest are written, then one sentence and exit 1.
    The same run checks an fp16 graph with a dynamic batch."""
    if have_tensorrt():
        pytest.skip("TensorRT is installed here: this test covers the machine without it")
    from avfast import _deps
    from avfast.export import pipeline

    real = _deps.installed
    monkeypatch.setattr(_deps, "installed", lambda module: module == "tensorrt" or real(module))
    monkeypatch.setattr(pipeline, "why_no_trt_build", lambda: None)
    ckpt = _small_checkpoint(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = _main(["--checkpoint", str(ckpt), "--trt", "--precision", "fp16", "--dynamic-batch",
                               "--frames", "4", "--bench-steps", "1", "--runtimes", "onnxruntime",
                               "--out", str(out), "--no-progress"], capsys)
    assert code == 1, err
    assert 'pip install "avfast[tensorrt]"' in err and len(err.strip().splitlines()) == 1
    files = sorted(p.name for p in out.iterdir())
    assert files == ["model-fp16-bdyn-f4.json", "model-fp16-bdyn-f4.onnx"]  # no staging folder left behind
    m = json.loads((out / "model-fp16-bdyn-f4.json").read_text())
    assert m["precision"] == "fp16" and m["batch"] is None and m["inputs"][0]["shape"][0] == "batch"
    p = m["parity"]["onnxruntime"]
    # within the fp16 bound, and clearly above fp32 rounding: the graph really computes in fp16
    assert p["passed"] and p["bound"] == 1e-2 and 1e-5 < p["worst_relative"] <= 1e-2
    assert "tensorrt" in m["tensorrt"]["error"]
    assert "onnxruntime fp16" in m["ms_per_fe"]["runtimes"] and "wrote" in stdout

    from avfast.runtime import load

    runtime = load("onnxruntime", out / "model-fp16-bdyn-f4.onnx")
    lo, hi = m["batch_range"]
    assert runtime.spec.batch is None and runtime.spec.batch_range == (lo, hi)
    for B in (1, 3):
        v, a = torch.randn(B, 3, 4, 32, 32), torch.randn(B, 80, m["inputs"][1]["shape"][2])
        out_v, out_a = runtime(v, a, 500.0, 500.0)
        assert out_v.shape == v.shape and out_a.shape == a.shape and torch.isfinite(out_v).all()
    with pytest.raises(ValueError, match=f"batch {lo}..{hi}"):
        runtime(torch.randn(hi + 1, 3, 4, 32, 32), torch.randn(hi + 1, 80, m["inputs"][1]["shape"][2]), 1.0, 1.0)


def have_tensorrt() -> bool:
    from _exported import have

    return have("tensorrt")


def test_default_model_is_the_shipped_default_or_stand_in_weights():
    import argparse

    import avfast.models
    from avfast.export.__main__ import _load_model

    model, preset, source = _load_model(argparse.Namespace(checkpoint=None, preset=None))
    # the default is a distilled tiny-latent: its config records how it samples on top of the preset
    from avfast.models.config import ModelConfig, SAMPLING_FIELDS

    assert preset == "tiny-latent"
    plain = {name: getattr(ModelConfig(), name) for name in SAMPLING_FIELDS}
    assert model.config.replace(**plain, version=1) == avfast.models.preset("tiny-latent")
    if (avfast.models.DEFAULT_DIR / "model.safetensors").is_file():
        assert source == "the package's trained default model"
    else:
        assert source.startswith("random stand-in weights")
        v, a, t_v, t_a = model.example_inputs(1, frames=2, audio_length=8)
        with torch.no_grad():
            out_v, out_a = model(v, a, t_v, t_a)
        assert out_v.abs().max() > 0 and out_a.abs().max() > 0  # so the CLI's parity check compares real numbers
