"""avfast.train: the loop learns, resumes exactly, survives SIGKILL mid-save, runs under torchrun (gloo),
stops on a non-finite loss, runs CMMD with negatives, and refuses bad options with clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from _train_micro import MICRO, PYTHON, cli_env, micro_config
from safetensors.torch import load_file

from avfast.models import create
from avfast.models.weights import weights_checksum
from avfast.train import loop
from avfast.train.__main__ import _field_help, build_parser, main
from avfast.train.checkpoint import latest_checkpoint, load_checkpoint
from avfast.train.config import TrainConfig
from avfast.train.runlog import read_rows


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _checkpoint_tensors(ck: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {part: load_file(ck / f"{part}.safetensors") for part in ("model", "ema", "optimizer")}


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_rows(run)]


# ------------------------------------------------------------------ learning
def test_steps_on_a_fixed_batch_reduce_the_loss():
    cfg = micro_config("unused", batch_size=2)
    torch.manual_seed(0)
    model = create(cfg.model_config())
    data = loop.SyntheticAVDataset(model.config, 4, seed=0)
    batch = loop.draw_batch(cfg, model.config, data, loop.CosineSchedule(1000), step=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss, _ = loop.compute_loss(model, cfg, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], f"20 Adam steps on one batch: loss {losses[0]:.4f} -> {losses[-1]:.4f}"


def test_cmmd_runs_negatives_through_evaluate_groups_and_the_fused_loss(tmp_path, monkeypatch):
    calls = {"groups": [], "loss": 0}
    real_groups, real_loss = loop.evaluate_groups, loop.contrastive_loss

    def groups(model, v_t, a_t, t_v, t_a, v_neg_t, a_neg_t):
        calls["groups"].append((v_t.shape[0], tuple(v_neg_t.shape), tuple(a_neg_t.shape)))
        return real_groups(model, v_t, a_t, t_v, t_a, v_neg_t, a_neg_t)

    def fused(*args):
        calls["loss"] += 1
        return real_loss(*args)

    monkeypatch.setattr(loop, "evaluate_groups", groups)
    monkeypatch.setattr(loop, "contrastive_loss", fused)
    cfg = micro_config(tmp_path / "run", steps=2, eta=5e-5, num_video_negatives=2, num_audio_negatives=1)
    forwards = []
    torch.manual_seed(cfg.seed)
    model = create(cfg.model_config())
    model.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    loop.train(cfg, model)
    v_shape, a_shape = (4, 3, 8, 16, 16), (4, 80, 32)
    assert calls["groups"] == [(4, (2,) + v_shape, (1,) + a_shape)] * 2 and calls["loss"] == 2
    assert forwards == [16, 16], "one denoiser call per step on the 1 + 2 + 1 groups of 4 rows"
    rows = read_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("positive", "negative_video", "negative_audio"):
            assert torch.isfinite(torch.tensor(r[key])), (key, r)
        # loss = positive - eta * (negative terms): within eta's reach of the positive term, not equal to it
        assert r["loss"] != r["positive"] and abs(r["loss"] - r["positive"]) < 1e-3 * r["positive"]


# ------------------------------------------------------------------ exact resume
@pytest.mark.parametrize("case", [
    {"eta": 5e-5, "independent_timesteps": True},                 # negatives and their noise
    {"eta": 0.0, "clean_prob": 0.3, "model": MICRO | {"dropout": 0.2}, "ema_decay": 0.9},  # global RNG (dropout)
], ids=["cmmd", "dropout"])
def test_resumed_run_equals_uninterrupted(tmp_path, case):
    whole = micro_config(tmp_path / "whole", steps=6, save_every=3, **case)
    loop.train(whole)
    cut = micro_config(tmp_path / "cut", steps=3, save_every=3, **case)
    loop.train(cut)
    # rows the killed process wrote after its checkpoint (and a half line) must not survive the resume
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 99.0}\n{"step": 5, "lo')
    loop.train(micro_config(tmp_path / "cut", steps=6, save_every=3, **case))
    a = _checkpoint_tensors(tmp_path / "whole" / "checkpoints" / "step_00000006")
    b = _checkpoint_tensors(tmp_path / "cut" / "checkpoints" / "step_00000006")
    for part in a:
        assert a[part].keys() == b[part].keys(), part
        unequal = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not unequal, f"{part}: {len(unequal)} tensors differ after resume, e.g. {unequal[:3]}"
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "whole")
    assert len(_losses(tmp_path / "whole")) == 6
    start = micro_config(tmp_path / "whole", steps=6, **case)
    torch.manual_seed(0)
    assert weights_checksum(a["model"]) != weights_checksum(create(start.model_config()).state_dict())


@pytest.mark.slow
def test_fp16_resume_restores_the_grad_scaler(tmp_path):
    options = dict(steps=2, save_every=1, batch_size=2, precision="fp16")
    loop.train(micro_config(tmp_path / "whole", **options))
    loop.train(micro_config(tmp_path / "cut", **options | {"steps": 1}))
    loop.train(micro_config(tmp_path / "cut", **options))
    states = [json.loads((tmp_path / run / "checkpoints" / "step_00000002" / "state.json").read_text())
              for run in ("whole", "cut")]
    assert states[0]["grad_scaler"]["_growth_tracker"] == 2, states[0]["grad_scaler"]
    assert states[1]["grad_scaler"] == states[0]["grad_scaler"]
    a, b = (_checkpoint_tensors(tmp_path / run / "checkpoints" / "step_00000002") for run in ("whole", "cut"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ------------------------------------------------------------------ SIGKILL during a save
_SAVE_LOOP = r"""
import sys, time, torch
torch.set_num_threads(1)
import avfast.train.checkpoint as ck
from avfast.models import create
from avfast.models.weights import weights_checksum
run, kill_in = sys.argv[1], sys.argv[2]
real_write = ck.atomic_write_bytes
saving = {"step": 0}

def write(path, data):
    if saving["step"] == 3 and path.name == kill_in:  # half the bytes in the temporary file, then wait
        with open(path.parent / f".{path.name}.partial.tmp", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        print("IN-SAVE", flush=True)
        time.sleep(120)
    real_write(path, data)

ck.atomic_write_bytes = write
torch.manual_seed(0)
model = create("tiny", **eval(sys.argv[3]))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in (1, 2, 3):
    opt.zero_grad()
    sum(p.square().sum() for p in model.parameters()).backward()
    opt.step()
    saving["step"] = step
    ema = {k: v * 0.5 for k, v in model.state_dict().items()}
    ck.save_checkpoint(run, step, model, ema, opt, {"note": "kill test"}, keep=2)
    print("SAVED", step, weights_checksum(model.state_dict()), flush=True)
"""


@pytest.mark.parametrize("kill_in", ["model.safetensors", "latest"])
def test_sigkill_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path, kill_in):
    run = tmp_path / "run"
    proc = subprocess.Popen([PYTHON, "-c", _SAVE_LOOP, str(run), kill_in, repr(MICRO)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    saved = {}
    try:
        for line in proc.stdout:
            if line.startswith("SAVED"):
                _, step, checksum = line.split()
                saved[int(step)] = checksum
            if line.startswith("IN-SAVE"):
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the saver was not killed mid-save: {err[-2000:]}"
    assert sorted(saved) == [1, 2]
    ck = latest_checkpoint(run)
    assert ck.name == "step_00000002"
    torch.manual_seed(1)
    model = create("tiny", **MICRO)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ema, state = load_checkpoint(ck, model, opt)
    assert state["step"] == 2 and weights_checksum(model.state_dict()) == saved[2]
    assert len(opt.state) == len(list(model.parameters()))
    leftovers = list((run / "checkpoints").glob("*.tmp*"))
    assert leftovers, "the kill should have left the interrupted save's temporary files"


def test_restart_without_resume_keeps_its_own_checkpoints_and_a_dangling_pointer_falls_back(tmp_path, capsys):
    loop.train(micro_config(tmp_path, steps=4, save_every=2))            # an older run: step 2 and 4
    loop.train(micro_config(tmp_path, steps=2, save_every=1, resume=False, keep=1, seed=1))
    ckdir = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path).name == "step_00000002"           # the new run's, not pruned
    assert json.loads((ckdir / "step_00000002" / "state.json").read_text())["train_config"]["seed"] == 1
    assert sorted(p.name for p in ckdir.glob("step_*")) == ["step_00000002", "step_00000004"]
    (ckdir / "latest").write_text("step_00000009")
    assert latest_checkpoint(tmp_path).name == "step_00000004"
    assert "names step_00000009, which is missing" in capsys.readouterr().err


# ------------------------------------------------------------------ non-finite loss
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    cfg = micro_config(tmp_path / "run", steps=6, save_every=2)
    torch.manual_seed(cfg.seed)
    model = create(cfg.model_config())
    calls = []

    def poison(module, inputs, outputs):  # the 4th step's forward goes NaN
        calls.append(1)
        return tuple(o * float("nan") for o in outputs) if len(calls) == 4 else outputs

    model.register_forward_hook(poison)
    with pytest.raises(loop.NonFiniteLoss, match=r"training loss is nan at step 4; .*step_00000002"):
        loop.train(cfg, model)
    ck = latest_checkpoint(tmp_path / "run")
    assert ck.name == "step_00000002"
    _, state = load_checkpoint(ck, create(cfg.model_config()), torch.optim.Adam(model.parameters()))
    assert state["step"] == 2


def test_cli_non_finite_loss_is_one_line_and_exit_1(tmp_path, capsys):
    # lr 1e30: Adam's first update throws the weights to ~1e30, the next forward overflows
    argv = ["--out", str(tmp_path / "run"), "--model", json.dumps(MICRO), "--steps", "5", "--batch-size", "2",
            "--lr", "1e30", "--eta", "0", "--save-every", "1", "--num-clips", "4", "--no-progress", "--device", "cpu"]
    assert main(argv) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and " at step " in lines[0], lines
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    ck = latest_checkpoint(tmp_path / "run")
    assert ck.name == f"step_{step - 1:08d}" and ck.name in lines[0]


# ------------------------------------------------------------------ DDP (torchrun, gloo)
@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(tmp_path):
    common = ["-m", "avfast.train", "--model", json.dumps(MICRO), "--steps", "3", "--batch-size", "4",
              "--lr", "1e-3", "--eta", "5e-5", "--save-every", "3", "--log-every", "1", "--num-clips", "8",
              "--threads", "1", "--no-progress", "--device", "cpu"]
    one = subprocess.Popen([PYTHON, *common, "--out", str(tmp_path / "one")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=cli_env())
    two = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                          "--nproc_per_node", "2", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=cli_env(), timeout=300)
    _, one_err = one.communicate(timeout=300)
    assert one.returncode == 0, one_err[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    a = _checkpoint_tensors(tmp_path / "one" / "checkpoints" / "step_00000003")
    b = _checkpoint_tensors(tmp_path / "two" / "checkpoints" / "step_00000003")
    torch.manual_seed(0)
    init = create(micro_config("unused").model_config()).state_dict()
    moved = max(float((a["model"][k] - init[k]).abs().max()) for k in init)
    for part in ("model", "ema"):
        diff = max(float((a[part][k] - b[part][k]).abs().max()) for k in a[part])
        # measured 3e-4 to 5e-3 of the move (5e-3 on a loaded machine with one thread): summation order (two
        # half-batch grads vs one) is all that differs, and Adam's normalised step amplifies it for weights
        # whose gradient is near zero; a rank training on its own half alone would differ by about the move itself
        assert diff <= 2e-2 * moved, f"{part}: DDP differs by {diff:.3e}; training moved weights by {moved:.3e}"
    la, lb = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [s for s, _ in lb] == [1, 2, 3], "rank 0 alone writes the log: one row per step"
    for (_, x), (_, y) in zip(la, lb):
        assert abs(x - y) <= 1e-5 * abs(x), (la, lb)
    written = sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert not [p for p in written if ".tmp" in p], written


# ------------------------------------------------------------------ options
BAD_OPTIONS = [
    ({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"), ({"lr_decay": 0.0}, "lr_decay"),
    ({"lr_decay": 1.5}, "lr_decay"), ({"lr_decay_every": 0}, "lr_decay_every"), ({"lr_min": -1.0}, "lr_min"),
    ({"warmup": -1}, "warmup"), ({"grad_clip": -1.0}, "grad_clip"), ({"eta": -1.0}, "eta"),
    ({"ema_decay": 1.0}, "ema_decay"), ({"num_video_negatives": -1}, "num_video_negatives"),
    ({"num_audio_negatives": -1}, "num_audio_negatives"), ({"negative_methods": ("twist",)}, "negative_methods"),
    ({"negative_methods": ()}, "negative_methods"), ({"negative_methods": ("swap", "swap")}, "negative_methods"),
    ({"weight_video": -1.0}, "weight_video"), ({"precision": "fp8"}, "precision"), ({"clean_prob": 1.5}, "clean_prob"),
    ({"clean_prob": 0.3, "eta": 1e-4}, "clean_prob"),
    ({"eta": 1e-4, "num_video_negatives": 0, "num_audio_negatives": 0}, "num_video_negatives"),
    ({"preset": "huge"}, "preset"), ({"data": "/no/such/folder"}, "data"), ({"autoencoder": "/no/such/vae"}, "autoencoder"),
    ({"num_clips": 0}, "num_clips"), ({"save_every": 0}, "save_every"), ({"keep": -1}, "keep"),
    ({"log_every": 0}, "log_every"), ({"threads": -1}, "threads"), ({"device": "tpu"}, "device"),
    ({"model": {"channels": 3}}, "model"), ({"model": {"base_channels": 0}}, "base_channels"),
    ({"preset": "paper-128"}, "autoencoder"), ({"init": "/no/such/model"}, "init"),
]


@pytest.mark.parametrize("options,name", BAD_OPTIONS, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD_OPTIONS)])
def test_bad_option_is_a_clear_value_error(options, name):
    with pytest.raises(ValueError) as e:
        TrainConfig(**options)
    message = str(e.value)
    assert message.startswith("TrainConfig: ") and name in message and "got " in message, message


@pytest.mark.parametrize("options,name", [({"steps": "10"}, "steps"), ({"steps": True}, "steps"),
                                          ({"lr": "fast"}, "lr"), ({"model": "cmcpe"}, "model")])
def test_wrong_option_type_is_a_type_error(options, name):
    with pytest.raises(TypeError, match=rf"\b{name} must be"):
        TrainConfig.from_dict(options)


def test_from_dict_refuses_unknown_options_and_reads_yaml_style_numbers():
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['step'\]"):
        TrainConfig.from_dict({"step": 3})
    assert TrainConfig.from_dict({"lr": "1e-4", "steps": 3}).lr == 1e-4  # YAML 1.1 reads 1e-4 as a string


def test_help_documents_every_option(capsys):
    helps = _field_help()
    text = build_parser().format_help()
    for name in TrainConfig.__dataclass_fields__:
        assert helps.get(name, "").strip(), f"TrainConfig.{name} has no comment for --help"
        assert f"--{name.replace('_', '-')}" in text, name
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--config" in capsys.readouterr().out


@pytest.mark.parametrize("argv,expected", [
    (["--steps", "0"], "steps must be >= 1"),
    (["--data", "/no/such/clips"], "data must be 'synthetic' or an existing folder"),
    (["--config", "/no/such/file.yaml"], "--config: no file at"),
])
def test_cli_bad_options_exit_2_with_one_line(argv, expected, capsys):
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_cli_reads_a_yaml_config_and_flags_override_it(tmp_path, capsys):
    pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    conf = tmp_path / "run.yaml"
    conf.write_text(f"out: {tmp_path / 'run'}\npreset: tiny\nmodel:\n" +
                    "".join(f"  {k}: {json.dumps(v)}\n" for k, v in MICRO.items()) +
                    "steps: 1\nbatch_size: 2\nlr: 1e-4\neta: 0\nnum_clips: 4\nprogress: false\ndevice: cpu\n")
    assert main(["--config", str(conf), "--steps", "2"]) == 0, capsys.readouterr().err
    state = json.loads((latest_checkpoint(tmp_path / "run") / "state.json").read_text())
    assert state["step"] == 2 and state["train_config"]["lr"] == 1e-4 and state["train_config"]["model"] == MICRO


def test_cli_without_pyyaml_says_so(tmp_path, monkeypatch, capsys):
    conf = tmp_path / "run.yml"
    conf.write_text("steps: 1\n")
    monkeypatch.setitem(__import__("sys").modules, "yaml", None)
    assert main(["--config", str(conf)]) == 2
    assert "needs PyYAML (pip install pyyaml)" in capsys.readouterr().err


def test_init_starts_from_a_model_folders_weights_and_refuses_another_model(tmp_path):
    from avfast.models.pretrained import load_model_folder

    first = micro_config(tmp_path / "first", steps=2)
    loop.train(first)  # final/ holds config.json + model.safetensors + ema.safetensors
    base = tmp_path / "first" / "final"
    start = loop._initial_model(micro_config(tmp_path / "second", init=str(base)))
    ema = load_model_folder(base).state_dict()  # a checkpoint folder's EMA, not its raw weights
    assert all(torch.equal(start.state_dict()[k], ema[k]) for k in ema)
    torch.manual_seed(0)
    assert weights_checksum(start.state_dict()) != weights_checksum(create(first.model_config()).state_dict())
    loop.train(micro_config(tmp_path / "second", init=str(base)))
    assert len(_losses(tmp_path / "second")) == 4
    with pytest.raises(ValueError, match="init=.* is a different model from preset='tiny'"):
        loop._initial_model(micro_config(tmp_path / "third", init=str(base), model={**MICRO, "base_channels": 8}))


def test_a_model_trained_with_clean_conditions_says_so(tmp_path):
    """--clean-prob > 0 records condition_mode 'clean' in the model's config (samplers then pass v2a / a2v
    conditions clean by default); an --init folder's sampling fields do not make it another model."""
    clean = loop._initial_model(micro_config(tmp_path / "a", clean_prob=0.3))
    assert clean.config.condition_mode == "clean" and clean.config.version == 3
    assert loop._initial_model(micro_config(tmp_path / "b")).config.condition_mode == "replace"
    clean.config = clean.config.replace(joint_refine=("v2a",), sampling_gamma=0.05, distilled_steps=4,
                                        distilled_sampler="ddim", distilled_gamma=0.5, long_window=12)
    clean.save_pretrained(tmp_path / "folder")
    again = loop._initial_model(micro_config(tmp_path / "c", init=str(tmp_path / "folder")))
    assert again.config.condition_mode == "replace" and again.config.joint_refine == ("v2a",)
    # γ and the long window were chosen for the init weights, the step grid was distilled into them: a
    # fine-tune keeps none of them
    assert again.config.sampling_gamma is None and again.config.distilled_steps == 0
    assert again.config.long_window == 0
    assert (again.config.distilled_sampler, again.config.distilled_gamma) == ("", 1.0)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in clean.state_dict().items())
