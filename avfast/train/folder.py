"""Training data from a folder of real video clips, through the front ends once, cached on disk.

`FolderAVDataset(config, root, cache_dir)` finds every video file under `root` (mp4, mov, mkv, webm,
m4v, avi; sorted by relative path, so every process sees the same order) and prepares each clip once:

    read_video at the model's fps and frame size (x8 for latent models) -> the first `frames` frames
    -> pixels, or autoencoder latents;  audio track -> log10-mel (avfast.data.mel).

The result goes to `<cache_dir>/<key>.safetensors`, key = sha256 of the file's bytes and the front-end
settings (fps, frames, size, sample rate, mel settings, video space and a checksum of the autoencoder's
weights), so the autoencoder runs once per clip and a changed file or setting is prepared afresh.
A clip that cannot be used (unreadable, no audio track, fewer frames or less sound than the model's
window) is skipped with its reason, remembered in `<key>.skip.json` so the next run does not decode it
again; the count goes to the log. All of this happens before the first step: training never meets a
broken file. Items come back in the model's space (`video_to_model`, `mel_to_model`), the mel cut or
padded (edge values) to `audio_length`, the same layout as `SyntheticAVDataset`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..models.codec import mel_to_model, video_to_model
from ..models.config import ModelConfig
from ..models.weights import atomic_write_bytes, state_dict_bytes, weights_checksum

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
CACHE_VERSION = 1


class DataError(ValueError):
    """The data folder cannot give any training clip (missing, empty, or every clip unusable)."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "avfast" / "train-clips"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def autoencoder_fingerprint(autoencoder) -> str | None:
    """What about an autoencoder changes its latents: class, weights, scaling, posterior sampling."""
    if autoencoder is None:
        return None
    return ":".join([type(autoencoder).__name__, weights_checksum(autoencoder.state_dict()),
                     repr(float(getattr(autoencoder, "scaling_factor", 1.0))),
                     repr(bool(getattr(autoencoder, "sample_posterior", False)))])


def find_clips(root: Path) -> list[Path]:
    if not root.exists():
        raise DataError(f"data: no folder at {str(root)!r} (expected a folder of video clips, or 'synthetic')")
    if not root.is_dir():
        raise DataError(f"data: {str(root)!r} is a file; expected a folder of video clips ({', '.join(VIDEO_EXTENSIONS)})")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"data: {str(root)!r} holds no video clips (looked for {', '.join(VIDEO_EXTENSIONS)}, "
                        f"in subfolders too)")
    return files


class FolderAVDataset:
    """Real clips in the model's space; `len`, `[i]` and `batch(indices)` as `SyntheticAVDataset`."""

    def __init__(self, config: ModelConfig, root: str | Path, cache_dir: str | Path | None = None,
                 autoencoder=None, progress: bool = True, share: tuple[int, int] = (0, 1)):
        """share=(rank, world): prepare only files rank, rank + world, ... (DDP ranks split the front-end
        work, then each builds the whole set from the cache); such a partial set is not for training."""
        if config.video_space == "latent" and autoencoder is None:
            raise ValueError("FolderAVDataset: this model works on autoencoder latents (video_space='latent'); "
                             "pass autoencoder= (e.g. avfast.data.StableDiffusionVAE.from_pretrained(PATH))")
        if config.height != config.width:
            raise ValueError(f"FolderAVDataset: clips are centre-cropped to squares; the model takes "
                             f"{config.height}x{config.width} frames")
        self.config, self.root, self.autoencoder = config, Path(root), autoencoder
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.settings = self._settings()
        files = find_clips(self.root)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        self.clips: list[tuple[Path, str]] = []       # (file, cache key) of every usable clip
        self.skipped: list[tuple[Path, str]] = []     # (file, reason)
        rank, world = share
        files = files[rank::world]
        for path in tqdm(files, desc="prepare clips", unit="clip", disable=not progress, dynamic_ncols=True):
            key = self.key(path)
            reason = self._ensure_cached(path, key)
            if reason is None:
                self.clips.append((path, key))
            else:
                self.skipped.append((path, reason))
        if not self.clips and world == 1:
            raise DataError(f"data: none of the {len(files)} clips in {str(self.root)!r} is usable; "
                            f"{self.skip_summary()}")

    # ------------------------------------------------------------------ keys and the cache
    def _settings(self) -> dict[str, Any]:
        from ..data.mel import MelConfig

        c = self.config
        size = c.height * (self.autoencoder.downsample if c.video_space == "latent" else 1)
        mel = MelConfig(sample_rate=c.sample_rate, n_mels=c.mel_bins)
        return {"cache_version": CACHE_VERSION, "fps": c.fps, "frames": c.frames, "size": size,
                "sample_rate": c.sample_rate, "mel": dataclasses.asdict(mel), "video_space": c.video_space,
                "autoencoder": autoencoder_fingerprint(self.autoencoder)}

    def key(self, path: Path) -> str:
        settings = json.dumps(self.settings, sort_keys=True).encode()
        return hashlib.sha256(file_sha256(path).encode() + b"\0" + settings).hexdigest()

    def _cache_file(self, key: str) -> Path:
        return self.cache_dir / f"{key}.safetensors"

    def _skip_file(self, key: str) -> Path:
        return self.cache_dir / f"{key}.skip.json"

    def _ensure_cached(self, path: Path, key: str) -> str | None:
        """None when the clip's cache entry exists (made now if needed), else why the clip is unusable."""
        if self._cache_file(key).is_file():
            return None
        if self._skip_file(key).is_file():
            # The cache is keyed by content: the same bytes may have been met under another name (another
            # folder); the remembered reason names this file, not that one.
            entry = json.loads(self._skip_file(key).read_text())
            reason, seen_as = entry["reason"], entry.get("file")
            if seen_as and seen_as != str(path):
                reason = reason.replace(repr(seen_as), repr(str(path))).replace(seen_as, str(path))
            return reason
        try:
            tensors = self._front_end(path)
        except (ValueError, OSError, RuntimeError) as e:  # unreadable / too short: skip, remember why
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            atomic_write_bytes(self._skip_file(key), json.dumps({"file": str(path), "reason": reason}).encode())
            return reason
        atomic_write_bytes(self._cache_file(key), state_dict_bytes(tensors, {"source": path.name}))
        return None

    def _front_end(self, path: Path) -> dict[str, torch.Tensor]:
        from ..data.mel import MelConfig, waveform_to_mel
        from ..data.video import read_video

        c, s = self.config, self.settings
        clip = read_video(path, fps=c.fps, size=s["size"], sample_rate=c.sample_rate, max_frames=c.frames)
        frames = clip.video.shape[1]
        if frames < c.frames:
            raise ValueError(f"too short: {frames} frames at {c.fps:g} fps, the model needs {c.frames}")
        if clip.audio is None:
            raise ValueError("no audio track")
        needed = round(c.frames / c.fps * c.sample_rate)
        # One video frame of slack: encoders pad or trim the audio track's ends by a few ms.
        if clip.audio.numel() < needed - c.sample_rate / c.fps:
            raise ValueError(f"too short: {clip.audio.numel() / c.sample_rate:.3f} s of audio, the model needs "
                             f"{needed / c.sample_rate:.3f} s")
        video = clip.video[None]
        if self.autoencoder is not None:
            p = next(self.autoencoder.parameters())
            video = video.to(p.device)
        video = video_to_model(video, c, self.autoencoder)[0].float().cpu()
        mel = waveform_to_mel(clip.audio[None, :needed], MelConfig(sample_rate=c.sample_rate, n_mels=c.mel_bins))[0]
        return {"video": video.contiguous(), "log_mel": mel.contiguous()}

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from safetensors.torch import load_file

        path, key = self.clips[index]
        file = self._cache_file(key)
        if not file.is_file():  # the cache was cleared during the run: prepare this clip again
            if not path.is_file() or self.key(path) != key or self._ensure_cached(path, key) is not None:
                raise DataError(f"data: {str(path)!r} changed or became unreadable during training "
                                f"(its cache entry {file} is gone)")
        item = load_file(file)
        T = self.config.audio_length
        a = mel_to_model(item["log_mel"], self.config)
        a = a[..., :T] if a.shape[-1] >= T else torch.nn.functional.pad(a[None], (0, T - a.shape[-1]),
                                                                          mode="replicate")[0]
        return item["video"], a.contiguous()

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[int(i)] for i in indices.tolist()]
        return torch.stack([v for v, _ in items]), torch.stack([a for _, a in items])

    # ------------------------------------------------------------------ reporting
    def fingerprint(self) -> str:
        """Changes when the list of usable clips (content and settings) changes: a resume check."""
        return hashlib.sha256("\n".join(k for _, k in self.clips).encode()).hexdigest()[:16]

    def skip_summary(self, limit: int = 3) -> str:
        if not self.skipped:
            return "0 skipped"
        shown = "; ".join(f"{p.name}: {r}" for p, r in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"{len(self.skipped)} skipped ({shown}{more})"
