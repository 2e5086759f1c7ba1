"""`python -m avfast.demo` end to end on a small random model (the shipped default is tested in
tests/test_default_model.py)."""
import pytest
import torch

pytest.importorskip("av", reason="the demo writes mp4 files with PyAV (pip install \"avfast[media]\")")
pytest.importorskip("cv2", reason="AV-Align needs OpenCV (pip install \"avfast[media]\")")
pytest.importorskip("librosa", reason="AV-Align needs librosa (pip install \"avfast[media]\")")

from avfast import demo  # noqa: E402
from avfast.models import create  # noqa: E402


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    m = create("tiny", base_channels=16, audio_base_channels=0, channel_mult=(1, 2), attention_levels=(1,), head_dim=16,
               norm_groups=8)
    d = tmp_path_factory.mktemp("ckpt")
    m.save_pretrained(d)
    return d


def test_bundled_assets_exist_and_are_the_models_size():
    from avfast.data import load_audio, read_video

    clip = read_video(demo.DEMO_CLIP, fps=10, size=32, sample_rate=16_000)
    assert clip.video.shape[:2] == (3, 18) and clip.audio is not None and clip.audio.shape[0] >= 28_672
    assert load_audio(demo.DEMO_SOUND).shape[0] >= 28_672


def test_demo_writes_clips_scores_and_a_figure(tmp_path, small_checkpoint, capsys):
    clips = demo.run(tmp_path, checkpoint=str(small_checkpoint), steps=2, progress=False)
    assert [c.task for c in clips] == ["v2a", "a2v", "joint"]
    for c in clips:
        assert c.path.is_file() and c.path.stat().st_size > 1000
        assert 0.0 <= c.score <= 1.0 and c.calls == 2 and c.seconds > 0
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "ms/FE" in out and "ceiling" in out and "v2a" in out
    # the printed score is the written file's: what `python -m avfast.metrics av-align` says of it
    from avfast.metrics.__main__ import main as metrics

    assert metrics(["av-align", str(tmp_path), "--json", str(tmp_path / "scores.json")]) == 0
    import json

    files = {row["file"]: row["av_align"] for row in json.loads((tmp_path / "scores.json").read_text())["files"]}
    assert files == {f"{c.task}.mp4": pytest.approx(c.score, abs=1e-9) for c in clips}
    capsys.readouterr()


def test_demo_cli_without_a_model_is_one_clear_line(tmp_path, monkeypatch, capsys):
    import avfast.models as models

    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path / "nothing")
    assert demo.main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trained default model" in err[0]


def test_demo_without_matplotlib_says_so_in_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = tmp_path / "o"
    assert demo.main(["--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "'matplotlib'" in err[0] and 'pip install "avfast[media]"' in err[0], captured.err
    assert "Traceback" not in captured.err and not out.exists()  # refused before loading or writing anything


def test_two_demo_runs_in_two_processes_write_the_same_bytes(tmp_path, small_checkpoint):
    """Issue 21 item 4: the sampler's noise and Griffin-Lim's phase both come from the seed, so the same
    seed and settings give byte-equal mp4 files (and figure) on the same machine."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        proc = subprocess.run([sys.executable, "-m", "avfast.demo", "--checkpoint", str(small_checkpoint), "--steps",
                               "2", "--out", str(out), "--no-progress"], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == ["a2v.mp4", "demo.png", "joint.mp4", "v2a.mp4"] == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
