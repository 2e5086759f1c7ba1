"""What a newcomer meets first at the command line: the shipped model's names accepted by every program
that takes --checkpoint, --threads, one-line warnings and errors, install hints that are one command,
`avfast.info` covering every extra and surviving `| head`, and AV-Align scored at the file's own size."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from avfast import models

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (models.DEFAULT_DIR / "model.safetensors").is_file() and \
    (models.default_folder("teacher") / "model.safetensors").is_file()
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="this installation has no shipped default model")


@pytest.fixture
def threads():
    """Leaves torch's thread count as it found it (the programs under test set it)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _mp4(path: Path, frames: int, size: int = 32) -> Path:
    from avfast.data import write_video

    c, f, y, x = torch.meshgrid(torch.arange(3.0), torch.arange(float(frames)), torch.arange(float(size)),
                                torch.arange(float(size)), indexing="ij")
    video = 0.6 * torch.sin(x / 3 + y / 5 + 2 * f + c) * (f % 4 == 0)  # motion bursts every 4th frame
    audio = 0.3 * torch.sin(torch.arange(16000 * frames // 10) / 16000 * 2 * torch.pi * 440)
    write_video(path, video, fps=10, audio=audio, sample_rate=16000)
    return path


# ------------------------------------------------------------------ --checkpoint default / default:teacher
@needs_shipped
@pytest.mark.parametrize("name,which", [("default", "student"), ("default:teacher", "teacher"), (None, "student")])
def test_sample_and_demo_resolve_the_shipped_names(name, which):
    from avfast.sample import check_checkpoint

    assert check_checkpoint(name) == models.default_folder(which)


def test_a_path_that_is_no_folder_is_still_refused(tmp_path):
    from avfast._cli import CliError
    from avfast.sample import check_checkpoint

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CliError, match=r"--checkpoint: '.*a_file' is not a folder .*or default / default:teacher"):
        check_checkpoint(str(tmp_path / "a_file"))


def test_a_shipped_name_without_the_shipped_model_says_so(monkeypatch, tmp_path):
    from avfast._cli import CliError
    from avfast.sample import check_checkpoint

    monkeypatch.setattr(models, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(CliError, match="no trained default model ships"):
        check_checkpoint("default:teacher")


@needs_shipped
def test_sample_makes_a_clip_with_the_teacher_on_one_thread(tmp_path, capsys, threads):
    pytest.importorskip("av", reason="the sample program writes mp4 files (pip install \"avfast[media]\")")
    from avfast.sample import main

    torch.set_num_threads(2)
    rc = main(["--checkpoint", "default:teacher", "--steps", "1", "--threads", "1", "--out", str(tmp_path),
               "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert torch.get_num_threads() == 1  # --threads applied
    assert (tmp_path / "joint_seed0.mp4").is_file() and captured.err == ""


@needs_shipped
def test_demo_takes_the_teacher_and_threads(tmp_path, monkeypatch, capsys, threads):
    """The demo's checks pass `default:teacher` on to the pipeline (stopped there: the model is not run)."""
    for module in ("av", "soundfile", "cv2", "matplotlib"):
        pytest.importorskip(module, reason="the demo checks for its media packages first")
    from avfast import demo
    from avfast.pipeline import Pipeline

    asked = []

    def stop(path, **kwargs):
        asked.append(path)
        raise ValueError("stopped before loading")

    monkeypatch.setattr(Pipeline, "from_pretrained", staticmethod(stop))
    torch.set_num_threads(2)
    assert demo.main(["--checkpoint", "default:teacher", "--threads", "1", "--out", str(tmp_path / "o")]) == 2
    assert asked == ["default:teacher"] and torch.get_num_threads() == 1
    assert capsys.readouterr().err.strip() == "python -m avfast.demo: error: stopped before loading"


@needs_shipped
@pytest.mark.parametrize("name,which", [("default", "student"), ("default:teacher", "teacher")])
def test_export_loads_the_shipped_names(name, which):
    from avfast.export.__main__ import _load_model

    model, preset, source = _load_model(argparse.Namespace(checkpoint=name, preset=None))
    assert preset == "tiny-latent" and source == f"the package's {name} model"
    assert model.config == models.default(which).config


def test_threads_option_is_parsed_and_negative_is_refused(threads):
    from avfast._cli import CliError, use_threads
    from avfast.sample import build_parser

    assert build_parser().parse_args([]).threads == 0
    assert build_parser().parse_args(["--threads", "1"]).threads == 1
    torch.set_num_threads(2)
    use_threads(0)
    assert torch.get_num_threads() == 2  # 0: torch's default, left alone
    with pytest.raises(CliError, match=r"--threads must be >= 0 \(0: torch's default\), got -1"):
        use_threads(-1)


# ------------------------------------------------------------------ one line, errors and warnings
def test_gamma_zero_is_one_error_line_and_no_warning(tmp_path, capsys):
    from avfast.sample import main

    assert main(["--gamma", "0", "--out", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m avfast.sample: error: --gamma: "), err
    assert "must be a finite number > 0" in err and "Warning" not in err


@needs_shipped
def test_sample_warnings_are_one_line_each(tmp_path, capsys, threads):
    pytest.importorskip("av", reason="the sample program writes mp4 files (pip install \"avfast[media]\")")
    from avfast.sample import main

    shown = warnings.showwarning
    rc = main(["--sampler", "dpmpp2m", "--threads", "1", "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m avfast.sample: warning: distilled "), err
    assert "sampler 'dpmpp2m', not the 'ddim' it was distilled for" in lines[0]
    assert warnings.showwarning is shown  # the program's setting ends with the program


@needs_shipped
def test_a_short_input_names_the_option_for_its_whole_length(tmp_path, capsys):
    pytest.importorskip("av", reason="reading mp4 files needs PyAV (pip install \"avfast[media]\")")
    from avfast.sample import main

    short = _mp4(tmp_path / "short.mp4", frames=10)
    assert main(["--task", "v2a", "--input", str(short), "--out", str(tmp_path / "o"), "--no-progress",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 10 frames at 10 fps; the model needs 18" in err, err
    assert err.rstrip().endswith("(use --seconds all to make sound for the whole input)"), err


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc here")
def test_an_unwritable_out_names_the_folder_tried_and_why():
    from avfast._cli import CliError, check_out_folder

    with pytest.raises(CliError) as e:
        check_out_folder("/proc/avfast-x")
    assert "'/proc/avfast-x' cannot be written: making a folder in '/proc' failed: " in str(e.value), str(e.value)
    assert "(/proc: No such file" not in str(e.value)


# ------------------------------------------------------------------ install hints: one command
def test_a_runtime_missing_packages_gets_one_pip_command(monkeypatch):
    from avfast import _deps
    from avfast.runtime import available

    monkeypatch.setattr(_deps, "installed", lambda module: False)
    why = available.why_unavailable("onnxruntime")
    assert why.endswith('not installed here: pip install "avfast[onnx,ort]"') and why.count("pip install") == 1, why
    assert "'onnx', 'onnxscript', 'onnxruntime'" in why


def test_missing_media_and_vae_packages_get_one_pip_command(monkeypatch):
    from avfast import _deps

    monkeypatch.setattr(_deps, "installed", lambda module: False)
    with pytest.raises(_deps.MissingDependency) as e:
        _deps.check_installed(["av", "diffusers"], "this")
    assert str(e.value).endswith('not installed here: pip install "avfast[media,vae]"'), str(e.value)


@needs_shipped
def test_export_names_every_missing_package_before_any_work(tmp_path, monkeypatch, capsys):
    from avfast import _deps
    from avfast.export.__main__ import main

    monkeypatch.setattr(_deps, "installed", lambda module: module not in ("onnx", "onnxscript", "onnxruntime"))
    out = tmp_path / "out"
    assert main(["--bench-steps", "0", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("python -m avfast.export: error: exporting at fp32 needs the Python packages 'onnx', "
                   "'onnxscript', 'onnxruntime', not installed here: pip install \"avfast[onnx,ort]\""), err
    assert not out.exists()


# ------------------------------------------------------------------ avfast.info
def test_info_reports_every_package_of_the_extras():
    import tomllib

    from avfast.info import OPTIONAL, collect, render

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, requirements in extras.items():
        if extra == "test":  # developer tools, not parts of avfast
            continue
        for requirement in requirements:
            dist = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
            assert dist in OPTIONAL, f"avfast.info does not report {dist} (extra {extra})"
            assert dist in {r.split(">")[0] for r in extras[OPTIONAL[dist]]}, (dist, OPTIONAL[dist])
    text = render(collect())
    for dist in ("openvino", "nncf", "onnxscript", "av", "soundfile", "librosa", "opencv-python-headless"):
        assert any(line.split()[0] == dist for line in text.splitlines() if line.startswith("  ")), dist


@pytest.mark.parametrize("how", ["-m", "script"])
def test_info_into_a_closed_pipe_ends_quietly(how):
    """`python -m avfast.info | head` (and the avfast-info script, which calls main() directly): the
    reader leaves early; no BrokenPipeError traceback, exit status 0."""
    script = "import sys; from avfast.info import main; sys.exit(main())"  # what the avfast-info script runs
    argv = ["-m", "avfast.info"] if how == "-m" else ["-c", script]
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    proc.stdout.close()  # before the program writes: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


# ------------------------------------------------------------------ metrics av-align at the file's own size
def test_av_align_scores_each_file_at_its_own_size(tmp_path):
    for module in ("av", "cv2", "librosa"):
        pytest.importorskip(module, reason="AV-Align needs avfast[media]")
    from avfast.data.video import read_video
    from avfast.metrics import av_align
    from avfast.metrics.__main__ import build_parser, main

    assert build_parser().parse_args(["av-align", "x"]).size is None
    assert build_parser().parse_args(["av-align", "x", "--size", "64"]).size == 64
    assert build_parser().parse_args(["fd", "a", "b"]).size == 128  # embeddings need one size for every file
    clips = tmp_path / "clips"
    clips.mkdir()
    path = _mp4(clips / "c.mp4", frames=18)
    assert main(["av-align", str(clips), "--json", str(tmp_path / "r.json")]) == 0
    clip = read_video(path, fps=10, size=None, sample_rate=16000)
    assert clip.video.shape[-2:] == (32, 32)
    want = av_align(clip.video, clip.audio, 10, 16000)  # as the demo and Clip.av_align score it
    got = json.loads((tmp_path / "r.json").read_text())["files"][0]
    assert got["av_align"] == want.score and got["peaks"] == len(want.video_peaks)


# ------------------------------------------------------------------ --steps defaults, as the help says
@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    """A small model that is not a distilled student: the programs' own step defaults apply."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("plain")
    models.create("tiny", frames=4, audio_length=16).save_pretrained(folder)
    return folder


def test_sample_default_steps_are_what_its_help_says(plain_checkpoint, tmp_path, capsys, threads):
    pytest.importorskip("av", reason="the sample program writes mp4 files (pip install \"avfast[media]\")")
    from avfast.sample import build_parser, main

    text = " ".join(build_parser().format_help().split())
    assert "else 25 (avfast.Pipeline's default" in text and "own sampler, else dpmpp2m" in text
    assert main(["--checkpoint", str(plain_checkpoint), "--threads", "1", "--out", str(tmp_path), "--no-progress",
                 "--device", "cpu"]) == 0
    assert "joint, dpmpp2m, 25 steps" in capsys.readouterr().out   # the Pipeline's and the demo's defaults
    assert main(["--checkpoint", str(plain_checkpoint), "--threads", "1", "--out", str(tmp_path), "--no-progress",
                 "--device", "cpu", "--eta", "0.5", "--steps", "2"]) == 0
    assert "joint, ddim, 2 steps" in capsys.readouterr().out       # stochastic DDIM: eta picks ddim


def test_demo_default_steps_are_what_its_help_says(plain_checkpoint, capsys, threads):
    """The demo calls the pipeline with steps=None and sampler=None: the pipeline's 25 dpmpp2m."""
    from avfast.demo import main
    from avfast.pipeline import Pipeline

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "else 25 (avfast.Pipeline's default" in text and "own sampler, else dpmpp2m" in text
    torch.set_num_threads(1)
    clip = Pipeline.from_pretrained(plain_checkpoint, progress=False)("joint", steps=None, sampler=None, seed=0)
    assert (clip.steps, clip.sampler) == (25, "dpmpp2m")


@needs_shipped
def test_the_step_count_the_helps_name_is_the_shipped_models(capsys):
    from avfast.demo import main as demo_main
    from avfast.diffusion.distilled import distilled_steps
    from avfast.models.config import ModelConfig
    from avfast.sample import build_parser

    n = distilled_steps(ModelConfig.from_json(models.DEFAULT_DIR / "config.json"))
    assert f"distilled_steps; {n} for the shipped default)" in " ".join(build_parser().format_help().split())
    with pytest.raises(SystemExit):
        demo_main(["--help"])
    assert f"({n} for the embedded default)" in " ".join(capsys.readouterr().out.split())
