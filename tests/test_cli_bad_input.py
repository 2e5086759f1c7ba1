"""Bad input at the command line (issue 21): each case exits with its status, says one line on stderr,
shows no traceback and leaves nothing behind. One table per program; each row is (id, argv, files to
make first, expected exit status, a phrase the line must contain)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest


def _wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(4)
        w.setframerate(rate)
        w.writeframes(samples.astype(np.float32).tobytes())


def _nan_wav(path: Path) -> None:
    # a 32-bit float WAV (format 3) full of NaN; the wave module writes PCM headers, so patch the format tag
    _wav(path, np.full(16_000, np.nan))
    data = bytearray(path.read_bytes())
    data[20:22] = (3).to_bytes(2, "little")
    path.write_bytes(bytes(data))


def _noise_wav(path: Path) -> None:
    _wav(path, np.random.default_rng(0).standard_normal(16_000) * 0.1)
    data = bytearray(path.read_bytes())
    data[20:22] = (3).to_bytes(2, "little")
    path.write_bytes(bytes(data))


def _checkpoint_run(run: Path, corrupt_latest: bool = False) -> None:
    """A run folder as the training loop leaves it: two complete checkpoints, `latest` naming step 2."""
    import torch

    from avfast.models import create
    from avfast.train.checkpoint import save_checkpoint
    from avfast.train.config import TrainConfig

    cfg = TrainConfig(out=str(run), batch_size=2, steps=4, progress=False)
    torch.manual_seed(0)
    model = create(cfg.model_config())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for step in (1, 2):
        save_checkpoint(run, step, model, ema, opt, {"train_config": cfg.to_dict(),
                                                     "model_config": model.config.to_dict()}, keep=0)
    if corrupt_latest:
        f = run / "checkpoints" / "step_00000002" / "model.safetensors"
        f.write_bytes(f.read_bytes()[:1000])


def _setup(name: str, tmp: Path) -> None:
    if name == "binary":
        (tmp / "binary.json").write_bytes(bytes(range(256)) * 4)
    elif name == "file":
        (tmp / "a_file").write_text("x")
    elif name == "nan_wavs":
        for d in ("gen", "ref"):
            (tmp / d).mkdir()
        _nan_wav(tmp / "gen" / "x.wav")
        _noise_wav(tmp / "ref" / "x.wav")
    elif name == "no_rows":
        (tmp / "r.json").write_text(json.dumps({"settings": {}}))
    elif name == "plot_folder":
        (tmp / "r.json").write_text(json.dumps({"settings": {"clips": 1}, "rows": {
            "ceiling": {"kind": "ceiling", "label": "c", "scores": {}}}}))
        (tmp / "plotdir").mkdir()
    elif name == "run":
        _checkpoint_run(tmp / "run")
    elif name == "nan_wav":
        _nan_wav(tmp / "nan.wav")
    elif name == "folder":
        (tmp / "a_folder").mkdir()
    elif name == "binary_config":
        (tmp / "ckpt").mkdir()
        (tmp / "ckpt" / "config.json").write_bytes(bytes(range(256)) * 4)
    elif name == "vocoders":
        _vocoder_files(tmp)


def _vocoder_files(tmp: Path) -> None:
    """What a user might pass as --vocoder instead of MelGAN weights: none of it may be unpickled."""
    import pickle

    import torch
    from safetensors.torch import save_file

    (tmp / "melgan.pkl").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    torch.save({"model.1.bias": torch.zeros(3)}, tmp / "melgan.pt")
    save_file({"model.1.bias": torch.zeros(512), "x": torch.zeros(4)}, str(tmp / "whole.safetensors"))
    (tmp / "truncated.safetensors").write_bytes((tmp / "whole.safetensors").read_bytes()[:40])
    (tmp / "pickle.safetensors").write_bytes(pickle.dumps({"weight": [1.0]}))
    save_file({"down.0.attn.weight": torch.zeros(4, 4)}, str(tmp / "unet.safetensors"))


SAMPLE = "avfast.sample"
DEMO = "avfast.demo"
EXPORT = "avfast.export"
TRAIN = "avfast.train"
METRICS = "avfast.metrics"
CLAIMS = "avfast.experiments.claims"
SMALL = ["--steps", "1", "--no-progress", "--num-clips", "2"]

CASES = [
    ("export-name-escapes", [EXPORT, "--name", "../..", "--bench-steps", "0", "--no-progress", "--out", "out"], None,
     2, "--name must be a plain file name stem"),
    ("export-frames-too-large", [EXPORT, "--frames", "10000", "--no-progress", "--out", "out"], None, 2,
     "GiB of memory"),
    ("export-out-is-a-file", [EXPORT, "--out", "a_file", "--bench-steps", "0", "--no-progress"], "file", 2,
     "is a file"),
    ("train-binary-config", [TRAIN, "--config", "binary.json", "--out", "run"], "binary", 2,
     "binary.json is not a text file"),
    ("train-lr-inf", [TRAIN, "--lr", "inf", "--out", "run", *SMALL], None, 2, "lr must be a finite number"),
    ("train-lr-nan", [TRAIN, "--lr", "nan", "--out", "run", *SMALL], None, 2, "lr must be a finite number"),
    ("train-cuda-without-cuda", [TRAIN, "--device", "cuda", "--out", "run", *SMALL], None, 2, "no CUDA device"),
    ("train-out-is-a-file", [TRAIN, "--out", "a_file", *SMALL], "file", 2, "is a file, not a run folder"),
    ("train-out-unwritable", [TRAIN, "--out", "/proc/avfast-run", *SMALL], None, 2, "cannot be written"),
    ("train-frames-too-large", [TRAIN, "--model", '{"frames": 10000}', "--out", "run", *SMALL], None, 2,
     "GiB of memory"),
    ("train-resume-changed-batch", [TRAIN, "--out", "run", "--batch-size", "4", *SMALL], "run", 2,
     "--batch-size is 4 but the run"),
    ("train-resume-changed-model", [TRAIN, "--out", "run", "--batch-size", "2", "--model", '{"dropout": 0.1}',
                                    *SMALL], "run", 2, "--model is"),
    ("metrics-beats-nan", [METRICS, "beats", "gen", "ref"], "nan_wavs", 2, "NaN"),
    ("claims-joint-model-typo", [CLAIMS, "evaluate", "--joint-model", "foo", "--json", "c.json", "--plot", "c.png"],
     None, 2, "--joint-model: unknown model(s) 'foo'"),
    ("claims-report-no-rows", [CLAIMS, "report", "--json", "r.json", "--plot", "r.png"], "no_rows", 2,
     "holds no claims results"),
    ("claims-report-binary-json", [CLAIMS, "report", "--json", "binary.json", "--plot", "r.png"], "binary", 2,
     "is not a text file"),
    ("claims-report-plot-folder", [CLAIMS, "report", "--json", "r.json", "--plot", "plotdir"], "plot_folder", 2,
     "--plot: plotdir is a folder"),
    # claims evaluate: everything it would refuse (or silently drop) after the clips are made, before any work
    ("claims-sampler-unknown", [CLAIMS, "evaluate", "--sampler", "euler", "--json", "c.json", "--plot", "c.png"],
     None, 2, "--sampler: 'euler' is not a sampler"),
    ("claims-joint-model-untrained", [CLAIMS, "evaluate", "--runs", "runs", "--json", "c.json", "--plot", "c.png"],
     None, 2, "--joint-model: 'ncmmd-indep' not trained yet"),
    ("claims-replace-models-untrained", [CLAIMS, "evaluate", "--runs", "runs", "--joint-model", "base",
                                         "--replace-models", "ncmmd", "--json", "c.json", "--plot", "c.png"],
     None, 2, "--replace-models: 'ncmmd' not trained yet"),
    ("claims-steps-zero", [CLAIMS, "evaluate", "--steps", "0", "--json", "c.json", "--plot", "c.png"], None, 2,
     "--steps must be in 1..1000"),
    ("claims-gammas-nan", [CLAIMS, "evaluate", "--gammas", "1", "nan", "--json", "c.json", "--plot", "c.png"], None, 2,
     "--gammas must be finite numbers > 0"),
    ("claims-base-not-a-model", [CLAIMS, "evaluate", "--base", "a_folder", "--json", "c.json", "--plot", "c.png"],
     "folder", 2, "--base: 'a_folder' is not a model folder"),
    # sample: runtimes and devices this machine lacks, before a model is loaded or exported
    ("sample-onnxruntime-cuda-without-cuda", [SAMPLE, "--runtime", "onnxruntime-cuda", "--out", "out"], None, 2,
     "runtimes that run on cpu here: torch"),
    ("sample-tensorrt-missing", [SAMPLE, "--runtime", "tensorrt", "--out", "out"], None, 2,
     "runtime 'tensorrt' cannot run here"),
    ("sample-refine-unknown", [SAMPLE, "--refine", "joint", "--out", "out"], None, 2,
     "argument --refine: invalid choice: 'joint'"),
    ("sample-runtime-unknown", [SAMPLE, "--runtime", "onnx", "--out", "out"], None, 2, "--runtime: 'onnx' is not available"),
    ("sample-device-foo", [SAMPLE, "--device", "foo", "--out", "out"], None, 2, "--device: 'foo' is not a device name"),
    ("sample-device-cuda-without-cuda", [SAMPLE, "--device", "cuda", "--out", "out"], None, 2, "no CUDA device"),
    ("sample-device-mps", [SAMPLE, "--device", "mps", "--out", "out"], None, 2, "avfast runs on cpu or cuda"),
    # sample: --out, --input, --checkpoint, --autoencoder
    ("sample-out-is-a-file", [SAMPLE, "--out", "a_file"], "file", 2, "--out: 'a_file' is a file"),
    ("sample-out-under-a-file", [SAMPLE, "--out", "a_file/clips"], "file", 2, "'a_file' is a file"),
    ("sample-out-unwritable", [SAMPLE, "--out", "/proc/avfast-samples"], None, 2, "cannot be written"),
    ("sample-input-folder", [SAMPLE, "--task", "v2a", "--input", "a_folder", "--out", "out"], "folder", 2,
     "--input: 'a_folder' is a folder"),
    ("sample-input-missing", [SAMPLE, "--task", "v2a", "--input", "nope.mp4", "--out", "out"], None, 2,
     "--input: no file at 'nope.mp4'"),
    ("sample-a2v-nan-wav", [SAMPLE, "--task", "a2v", "--input", "nan.wav", "--out", "out"], "nan_wav", 2,
     "--input: 'nan.wav' has NaN or infinite samples"),
    ("sample-v2a-not-a-video", [SAMPLE, "--task", "v2a", "--input", "a_file", "--out", "out"],
     "file", 2, "cannot read 'a_file' as a video file"),
    ("sample-checkpoint-file", [SAMPLE, "--checkpoint", "a_file", "--out", "out"], "file", 2, "is not a folder"),
    ("sample-checkpoint-empty-folder", [SAMPLE, "--checkpoint", "a_folder", "--out", "out"], "folder", 2,
     "--checkpoint: 'a_folder' has no config.json (expected config.json + model.safetensors)"),
    ("export-checkpoint-empty-folder", [EXPORT, "--checkpoint", "a_folder", "--out", "out"], "folder", 2,
     "--checkpoint: 'a_folder' has no config.json (expected config.json + model.safetensors)"),
    ("sample-checkpoint-binary-config", [SAMPLE, "--checkpoint", "ckpt", "--out", "out"], "binary_config", 2,
     "config.json is not a text file"),
    ("sample-autoencoder-file", [SAMPLE, "--autoencoder", "a_file", "--out", "out"], "file", 2,
     "--autoencoder: 'a_file' is a file"),
    # sample --vocoder: a pickle, a torch.save file, truncated or other weights: one line, nothing unpickled
    ("sample-vocoder-pickle", [SAMPLE, "--vocoder", "melgan.pkl", "--out", "out"], "vocoders", 2,
     "pickle checkpoints are refused"),
    ("sample-vocoder-torch-save", [SAMPLE, "--vocoder", "melgan.pt", "--out", "out"], "vocoders", 2,
     "pickle checkpoints are refused"),
    ("sample-vocoder-truncated", [SAMPLE, "--vocoder", "truncated.safetensors", "--out", "out"], "vocoders", 2,
     "is not a readable .safetensors file"),
    ("sample-vocoder-pickle-renamed", [SAMPLE, "--vocoder", "pickle.safetensors", "--out", "out"], "vocoders", 2,
     "is not a readable .safetensors file"),
    ("sample-vocoder-other-model", [SAMPLE, "--vocoder", "unet.safetensors", "--out", "out"], "vocoders", 2,
     "is not a MelGAN generator's weights"),
    ("sample-vocoder-wrong-tensors", [SAMPLE, "--vocoder", "whole.safetensors", "--out", "out"], "vocoders", 2,
     "is not a MelGAN generator"),
    ("sample-vocoder-folder", [SAMPLE, "--vocoder", "a_folder", "--out", "out"], "folder", 2, "is a folder"),
    # sample: numbers
    ("sample-batch-zero", [SAMPLE, "--batch", "0", "--out", "out"], None, 2, "--batch must be >= 1"),
    ("sample-steps-zero", [SAMPLE, "--steps", "0", "--out", "out"], None, 2, "`steps` must be an int in [1, 1000]"),
    ("sample-steps-huge", [SAMPLE, "--steps", "100000", "--out", "out"], None, 2, "`steps` must be an int in [1, 1000]"),
    ("sample-eta-nan", [SAMPLE, "--eta", "nan", "--out", "out"], None, 2, "`eta` must be a finite number"),
    ("sample-gamma-inf", [SAMPLE, "--gamma", "inf", "--out", "out"], None, 2, "`gamma` (timestep adjustment) must be"),
    ("sample-cfg-scale-nan", [SAMPLE, "--cfg-scale", "nan", "--out", "out"], None, 2,
     "--cfg-scale must be a finite number"),
    ("sample-cfg-scale-three", [SAMPLE, "--cfg-scale", "1", "2", "3", "--out", "out"], None, 2,
     "--cfg-scale takes one scale, or two"),
    ("sample-seed-negative", [SAMPLE, "--seed", "-1", "--out", "out"], None, 2, "--seed must be >= 0"),
    ("sample-steps-not-a-number", [SAMPLE, "--steps", "ten", "--out", "out"], None, 2, "invalid int value: 'ten'"),
    ("sample-label-without-labels", [SAMPLE, "--label", "3", "--out", "out"], None, 2,
     "this model was trained without class labels"),
    ("sample-one-clip-too-large", [SAMPLE, "--out", "out"], "memory:0.01", 2,
     "of memory (estimated), more than the"),
    # demo
    ("demo-out-is-a-file", [DEMO, "--out", "a_file"], "file", 2, "--out: 'a_file' is a file"),
    ("demo-out-unwritable", [DEMO, "--out", "/proc/avfast-demo"], None, 2, "cannot be written"),
    ("demo-steps-zero", [DEMO, "--steps", "0", "--out", "out"], None, 2, "--steps must be >= 1"),
    ("demo-seed-negative", [DEMO, "--seed", "-2", "--out", "out"], None, 2, "--seed must be >= 0"),
    ("demo-checkpoint-file", [DEMO, "--checkpoint", "a_file", "--out", "out"], "file", 2, "is not a folder"),
    ("demo-sampler-unknown", [DEMO, "--sampler", "euler", "--out", "out"], None, 2, "invalid choice: 'euler'"),
    # train.autoencoder, experiments.quality: --out before any work
    ("codec-out-is-a-file", ["avfast.train.autoencoder", "--out", "a_file"], "file", 2, "--out: 'a_file' is a file"),
    ("codec-out-unwritable", ["avfast.train.autoencoder", "--out", "/proc/avfast-codec"], None, 2,
     "cannot be written"),
    ("quality-out-is-a-file", ["avfast.experiments.quality", "--out", "a_file"], "file", 2,
     "--out: 'a_file' is a file"),
]


def _skip_reason(argv: list[str]) -> str | None:
    import importlib.util

    import torch

    if any("cuda" in a for a in argv) and torch.cuda.is_available():
        return "this machine has CUDA"
    if "tensorrt" in argv and importlib.util.find_spec("tensorrt") is not None:
        return "TensorRT is installed here"
    return None


@pytest.mark.parametrize("argv,setup,status,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line(tmp_path, argv, setup, status, phrase):
    reason = _skip_reason(argv)
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if setup and setup.startswith("memory:"):  # this machine's memory as seen by avfast._memory
        env["AVFAST_MEMORY_LIMIT_GIB"] = setup.split(":", 1)[1]
    elif setup:
        _setup(setup, tmp_path)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    r = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=env)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in lines if "error" in line]
    # metrics names each unscorable file on its own line, then says none could be scored (its documented form)
    assert len(errors) == (2 if argv[0] == METRICS else 1) and phrase in errors[0], r.stderr
    after = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert after - before <= {Path("out")} and not list(tmp_path.rglob("*.tmp")), sorted(map(str, after - before))


def test_resume_with_a_corrupt_latest_checkpoint_falls_back(tmp_path, capsys):
    from avfast.train.checkpoint import latest_checkpoint

    _checkpoint_run(tmp_path / "run", corrupt_latest=True)
    assert latest_checkpoint(tmp_path / "run").name == "step_00000001"
    assert "damaged" in capsys.readouterr().err


def test_export_removes_staging_folders_of_killed_exports(tmp_path):
    from avfast.export.pipeline import remove_stale_staging

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tiny-fp32-b1-f18.{dead.pid}-abc.staging"
    live = tmp_path / f".tiny-fp32-b1-f18.{os.getpid()}-abc.staging"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "x.onnx").write_bytes(b"0" * 100)
    assert remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_claims_report_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avfast._figures import save_figure

    fig = plt.figure()
    monkeypatch.setattr(fig, "savefig", lambda path, **kw: (Path(path).write_bytes(b"half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        save_figure(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_numba_caches_in_a_per_user_folder(tmp_path):
    """librosa's numba functions (the beat tracker) are cached under ~/.cache/avfast/numba, not in
    site-packages (a corrupted shared cache there crashed librosa with SIGSEGV); a user's own
    NUMBA_CACHE_DIR is kept. Checked in fresh processes, with numba imported before avfast too."""
    pytest.importorskip("numba")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    probe = ("import os, numba.core.config as c; import avfast.metrics.beats as b; "
             "from avfast._numba import use_user_cache; use_user_cache(); "
             "print(os.environ['NUMBA_CACHE_DIR']); print(c.CACHE_DIR)")
    for code in (probe, "import avfast; " + probe, "import numba; " + probe):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(tmp_path / "cache" / "avfast" / "numba")] * 2, (code, out.stdout)
    out = subprocess.run([sys.executable, "-c", "import avfast; " + probe], env={**env, "NUMBA_CACHE_DIR": str(tmp_path / "mine")},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [str(tmp_path / "mine")] * 2, out.stdout


def test_sample_makes_a_batch_beyond_memory_in_pieces(monkeypatch):
    """`sample --batch 100000` no longer allocates 100000 clips at once: clips_per_call (the meta-device
    estimate against half the available memory) gives the pieces it makes and writes one after another;
    one clip that cannot fit is refused naming the size."""
    from avfast._cli import CliError
    from avfast.models import preset
    from avfast.sample import clips_per_call

    cfg = preset("tiny")
    monkeypatch.setenv("AVFAST_MEMORY_LIMIT_GIB", "2")
    pieces = clips_per_call(cfg, 100_000, "cpu")
    assert 1 <= pieces < 100_000
    assert clips_per_call(cfg, 2, "cpu") == 2
    monkeypatch.setenv("AVFAST_MEMORY_LIMIT_GIB", "0.001")
    with pytest.raises(CliError, match="one clip of 18 frames .* of memory"):
        clips_per_call(cfg, 1, "cpu")


def test_a_failed_video_write_leaves_nothing(tmp_path, monkeypatch):
    """write_video writes a temporary file and renames it when complete: a failure mid-write (the audio
    encoder, a full disk) leaves neither a video-only mp4 nor the temporary file."""
    import torch

    from avfast.data import video

    def fail_after_writing(av, path, *args):
        Path(path).write_bytes(b"video only")
        raise RuntimeError("audio encoder failed")

    monkeypatch.setattr(video, "_encode_video", fail_after_writing)
    with pytest.raises(RuntimeError):
        video.write_video(tmp_path / "clip.mp4", torch.zeros(3, 2, 16, 16), audio=torch.zeros(1600))
    assert list(tmp_path.iterdir()) == []


def test_runtime_checks_name_what_runs_here():
    """A CUDA runtime on the CPU is refused before any export, naming the runtimes that do run here;
    loading an onnxruntime-cuda file on the CPU never falls back to ONNX Runtime's CPU provider."""
    from avfast.runtime import RuntimeUnavailable, load
    from avfast.runtime.available import available, check_available

    assert "torch" in available("cpu") and "onnxruntime-cuda" not in available("cpu")
    with pytest.raises(RuntimeUnavailable, match="runtimes that run on cpu here: torch"):
        check_available("onnxruntime-cuda", "cpu")
    with pytest.raises(ValueError, match="runs on CUDA, not cpu"):
        load("onnxruntime-cuda", "model.onnx", device="cpu")


def test_a_cached_skip_reason_names_this_file(tmp_path):
    """The clip cache is keyed by content: the same unreadable bytes met under another name in another
    folder are reported under that name, not the first one's."""
    pytest.importorskip("av")
    from avfast.models import preset
    from avfast.train.folder import DataError, FolderAVDataset

    for folder, name in (("one", "broken.mp4"), ("two", "other.mp4")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"\0not a video" * 100)
        with pytest.raises(DataError) as e:
            FolderAVDataset(preset("tiny"), tmp_path / folder, tmp_path / "cache", progress=False)
        assert str(tmp_path / folder / name) in str(e.value) or name in str(e.value), str(e.value)
        assert ("broken.mp4" in str(e.value)) == (name == "broken.mp4"), str(e.value)
