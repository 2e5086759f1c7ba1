"""`python -m avfast.sample` end to end with a small random U-Net checkpoint."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from test_diffusion_analytic import one_thread  # noqa: F401

pytest.importorskip("av", reason="PyAV is not installed (pip install \"avfast[media]\"); the CLI writes mp4 files")
pytest.importorskip("soundfile", reason="soundfile is not installed; the a2v test reads a wav file")

from avfast import models  # noqa: E402
from avfast.data import read_video, save_audio, write_video  # noqa: E402
from avfast.sample import main  # noqa: E402

FRAMES, AUDIO_LENGTH = 4, 16


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    models.save_pretrained(models.create("tiny", frames=FRAMES, audio_length=AUDIO_LENGTH), d)
    return d


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "clip.mp4"
    c, f, y, x = torch.meshgrid(torch.arange(3.0), torch.arange(6.0), torch.arange(32.0), torch.arange(32.0), indexing="ij")
    video = 0.6 * torch.sin(x / 5 + y / 7 + f + 2 * c)  # smooth, so H.264 keeps it nearly intact
    audio = 0.3 * torch.sin(torch.arange(16000 * 6 // 10) / 16000 * 2 * torch.pi * 440)
    write_video(path, video, fps=10, audio=audio, sample_rate=16000)
    return path


def _summary(out: str) -> tuple[int, float, float]:
    m = re.search(r"(\d+) denoiser calls in ([\d.]+) s = ([\d.]+) ms/FE .* ([\d.]+) s per clip", out)
    assert m, out
    return int(m.group(1)), float(m.group(3)), float(m.group(4))


def test_joint_writes_mp4_files_with_sound(checkpoint, tmp_path, capsys):
    rc = main(["--checkpoint", str(checkpoint), "--steps", "3", "--sampler", "dpmpp2m", "--batch", "2", "--seed", "4",
               "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    calls, ms_fe, s_clip = _summary(out)
    assert calls == 3 and ms_fe > 0 and s_clip > 0
    assert "Griffin-Lim fallback" in out
    for seed in (4, 5):
        clip = read_video(tmp_path / f"joint_seed{seed}.mp4", fps=10, size=None)
        assert clip.video.shape == (3, FRAMES, 32, 32)
        assert clip.audio is not None and clip.audio.shape[0] > 0.8 * AUDIO_LENGTH * 256


def test_joint_in_passes_from_the_command_line(checkpoint, tmp_path, capsys):
    rc = main(["--checkpoint", str(checkpoint), "--steps", "2", "--refine", "a2v", "v2a", "--condition-mode", "clean",
               "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert _summary(out)[0] == 3 * 2  # three passes of 2 steps
    assert "joint then a2v then v2a, dpmpp2m, 2 steps per pass" in out
    assert read_video(tmp_path / "joint_seed0.mp4", fps=10, size=None).audio is not None


def test_v2a_keeps_the_input_video(checkpoint, clip_mp4, tmp_path, capsys):
    rc = main(["--checkpoint", str(checkpoint), "--task", "v2a", "--input", str(clip_mp4), "--steps", "2",
               "--guidance", "0.1", "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    written = read_video(tmp_path / "v2a_seed0.mp4", fps=10, size=None)
    source = read_video(clip_mp4, fps=10, size=32, max_frames=FRAMES)
    assert written.audio is not None
    assert float((written.video - source.video).abs().mean()) < 0.03  # only H.264 re-encoding apart


def test_a2v_from_a_wav_file(checkpoint, tmp_path, capsys):
    wav = tmp_path / "sound.wav"
    save_audio(wav, 0.2 * torch.sin(torch.arange(8000) / 16000 * 2 * torch.pi * 220))
    rc = main(["--checkpoint", str(checkpoint), "--task", "a2v", "--input", str(wav), "--steps", "2",
               "--condition-mode", "clean", "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "audio: the input sound" in out
    assert read_video(tmp_path / "a2v_seed0.mp4", fps=10, size=None).video.shape == (3, FRAMES, 32, 32)


def test_without_checkpoint_and_no_default_model_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path / "absent")
    assert main(["--out", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "python -m avfast.sample: error: no trained default model ships with this avfast yet; pass --checkpoint DIR"


@pytest.mark.parametrize("argv,message", [
    (["--task", "v2a"], "--task v2a needs --input FILE"),
    (["--task", "v2a", "--input", "missing.mp4"], "missing.mp4"),
    (["--task", "a2v", "--input", "{bad}"], "cannot read"),
    (["--steps", "0"], "`steps` must be an int in [1, 1000]"),
    (["--gamma", "0"], "`gamma`"),
    (["--guidance", "-1", "--task", "a2v", "--input", "{wav}"], "`guidance` must be a finite number >= 0"),
    (["--cfg-scale", "2"], "--cfg-scale: this model was trained without class labels, so it has no classifier-free"),
    (["--runtime", "nosuch"], "--runtime: 'nosuch' is not available; this build has torch"),
    (["--checkpoint", "/nonexistent/dir"], "is not a folder"),
    (["--refine", "v2a", "--task", "a2v", "--input", "{wav}"], "--refine redraws a modality of a joint clip"),
    (["--refine", "none", "v2a"], "--refine none (the joint pass alone) takes no other pass, got none v2a"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file")
    wav = tmp_path / "ok.wav"
    save_audio(wav, torch.zeros(8000))
    argv = [a.replace("{bad}", str(bad)).replace("{wav}", str(wav)) for a in argv]
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(checkpoint)] + argv
    assert main(argv + ["--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_runs_as_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "avfast.sample", "--runtime", "onnx"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--runtime: 'onnx' is not available" in proc.stderr, proc.stderr
    assert "RuntimeWarning" not in proc.stderr  # no runpy double-import warning


def test_precision_bf16_runs_the_network_under_autocast(checkpoint, tmp_path, capsys):
    from avfast.export import randomize_zero_layers_
    from avfast._precision import Autocast

    model = randomize_zero_layers_(models.from_pretrained(checkpoint), seed=0)  # zero-init outputs would be 0
    v, a = torch.randn(1, 3, FRAMES, 32, 32), torch.randn(1, 80, AUDIO_LENGTH)
    t = torch.tensor([400.0])
    with torch.no_grad():
        want = model(v, a, t, t)
        got = Autocast(model, torch.bfloat16)(v, a, t, t)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and g.shape == w.shape
        err = ((g - w).abs().max() / w.abs().max()).item()
        assert 0 < err < 5e-2, err  # bf16 arithmetic: not bitwise fp32, within the bf16 bound
    rc = main(["--checkpoint", str(checkpoint), "--steps", "2", "--precision", "bf16", "--out", str(tmp_path),
               "--no-progress", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "joint_seed0.mp4").is_file()
