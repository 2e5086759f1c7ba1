import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avfast.data.synthetic import click_track, make_clip
from avfast.metrics import frechet_distance, kernel_distance

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "avfast.metrics", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_fd_and_kid_on_npy_folders_match_the_library(tmp_path):
    rng = np.random.default_rng(0)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    g, r = rng.normal(size=(40, 6)), rng.normal(0.5, 1.0, size=(50, 6))
    for i, row in enumerate(g):
        np.save(gen / f"{i:03d}.npy", row)
    for i, row in enumerate(r):
        np.save(ref / f"{i:03d}.npy", row)
    out = run_cli("fd", gen, ref, "--json", tmp_path / "fd.json")
    assert out.returncode == 0, out.stderr
    assert "frechet_distance" in out.stdout and "ALL" in out.stdout
    assert json.loads((tmp_path / "fd.json").read_text())["value"] == pytest.approx(frechet_distance(g, r))
    out = run_cli("kid", gen, ref, "--subsets", "5", "--subset-size", "20", "--json", tmp_path / "kid.json")
    assert out.returncode == 0, out.stderr
    expected = kernel_distance(g, r, subset_size=20, n_subsets=5, seed=0)
    assert json.loads((tmp_path / "kid.json").read_text())["value"] == pytest.approx(expected.mean)


def test_av_align_beats_and_extractor_fd_on_media_folders(tmp_path):
    pytest.importorskip("av", reason="PyAV (avfast[media]) writes the test mp4 files")
    pytest.importorskip("librosa", reason="librosa (avfast[media]) detects onsets and beats")
    pytest.importorskip("cv2", reason="opencv (avfast[media]) computes optical flow")
    from avfast.data.video import save_audio, write_video
    clips, gen, ref = tmp_path / "clips", tmp_path / "gen", tmp_path / "ref"
    for d in (clips, gen, ref):
        d.mkdir()
    for seed in range(2):
        c = make_clip(duration=3.0, n_events=3, size=64, generator=seed)
        write_video(clips / f"clip{seed}.mp4", c.video, audio=c.audio)
        save_audio(gen / f"song{seed}.wav", click_track(120, 6.0, generator=seed)[0])
        save_audio(ref / f"song{seed}.wav", click_track(120, 6.0, generator=seed + 10)[0])
    out = run_cli("av-align", clips, "--size", "64", "--json", tmp_path / "av.json")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "av.json").read_text())
    assert len(result["files"]) == 2 and result["mean"] >= 0.9

    out = run_cli("beats", gen, ref, "--json", tmp_path / "beats.json")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "beats.json").read_text())["mean"]["hit@100ms"] >= 0.9
    assert "hit@500ms" in out.stdout

    out = run_cli("fd", gen, ref, "--extractor", "logmel", "--pool", "frames", "--per-sample",
                  "--json", tmp_path / "fdm.json")
    assert out.returncode == 0, out.stderr
    fdm = json.loads((tmp_path / "fdm.json").read_text())
    assert set(fdm["per_sample"]) == {"song0", "song1"} and fdm["value"] >= 0


def test_cli_errors_are_clear(tmp_path):
    out = run_cli("fd", tmp_path, tmp_path)
    assert out.returncode != 0 and "no .npy embeddings" in out.stderr
    out = run_cli("av-align", tmp_path / "missing")
    assert out.returncode != 0 and "is not a folder" in out.stderr
    out = run_cli("fd", tmp_path, tmp_path, "--extractor", "nonexistent")
    assert out.returncode != 0 and "unknown name" in out.stderr
