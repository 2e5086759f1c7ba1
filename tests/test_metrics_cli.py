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
    (clips / "broken.mp4").write_bytes(b"\x00not an mp4" * 100)  # one corrupt file among good ones
    out = run_cli("av-align", clips, "--size", "64", "--json", tmp_path / "av.json")
    assert out.returncode == 1, out.stderr  # scored the rest, but not everything
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "Traceback" not in out.stderr
    result = json.loads((tmp_path / "av.json").read_text())
    assert len(result["files"]) == 2 and result["mean"] >= 0.9
    assert [f["file"] for f in result["failed"]] == ["broken.mp4"]

    out = run_cli("beats", gen, ref, "--json", tmp_path / "beats.json")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "beats.json").read_text())["mean"]["hit@100ms"] >= 0.9
    assert "hit@500ms" in out.stdout

    out = run_cli("fd", gen, ref, "--extractor", "logmel", "--pool", "frames", "--per-sample",
                  "--json", tmp_path / "fdm.json")
    assert out.returncode == 0, out.stderr
    fdm = json.loads((tmp_path / "fdm.json").read_text())
    assert set(fdm["per_sample"]) == {"song0", "song1"} and fdm["value"] >= 0


def _one_error_line(out, status: int = 2) -> str:
    assert out.returncode == status, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: ")
    return out.stderr.strip()


def run_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """main() in this process (no interpreter start per case), argparse's SystemExit included."""
    from avfast.metrics.__main__ import main

    try:
        status = main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


@pytest.mark.parametrize("args,says", [
    (["av-align", "{tmp}", "--size", "0"], "--size: must be > 0, got 0"),
    (["av-align", "{tmp}", "--fps", "0"], "--fps: must be > 0, got 0"),
    (["av-align", "{tmp}", "--fps", "-5"], "--fps: must be > 0, got -5"),
    (["kid", "{tmp}", "{tmp}", "--subsets", "0"], "--subsets: must be > 0"),
    (["beats", "{tmp}", "{tmp}", "--tolerances", "0.1", "-1"], "--tolerances: must be > 0"),
    (["av-align", "{tmp}/missing"], "folder '{tmp}/missing' does not exist"),
    (["fd", "{tmp}/nonexistent", "{tmp}"], "generated folder '{tmp}/nonexistent' does not exist"),
    (["fd", "{tmp}", "{tmp}"], "holds no .npy embeddings"),
    (["fd", "{tmp}", "{tmp}", "--json", "{tmp}/missing/dir/out.json"], "--json: folder '{tmp}/missing/dir' does not exist"),
    (["kid", "{tmp}", "{tmp}", "--extractor", "nosuch"], "error: extractor: unknown name 'nosuch'; available:"),
], ids=["size0", "fps0", "fps-5", "subsets0", "tolerance-1", "missing-folder", "fd-missing-folder", "no-npy",
        "json-dir-missing", "unknown-extractor"])
def test_bad_input_is_one_line_with_exit_status_2(tmp_path, capsys, args, says):
    line = _one_error_line(run_in_process(capsys, *[a.format(tmp=tmp_path) for a in args]))
    assert says.format(tmp=tmp_path) in line


def test_help_documents_the_exit_status(capsys):
    out = run_in_process(capsys, "--help")
    assert out.returncode == 0 and "exit status:" in out.stdout
    for status in ("0  every file was scored", "1  some files could not be read", "2  bad arguments"):
        assert status in out.stdout


def test_unreadable_npy_is_named_and_the_rest_scored(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    g, r = rng.normal(size=(10, 4)), rng.normal(size=(12, 4))
    for i, row in enumerate(g):
        np.save(gen / f"{i:03d}.npy", row)
    for i, row in enumerate(r):
        np.save(ref / f"{i:03d}.npy", row)
    np.save(gen / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out = run_in_process(capsys, "fd", gen, ref, "--json", tmp_path / "fd.json")
    assert "frechet_distance" in out.stdout  # the table of the files that were read
    line = _one_error_line(out, status=1)
    assert "objects.npy" in line and "allow_pickle" in line
    result = json.loads((tmp_path / "fd.json").read_text())
    assert result["value"] == pytest.approx(frechet_distance(g, r)) and result["n_generated"] == 10
