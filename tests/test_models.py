"""The joint U-Net: shapes for every preset and fusion, odd lengths, backends agree, autocast, compile,
weights I/O, per-modality timesteps and every bad input."""
import json

import pytest
import torch

import avfast
from avfast.models import FUSIONS, PRESETS, ModelConfig, create, from_pretrained

# A model small enough that every test runs in well under a second on 2 cores.
SMALL = dict(base_channels=16, audio_base_channels=0, channel_mult=(1, 2), frames=5, height=8, width=8,
             audio_length=24, head_dim=16, norm_groups=8, attention_levels=(0, 1), cmcpe_dim=16)
EXACT_PARAMETERS = {"tiny": 4_267_840, "tiny-latent": 4_217_108, "paper-128": 115_610_452, "paper-512": 113_237_332}


def small(**kw) -> avfast.models.JointUNet:
    torch.manual_seed(0)
    m = create("tiny", **(SMALL | kw))
    randomize(m)
    return m.eval()


def randomize(m: torch.nn.Module) -> None:
    """Fresh residual branches are zero-initialised (the model starts as the identity and outputs 0);
    give every weight a random value so that each path affects the output."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)


def inputs(m, B=2, frames=None, audio_length=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    v, a, _, _ = m.example_inputs(B, frames=frames, audio_length=audio_length, generator=g)
    t_v = torch.randint(1, 1000, (B,), generator=g).float()
    t_a = torch.randint(1, 1000, (B,), generator=g).float()
    return v, a, t_v, t_a


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach(), ref.detach()
    return float((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


# ------------------------------------------------------------------ presets and shapes
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_count_and_shapes_on_meta(name):
    with torch.device("meta"):
        m = create(name)
        v, a, t_v, t_a = m.example_inputs(2, device="meta")
        ov, oa = m(v, a, t_v, t_a)
    assert m.num_parameters == EXACT_PARAMETERS[name]
    assert ov.shape == v.shape and oa.shape == a.shape


def test_paper_128_is_within_ten_percent_of_the_papers_106m():
    assert abs(EXACT_PARAMETERS["paper-128"] / 106e6 - 1) <= 0.10
    assert EXACT_PARAMETERS["tiny"] < 5e6


def test_paper_128_test_time_length_on_meta():
    with torch.device("meta"):
        m = create("paper-128")
        v, a, t_v, t_a = m.example_inputs(1, frames=36, audio_length=224, device="meta")
        ov, oa = m(v, a, t_v, t_a)
    assert ov.shape == (1, 4, 36, 16, 16) and oa.shape == (1, 80, 224)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_mode_runs_and_keeps_shapes(fusion):
    m = small(fusion=fusion)
    v, a, t_v, t_a = inputs(m)
    ov, oa = m(v, a, t_v, t_a)
    assert ov.shape == v.shape and oa.shape == a.shape
    assert torch.isfinite(ov).all() and torch.isfinite(oa).all()
    assert ov.abs().max() > 0 and oa.abs().max() > 0


@pytest.mark.parametrize("fusion", ["easy", "cmcpe", "cross_attention"])
def test_fusion_makes_each_branch_depend_on_the_other(fusion):
    m = small(fusion=fusion)
    v, a, t_v, t_a = inputs(m)
    ov, oa = m(v, a, t_v, t_a)
    ov2, _ = m(v, a + 1.0, t_v, t_a)
    _, oa2 = m(v + 1.0, a, t_v, t_a)
    assert rel_err(ov2, ov) > 1e-3, "video output ignores the audio input"
    assert rel_err(oa2, oa) > 1e-3, "audio output ignores the video input"


def test_no_fusion_keeps_the_branches_independent():
    m = small(fusion="none")
    v, a, t_v, t_a = inputs(m)
    ov, oa = m(v, a, t_v, t_a)
    ov2, _ = m(v, a + 1.0, t_v, t_a)
    assert torch.equal(ov, ov2)


def test_cmcpe_reads_the_self_conditioning_estimate():
    m = small(fusion="cmcpe")
    v, a, t_v, t_a = inputs(m)
    ov, _ = m(v, a, t_v, t_a)
    ov2, _ = m(v, a, t_v, t_a, self_cond=(None, torch.randn_like(a)))
    assert rel_err(ov2, ov) > 1e-3


@pytest.mark.parametrize("frames,audio_length,hw", [(1, 7, (8, 8)), (7, 45, (9, 7)), (36, 224, (8, 8)),
                                                    (18, 113, (5, 11))])
def test_odd_and_long_lengths(frames, audio_length, hw):
    m = small(height=hw[0], width=hw[1])
    v, a, t_v, t_a = inputs(m, frames=frames, audio_length=audio_length)
    ov, oa = m(v, a, t_v, t_a)
    assert ov.shape == v.shape and oa.shape == a.shape
    assert torch.isfinite(ov).all() and torch.isfinite(oa).all()


def test_audio_branch_can_be_wider_than_the_video_branch():
    m = small(audio_base_channels=32)
    v, a, t_v, t_a = inputs(m)
    ov, oa = m(v, a, t_v, t_a)
    assert ov.shape == v.shape and oa.shape == a.shape
    assert m.stem_a.out_channels == 32 and m.stem_v.out_channels == 16
    _, oa2 = m(v + 1.0, a, t_v, t_a)
    assert rel_err(oa2, oa) > 1e-3  # fusion still joins branches of different widths


def test_patch_stem_with_sizes_that_are_not_multiples_of_the_patch():
    m = small(patch_size=2, height=9, width=7, video_channels=3)
    v, a, t_v, t_a = inputs(m)
    ov, _ = m(v, a, t_v, t_a)
    assert ov.shape == v.shape


def test_patchify_round_trip():
    from avfast.models.unet import patchify, unpatchify

    x = torch.randn(2, 3, 4, 9, 7)
    assert torch.equal(unpatchify(patchify(x, 2), 2, (9, 7)), x)
    assert patchify(x, 2).shape == (2, 12, 4, 5, 4)


# ------------------------------------------------------------------ timesteps and labels
def test_each_modality_reads_its_own_timestep():
    m = small()
    v, a, t_v, t_a = inputs(m)
    ov, oa = m(v, a, t_v, t_a)
    ov2, oa2 = m(v, a, t_v, t_a + 100)
    assert rel_err(oa2, oa) > 1e-3, "changing t_a alone did not change the audio output"
    ov3, oa3 = m(v, a, t_v + 100, t_a)
    assert rel_err(ov3, ov) > 1e-3, "changing t_v alone did not change the video output"


def test_scalar_int_and_tensor_timesteps_agree():
    m = small()
    v, a, _, _ = inputs(m)
    ref = m(v, a, torch.tensor([300.0, 300.0]), torch.tensor([300.0, 300.0]))
    for tv, ta in ((300, 300), (300.0, torch.tensor(300)), (torch.tensor([300]), torch.tensor(300.0))):
        out = m(v, a, tv, ta)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def test_labels_and_the_null_label():
    m = small(num_classes=3)
    v, a, t_v, t_a = inputs(m)
    null = m(v, a, t_v, t_a)
    assert torch.equal(m(v, a, t_v, t_a, labels=torch.tensor([-1, -1]))[0], null[0])
    cond = m(v, a, t_v, t_a, labels=torch.tensor([0, 2]))
    assert rel_err(cond[0], null[0]) > 1e-3


# ------------------------------------------------------------------ backends, autocast, compile
def test_fused_backends_match_the_reference_forward_and_backward():
    m = small()
    v, a, t_v, t_a = inputs(m)
    grads = {}
    outs = {}
    for name in ("reference", None):
        m.zero_grad()
        with avfast.backend(name):
            ov, oa = m(v, a, t_v, t_a)
            (ov.square().mean() + oa.square().mean()).backward()
        outs[name] = (ov.detach(), oa.detach())
        grads[name] = {k: p.grad.clone() for k, p in m.named_parameters()}
    for x, ref in zip(outs[None], outs["reference"]):
        assert rel_err(x, ref) < 1e-5
    worst = max(rel_err(grads[None][k], grads["reference"][k]) for k in grads[None]
                if grads["reference"][k].norm() > 0)
    assert worst < 1e-4, worst


def test_fused_and_reference_do_differ_from_a_wrong_model():
    """The comparison above can fail: a model with one weight changed is far outside its bound."""
    m = small()
    v, a, t_v, t_a = inputs(m)
    ref = m(v, a, t_v, t_a)[0]
    with torch.no_grad():
        m.stem_v.weight[0, 0].add_(0.05)
    assert rel_err(m(v, a, t_v, t_a)[0], ref) > 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    m = small()
    v, a, t_v, t_a = inputs(m)
    ref = m(v, a, t_v, t_a)
    with torch.autocast("cpu", dtype=dtype):
        ov, oa = m(v, a, t_v, t_a)
    assert ov.dtype == torch.float32 and oa.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: a few percent through ~30 layers; fp16 is tighter.
    bound = 0.08 if dtype == torch.bfloat16 else 0.02
    assert rel_err(ov, ref[0]) < bound and rel_err(oa, ref[1]) < bound


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_cast_whole_to_half_precision(dtype):
    m = small()
    v, a, t_v, t_a = inputs(m)
    ref = m(v, a, t_v, t_a)
    mh = small().to(dtype)
    ov, oa = mh(v.to(dtype), a.to(dtype), t_v, t_a)
    assert ov.dtype == dtype and oa.dtype == dtype
    bound = 0.1 if dtype == torch.bfloat16 else 0.03
    assert rel_err(ov, ref[0]) < bound and rel_err(oa, ref[1]) < bound


def test_gradient_checkpointing_gives_the_same_gradients():
    m = small()
    v, a, t_v, t_a = inputs(m)
    m.train()

    def loss():
        ov, oa = m(v, a, t_v, t_a)
        return ov.square().mean() + oa.square().mean()

    loss().backward()
    ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.config.gradient_checkpointing = True
    loss().backward()
    for g, r in zip((p.grad for p in m.parameters()), ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    m = small(attention_levels=(1,))
    v, a, t_v, t_a = inputs(m)
    ref = m(v, a, t_v, t_a)
    torch._dynamo.reset()
    out = torch.compile(m, fullgraph=True)(v, a, t_v, t_a)
    assert rel_err(out[0], ref[0]) < 1e-4 and rel_err(out[1], ref[1]) < 1e-4


# ------------------------------------------------------------------ weights I/O
def test_save_and_load_round_trip_bitwise(tmp_path):
    m = small(fusion="cmcpe")
    m.save_pretrained(tmp_path)
    m2 = from_pretrained(tmp_path)
    assert m2.config == m.config
    for (k, p), (k2, p2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(p, p2)
    assert not list(tmp_path.glob(".*tmp"))


def test_config_json_round_trip():
    for name in PRESETS:
        cfg = PRESETS[name]
        assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_joint_refine_and_condition_mode_are_version_3_fields_only_where_set():
    plain = PRESETS["tiny"]
    assert "joint_refine" not in plain.to_dict() and plain.version == 1  # older avfast still reads it
    refined = plain.replace(joint_refine=["v2a"])
    assert refined.joint_refine == ("v2a",) and refined.version == 3
    d = refined.to_dict()
    assert d["joint_refine"] == ["v2a"] and d["version"] == 3
    assert ModelConfig.from_dict(d) == refined
    clean = plain.replace(condition_mode="clean")
    assert clean.version == 3 and clean.to_dict()["condition_mode"] == "clean"
    assert ModelConfig.from_dict(clean.to_dict()) == clean and "condition_mode" not in plain.to_dict()
    with pytest.raises(ValueError, match=r"condition_mode must be one of \('replace', 'clean'\), got 'noisy'"):
        plain.replace(condition_mode="noisy")
    with pytest.raises(ValueError, match=r"joint_refine must be a list of tasks, each one of \('v2a', 'a2v'\), "
                                         r"got \('joint',\)"):
        plain.replace(joint_refine=("joint",))


def test_sampling_gamma_is_a_version_4_field_only_where_set():
    plain = PRESETS["tiny"]
    assert "sampling_gamma" not in plain.to_dict() and plain.sampling_gamma is None
    own = plain.replace(sampling_gamma=1)
    assert own.sampling_gamma == 1.0 and isinstance(own.sampling_gamma, float) and own.version == 4
    assert own.to_dict()["sampling_gamma"] == 1.0 and ModelConfig.from_dict(own.to_dict()) == own
    for bad in (0.0, -1.0, float("inf"), float("nan"), "0.05", True):
        with pytest.raises(ValueError, match="sampling_gamma must be None or a finite number > 0"):
            plain.replace(sampling_gamma=bad)


def test_long_window_is_a_version_5_field_only_where_set():
    plain = PRESETS["tiny"]
    assert "long_window" not in plain.to_dict() and plain.long_window == 0 and plain.version < 5
    assert plain.long_window_frames == plain.frames          # unset: the model's own window
    own = plain.replace(long_window=36)
    assert own.long_window_frames == 36
    assert own.version == 5 and own.to_dict()["long_window"] == 36 and ModelConfig.from_dict(own.to_dict()) == own
    for bad in (-1, 2.5, "36", True):
        with pytest.raises(ValueError, match=r"long_window must be an integer >= 0 \(video frames per window"):
            plain.replace(long_window=bad)
    newer = {**own.to_dict(), "version": 6}
    with pytest.raises(ValueError, match=r"config version 6 is not one this avfast understands \(1..5\)"):
        ModelConfig.from_dict(newer)


@pytest.mark.parametrize("corruption,match", [
    ("missing", "missing tensors"), ("extra", "unexpected tensors"), ("shape", "mis-shaped"),
    ("not_safetensors", "not a readable safetensors"), ("no_weights", "no file"),
    ("version", "config version"), ("unknown_field", "unknown config field"), ("bad_value", "fusion must be"),
    ("no_config", "has no config.json"), ("no_dir", "no folder"),
])
def test_every_load_error_is_clear_and_loads_nothing(tmp_path, corruption, match):
    from safetensors.torch import load_file, save_file

    m = small()
    d = tmp_path / "ckpt"
    m.save_pretrained(d)
    weights = d / "model.safetensors"
    state = load_file(weights)
    cfg = json.loads((d / "config.json").read_text())
    if corruption == "missing":
        state.pop(next(iter(state)))
        save_file(state, weights)
    elif corruption == "extra":
        state["surprise.weight"] = torch.zeros(1)
        save_file(state, weights)
    elif corruption == "shape":
        k = "stem_v.weight"
        state[k] = torch.zeros(*state[k].shape[:-1], state[k].shape[-1] + 1)
        save_file(state, weights)
    elif corruption == "not_safetensors":
        weights.write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    elif corruption == "no_weights":
        weights.unlink()
    elif corruption == "version":
        cfg["version"] = 99
    elif corruption == "unknown_field":
        cfg["colour"] = "red"
    elif corruption == "bad_value":
        cfg["fusion"] = "magic"
    elif corruption == "no_config":
        (d / "config.json").unlink()
    elif corruption == "no_dir":
        d = tmp_path / "nothing-here"
    if corruption in ("version", "unknown_field", "bad_value"):
        (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        from_pretrained(d)


def test_default_model_unavailable_is_a_clear_error(monkeypatch, tmp_path):
    import avfast.models as models

    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path)
    with pytest.raises(models.DefaultModelUnavailable, match="no trained default model"):
        models.default()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("case,exc,match", [
    ("v_rank", ValueError, "`v_t` must be 5-D"),
    ("a_rank", ValueError, "`a_t` must be 3-D"),
    ("v_channels", ValueError, "`v_t` must have 3 channels"),
    ("a_channels", ValueError, "`a_t` must have 80 channels"),
    ("dtype_mix", TypeError, "same dtype"),
    ("int_input", TypeError, "floating-point"),
    ("batch", ValueError, "batch sizes differ"),
    ("t_shape", ValueError, "`t_v` must be a scalar or have shape \\[2\\]"),
    ("t_range", ValueError, "`t_a` must lie in \\[0, 1000\\]"),
    ("t_negative", ValueError, "`t_v` must lie in"),
    ("t_nan", ValueError, "`t_v` contains NaN"),
    ("t_type", TypeError, "`t_a` must be a number or a tensor"),
    ("labels_unconditional", ValueError, "no label conditioning"),
    ("self_cond_wrong_mode", ValueError, "CMC-PE connector only"),
])
def test_bad_input(case, exc, match):
    m = small()
    v, a, t_v, t_a = inputs(m)
    args = dict(v_t=v, a_t=a, t_v=t_v, t_a=t_a)
    if case == "v_rank":
        args["v_t"] = v[:, :, 0]
    elif case == "a_rank":
        args["a_t"] = a[:, None]
    elif case == "v_channels":
        args["v_t"] = torch.randn(2, 4, *v.shape[2:])
    elif case == "a_channels":
        args["a_t"] = torch.randn(2, 64, a.shape[2])
    elif case == "dtype_mix":
        args["a_t"] = a.double()
    elif case == "int_input":
        args["v_t"], args["a_t"] = v.long(), a.long()
    elif case == "batch":
        args["a_t"] = a[:1]
    elif case == "t_shape":
        args["t_v"] = torch.ones(3)
    elif case == "t_range":
        args["t_a"] = torch.tensor([10.0, 1001.0])
    elif case == "t_negative":
        args["t_v"] = torch.tensor([-1.0, 5.0])
    elif case == "t_nan":
        args["t_v"] = torch.tensor([float("nan"), 5.0])
    elif case == "t_type":
        args["t_a"] = "500"
    elif case == "labels_unconditional":
        args["labels"] = torch.tensor([0, 1])
    elif case == "self_cond_wrong_mode":
        args["self_cond"] = (None, a)
    with pytest.raises(exc, match=match):
        m(**args)


def test_device_mismatch_is_named():
    m = small()
    v, a, t_v, t_a = inputs(m)
    with pytest.raises(ValueError, match="`t_v` is on meta"):
        m(v, a, t_v.to("meta"), t_a)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="attention_levels"):
        ModelConfig(attention_levels=(7,))
    with pytest.raises(ValueError, match="divisible by head_dim"):
        ModelConfig(base_channels=96, head_dim=64, norm_groups=32)
    with pytest.raises(ValueError, match="unknown preset"):
        create("huge")


def test_a_refine_options_words():
    from avfast.models.config import parse_refine

    assert parse_refine(None) is None  # not given: the model's own
    assert parse_refine(["none"]) == ()
    assert parse_refine(["a2v", "v2a"]) == ("a2v", "v2a")
    with pytest.raises(ValueError, match="--refine none .* takes no other pass, got v2a none"):
        parse_refine(["v2a", "none"])


def test_ship_records_the_students_sampling_fields_only(tmp_path):
    import shutil

    from avfast.models import DEFAULT_DIR
    from avfast.models.ship import ship

    for name in ("student", "teacher"):
        small().save_pretrained(tmp_path / name)
        shutil.copytree(DEFAULT_DIR / "autoencoder", tmp_path / name / "autoencoder")
    out = tmp_path / "default"
    ship(tmp_path / "student", tmp_path / "teacher", out, joint_refine=("v2a",), long_window=24)
    assert json.loads((out / "config.json").read_text())["joint_refine"] == ["v2a"]
    assert from_pretrained(out).config.joint_refine == ("v2a",) and from_pretrained(out).config.long_window == 24
    teacher = json.loads((out / "teacher" / "config.json").read_text())
    assert "joint_refine" not in teacher and "long_window" not in teacher
    assert (out / "autoencoder" / "model.safetensors").is_file()


def test_checkpoint_folder_names_shipped_models_and_refuses_what_is_not_a_folder(tmp_path, monkeypatch):
    import avfast.models as models

    assert models.checkpoint_folder(None) == models.checkpoint_folder("default") == models.default_folder("student")
    assert models.checkpoint_folder("default:teacher") == models.default_folder("teacher")
    with pytest.raises(FileNotFoundError, match=r"has no config.json \(expected config.json \+ model.safetensors\)"):
        models.checkpoint_folder(tmp_path)           # sample and export word it alike
    (tmp_path / "config.json").write_text("{}")
    assert models.checkpoint_folder(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match=r"'.*a_file' is not a folder .*default / default:teacher"):
        (tmp_path / "a_file").write_text("x")
        models.checkpoint_folder(str(tmp_path / "a_file"))
    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path / "none")
    monkeypatch.setattr(models, "default_folder", lambda which="student": tmp_path / "none" / which)
    with pytest.raises(models.DefaultModelUnavailable, match="no trained default model"):
        models.checkpoint_folder("default:teacher")


def test_every_candidate_model_loads_and_is_described():
    """candidates/ keeps measured, unshipped weights for the next step: each folder loads like any model
    folder (safetensors, a valid config, its frame autoencoder beside it) and candidates/README.md says what
    it is and how it was made."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "candidates"
    if not root.is_dir():
        pytest.skip("no candidates/ folder (an installed wheel ships none)")
    readme = (root / "README.md").read_text()
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert folders, "candidates/ holds no model folder"
    for folder in folders:
        assert f"## `{folder.name}/`" in readme, f"candidates/README.md does not describe {folder.name}/"
        model = from_pretrained(folder)
        assert model.config.video_space == "latent" and (folder / "autoencoder" / "model.safetensors").is_file()
        assert all(torch.isfinite(p).all() for p in model.parameters())
