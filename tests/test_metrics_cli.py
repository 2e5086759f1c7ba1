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
ERROR = "python -m avfast.metrics: error: "  # the start of every line the program reports


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
    errors = [line for line in out.stderr.splitlines() if line.startswith(ERROR)]
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
    assert out.stderr.startswith(ERROR), out.stderr
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
    # every number option is named by argparse (its type raises ArgumentTypeError), never a bare library message
    (["kid", "{tmp}", "{tmp}", "--seed", "-1"],
     "argument --seed: must be >= 0, got -1 (see python -m avfast.metrics kid --help)"),
    (["kid", "{tmp}", "{tmp}", "--seed", "x"], "argument --seed: expected an integer >= 0, got 'x'"),
    (["kid", "{tmp}", "{tmp}", "--subset-size", "1"], "argument --subset-size: must be >= 2, got 1"),
    (["fd", "{tmp}", "{tmp}", "--sample-rate", "0"], "argument --sample-rate: must be > 0, got 0"),
    (["av-align", "{tmp}", "--fps", "inf"], "argument --fps: expected a finite number > 0, got 'inf'"),
    (["av-align", "{tmp}", "--flow-threshold", "nan"], "argument --flow-threshold: expected a finite number >= 0"),
    (["beats", "{tmp}", "{tmp}", "--tolerances", "x"], "argument --tolerances: expected a number > 0, got 'x'"),
    (["nosuch"], "argument command: invalid choice: 'nosuch'"),
], ids=["size0", "fps0", "fps-5", "subsets0", "tolerance-1", "missing-folder", "fd-missing-folder", "no-npy",
        "json-dir-missing", "unknown-extractor", "seed-1", "seed-x", "subset-size1", "sample-rate0", "fps-inf",
        "flow-threshold-nan", "tolerance-x", "unknown-command"])
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
    assert f"{gen / 'objects.npy'}: is not a numeric .npy array" in line and "Python objects" in line
    assert "pickle" not in line  # numpy's advice to unpickle is no advice for a user of the command line
    result = json.loads((tmp_path / "fd.json").read_text())
    assert result["value"] == pytest.approx(frechet_distance(g, r)) and result["n_generated"] == 10


def _npy_folders(tmp_path, n: int = 6, d: int = 4):
    rng = np.random.default_rng(0)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    for i in range(n):
        np.save(gen / f"{i:03d}.npy", rng.normal(size=d))
        np.save(ref / f"{i:03d}.npy", rng.normal(size=d))
    return gen, ref


@pytest.mark.parametrize("command", ["fd", "kid"])
def test_npy_of_another_embedding_size_names_the_files_and_shapes(tmp_path, capsys, command):
    gen, ref = _npy_folders(tmp_path)
    np.save(gen / "wide.npy", np.zeros((3, 5)))
    line = _one_error_line(run_in_process(capsys, command, gen, ref, "--json", tmp_path / "out.json"))
    assert "different embedding sizes" in line and "all input arrays" not in line
    assert f"{str(gen / 'wide.npy')!r} (shape [3, 5])" in line and "(shape [4])" in line and "D=5" in line
    assert not (tmp_path / "out.json").exists()  # the --json probe leaves nothing behind
    (gen / "wide.npy").unlink()  # generated and reference sets of different sizes: both folders named
    for f in ref.iterdir():
        np.save(f, np.zeros(7))
    line = _one_error_line(run_in_process(capsys, command, gen, ref, "--pool", "frames"))
    assert str(gen) in line and str(ref) in line and "D=4" in line and "D=7" in line


@pytest.mark.parametrize("command", ["fd", "kid"])
def test_npy_with_nan_or_junk_is_named_as_a_file(tmp_path, capsys, command):
    gen, ref = _npy_folders(tmp_path)
    np.save(gen / "nan.npy", np.array([0.0, np.nan, 1.0, 2.0]))
    (ref / "junk.npy").write_text("not an array\n")
    out = run_in_process(capsys, command, gen, ref)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "ALL" in out.stdout, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(ERROR) for line in lines), lines
    assert f"{gen / 'nan.npy'}: holds 1 NaN or infinite value" in lines[0] and "x:" not in lines[0]
    assert f"{ref / 'junk.npy'}: is not a numeric .npy array" in lines[1] and "pickle" not in lines[1]


def test_per_sample_of_single_embeddings_is_one_line(tmp_path, capsys):
    gen, ref = _npy_folders(tmp_path)
    line = _one_error_line(run_in_process(capsys, "fd", gen, ref, "--per-sample"))
    assert line.startswith(ERROR + "--per-sample: 6 of 6 generated files") and "samples[" not in line


def _fake_beats(monkeypatch):
    """beats without decoding or beat tracking: the pairing is what is under test."""
    import avfast.metrics.__main__ as cli
    import avfast.metrics.beats as beats

    monkeypatch.setattr(cli, "_load_audio", lambda path, rate: path.name)
    monkeypatch.setattr(beats, "beat_hit_rate", lambda g, r, rate, tolerances: beats.BeatResult(
        {float(t): 1.0 for t in tolerances}))


def test_beats_names_unpaired_files(tmp_path, capsys, monkeypatch):
    _fake_beats(monkeypatch)
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    for name in ("a2v", "joint", "v2a"):
        (gen / f"{name}.mp4").touch()
    for name in ("joint", "v2a"):
        (ref / f"{name}.mp4").touch()
    out = run_in_process(capsys, "beats", gen, ref, "--json", tmp_path / "b.json")
    line = _one_error_line(out, status=1)  # the pairs are scored, but not every file: exit status 1
    assert f"1 generated file with no file of the same name in {str(ref)!r}, not scored: " \
           f"{str(gen / 'a2v.mp4')!r}" in line
    assert "joint" in out.stdout and "v2a" in out.stdout and "a2v" not in out.stdout
    result = json.loads((tmp_path / "b.json").read_text())
    assert [r["file"] for r in result["files"]] == ["joint", "v2a"] and result["unpaired"] == [str(gen / "a2v.mp4")]

    (ref / "joint.mp4").rename(ref / "other.mp4")
    (ref / "v2a.mp4").unlink()  # no pairs at all: exit status 2, every file named
    line = _one_error_line(run_in_process(capsys, "beats", gen, ref))
    assert "no file names in common" in line and "3 generated files" in line and "'other.mp4'" not in line
    assert str(ref / "other.mp4") in line

    (gen / "joint.wav").touch()  # two files of one name stem: which pairs is a guess
    line = _one_error_line(run_in_process(capsys, "beats", gen, ref))
    assert f"generated folder {str(gen)!r} holds 2 files named 'joint' (joint.mp4, joint.wav)" in line


def test_beats_with_every_file_paired_says_nothing(tmp_path, capsys, monkeypatch):
    _fake_beats(monkeypatch)
    for d in ("gen", "ref"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.wav").touch()
    out = run_in_process(capsys, "beats", tmp_path / "gen", tmp_path / "ref")
    assert out.returncode == 0 and out.stderr == "" and "MEAN" in out.stdout


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where no file can be made")
@pytest.mark.parametrize("command", ["av-align", "fd"])
def test_unwritable_json_is_refused_before_scoring(tmp_path, capsys, command):
    gen, ref = _npy_folders(tmp_path)
    (gen / "clip.mp4").write_bytes(b"\x00not an mp4")  # would be named as unreadable if av-align scored it
    folders = [gen] if command == "av-align" else [gen, ref]
    out = run_in_process(capsys, command, *folders, "--json", "/proc/avfast-metrics.json")
    line = _one_error_line(out)
    assert line == ERROR + "--json: cannot write '/proc/avfast-metrics.json': its file system accepts no new files " \
                           "(No such file or directory)"
    assert out.stdout == ""  # nothing scored, no table


def test_json_probe_keeps_an_existing_file(tmp_path, capsys):
    gen, ref = _npy_folders(tmp_path)
    (tmp_path / "old.json").write_text("keep me")
    np.save(gen / "wide.npy", np.zeros(5))  # fails after the probe
    _one_error_line(run_in_process(capsys, "fd", gen, ref, "--json", tmp_path / "old.json"))
    assert (tmp_path / "old.json").read_text() == "keep me"
