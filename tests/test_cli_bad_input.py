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
]


@pytest.mark.parametrize("argv,setup,status,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line(tmp_path, argv, setup, status, phrase):
    if "cuda" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    if setup:
        _setup(setup, tmp_path)
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
