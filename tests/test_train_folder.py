"""avfast.train on a folder of real clips: front ends once per clip (cached by content and settings),
unusable files skipped with a count and their reasons, clear errors for missing or empty folders."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from _train_micro import MICRO, PYTHON, cli_env

pytest.importorskip("av", reason="PyAV is not installed (pip install av): no video files to read")

from avfast.data import TinyAutoencoder, make_clip, read_video, waveform_to_mel, write_video  # noqa: E402
from avfast.data.mel import MelConfig  # noqa: E402
from avfast.models import preset  # noqa: E402
from avfast.models.codec import mel_to_model  # noqa: E402
from avfast.train.__main__ import main  # noqa: E402
from avfast.train.folder import DataError, FolderAVDataset  # noqa: E402

CONFIG = preset("tiny").replace(**MICRO)            # 8 frames of 16x16 pixels, 32 mel frames
GOOD, SHORT_REASON, SILENT_REASON = 3, "too short", "no audio track"


def _write_clip(path: Path, seed: int, duration: float = 1.0, audio: bool = True) -> None:
    clip = make_clip(duration=1.0, fps=10, size=32, n_events=1, generator=seed)
    frames, samples = round(duration * 10), round(duration * 16000)
    write_video(path, clip.video[:, :frames], fps=10, audio=clip.audio[:samples] if audio else None)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """3 usable clips (one in a subfolder), a corrupt file, a clip too short and one without sound."""
    root = tmp_path_factory.mktemp("clips")
    (root / "more").mkdir()
    _write_clip(root / "a.mp4", 1)
    _write_clip(root / "b.mp4", 2)
    _write_clip(root / "more" / "c.mp4", 3)
    (root / "corrupt.mp4").write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                                     dtype=torch.uint8).numpy().tobytes())
    _write_clip(root / "short.mp4", 4, duration=0.5)
    _write_clip(root / "silent.mp4", 5, audio=False)
    (root / "notes.txt").write_text("not a clip")
    return root


def test_items_are_the_front_ends_output_cut_to_the_model(clips, tmp_path):
    data = FolderAVDataset(CONFIG, clips, tmp_path / "cache", progress=False)
    assert [p.relative_to(clips).as_posix() for p, _ in data.clips] == ["a.mp4", "b.mp4", "more/c.mp4"]
    reasons = {p.name: r for p, r in data.skipped}
    assert sorted(reasons) == ["corrupt.mp4", "short.mp4", "silent.mp4"]
    assert "cannot read" in reasons["corrupt.mp4"] and SHORT_REASON in reasons["short.mp4"]
    assert reasons["silent.mp4"] == SILENT_REASON
    assert data.skip_summary().startswith("3 skipped (")
    clip = read_video(clips / "b.mp4", fps=10, size=16)
    v, a = data[1]
    assert v.shape == (3, 8, 16, 16) and a.shape == (80, 32)
    assert torch.equal(v, clip.video[:, :8])
    mel = waveform_to_mel(clip.audio[None, :12800], MelConfig(sample_rate=16000, n_mels=80))[0]
    torch.testing.assert_close(a, mel_to_model(mel, CONFIG)[:, :32], rtol=0, atol=0)
    vb, ab = data.batch(torch.tensor([2, 1]))
    assert torch.equal(vb[1], v) and torch.equal(ab[1], a) and not torch.equal(vb[0], v)


def test_short_audio_is_padded_to_the_model_length(clips, tmp_path):
    longer = CONFIG.replace(audio_length=64)  # 0.8 s of sound gives 51 mel frames; the rest repeats the edge
    _, a = FolderAVDataset(longer, clips, tmp_path / "cache", progress=False)[0]
    assert a.shape == (80, 64) and torch.equal(a[:, 51:], a[:, 50:51].expand(80, 13))


def test_second_pass_reads_the_cache_without_the_front_ends(clips, tmp_path, monkeypatch):
    first = FolderAVDataset(CONFIG, clips, tmp_path / "cache", progress=False)
    items = [first[i] for i in range(len(first))]

    def no_front_end(self, path):
        raise AssertionError(f"front end ran again for {path}")

    monkeypatch.setattr(FolderAVDataset, "_front_end", no_front_end)
    again = FolderAVDataset(CONFIG, clips, tmp_path / "cache", progress=False)
    assert [str(p) for p, _ in again.skipped] == [str(p) for p, _ in first.skipped]  # reasons cached too
    for i, (v, a) in enumerate(items):
        assert torch.equal(again[i][0], v) and torch.equal(again[i][1], a)
    assert again.fingerprint() == first.fingerprint()


def test_ddp_ranks_split_the_front_end_work(clips, tmp_path, monkeypatch):
    seen = []
    real = FolderAVDataset._front_end
    monkeypatch.setattr(FolderAVDataset, "_front_end", lambda self, path: seen.append(path.name) or real(self, path))
    halves = [FolderAVDataset(CONFIG, clips, tmp_path / "cache", progress=False, share=(r, 2)) for r in (0, 1)]
    assert sorted(seen) == sorted(p.name for p in clips.rglob("*.mp4")) and len(set(seen)) == len(seen)
    assert sum(len(h) for h in halves) == GOOD
    full = FolderAVDataset(CONFIG, clips, tmp_path / "cache", progress=False)
    assert len(full) == GOOD and len(full.skipped) == 3 and len(seen) == 6, "the whole set comes from the cache"


def test_cache_key_follows_content_and_settings(clips, tmp_path):
    data = FolderAVDataset(CONFIG, clips, tmp_path / "cache", progress=False)
    path, key = data.clips[0]
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(path.read_bytes())
    assert data.key(copy) == key, "the key depends on the bytes, not the file's name or place"
    copy.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    assert data.key(copy) != key
    other = FolderAVDataset(CONFIG.replace(fps=8.0), clips, tmp_path / "cache", progress=False)
    assert other.key(path) != key and len(list((tmp_path / "cache").glob("*.safetensors"))) == 2 * GOOD


def test_latent_model_runs_the_autoencoder_once_per_clip(clips, tmp_path):
    latent = CONFIG.replace(video_space="latent", video_channels=4, height=4, width=4, patch_size=1)
    encoded = []

    def counting(ae):
        real = ae.encode
        ae.encode = lambda video: encoded.append(video.shape) or real(video)
        return ae

    data = FolderAVDataset(latent, clips, tmp_path / "cache", autoencoder=counting(TinyAutoencoder(8, progress=False)),
                           progress=False)
    assert encoded == [(1, 3, 8, 32, 32)] * GOOD and data[0][0].shape == (4, 8, 4, 4)
    FolderAVDataset(latent, clips, tmp_path / "cache", autoencoder=counting(TinyAutoencoder(8, progress=False)),
                    progress=False)
    assert len(encoded) == GOOD, "the cache must spare the autoencoder on the second pass"
    FolderAVDataset(latent, clips, tmp_path / "cache", autoencoder=TinyAutoencoder(8, progress=False, seed=1),
                    progress=False)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2 * GOOD, "other weights, other latents"
    with pytest.raises(ValueError, match="autoencoder="):
        FolderAVDataset(latent, clips, tmp_path / "cache", progress=False)


def test_missing_empty_and_unusable_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no folder at"):
        FolderAVDataset(CONFIG, tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no video clips"):
        FolderAVDataset(CONFIG, tmp_path / "empty", tmp_path / "cache")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match=r"none of the 1 clips .* is usable; 1 skipped \(x.mp4: "):
        FolderAVDataset(CONFIG, tmp_path / "bad", tmp_path / "cache", progress=False)


def _cli(tmp_path, data, *extra) -> list[str]:
    return ["--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--model", json.dumps(MICRO),
            "--steps", "2", "--batch-size", "2", "--eta", "0", "--out", str(tmp_path / "run"), "--no-progress",
            "--device", "cpu", "--threads", "1", *extra]


def test_cli_trains_on_a_folder_and_reports_the_skipped(clips, tmp_path, capsys):
    assert main(_cli(tmp_path, clips)) == 0
    err = capsys.readouterr().err
    assert f"data: {GOOD} clips from {clips}; 3 skipped (" in err
    report = json.loads((tmp_path / "run" / "data.json").read_text())
    assert report["clips"] == GOOD and sorted(Path(s["file"]).name for s in report["skipped"]) == \
        ["corrupt.mp4", "short.mp4", "silent.mp4"]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["data_fingerprint"] == report["fingerprint"]


def test_cli_empty_folder_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(_cli(tmp_path, tmp_path / "empty")) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "holds no video clips" in err[0], err


@pytest.mark.slow
def test_cli_latent_model_with_a_diffusers_autoencoder_folder(clips, tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install diffusers)")
    vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                  block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                                  norm_num_groups=4, sample_size=32)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    latent = MICRO | {"video_space": "latent", "video_channels": 4, "height": 4, "width": 4, "patch_size": 1}
    argv = _cli(tmp_path, clips, "--autoencoder", str(tmp_path / "vae"))
    argv[argv.index("--model") + 1] = json.dumps(latent)
    r = subprocess.run([PYTHON, "-m", "avfast.train", *argv], capture_output=True, text=True, env=cli_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"data: {GOOD} clips" in r.stderr
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == GOOD
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
