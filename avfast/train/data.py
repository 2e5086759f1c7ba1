"""Training data in the model's space: the synthetic audio-visual set, deterministic by index.

`SyntheticAVDataset(config, num_clips, seed)[i]` is clip i of `avfast.data.make_clip` (1-3 events,
hits and flashes mixed, own background), turned into what the model reads (`avfast.models.codec`:
pixels or autoencoder latents, normalised log-mel). Clip i depends only on (seed, i), so a run can use
any number of clips without storing them; generated clips are kept in memory (`cache=True`), since
making one costs more than a `tiny` training step spends per sample.

`crop_prob` > 0 makes that share of the clips windows cut at a random frame from a clip 3 windows long
(1-3 events per window-length over the whole of it), so events sit anywhere in the window, up to its
edges, and balls that fell before the window rest in it. A plain clip keeps its events 3 frames in from
each end; a window of a long clip (`avfast.diffusion.windowed`) does not, and a model never shown such
windows draws them worse (docs/long-clips.md). Whether clip i is cut, and where, comes from its own
generator, so crop_prob = 0 gives the same clips as before. `crop_content` is what the long clip shows:
"persistent" (every ball in every frame, as a plain clip) or "scenes" (`make_clip(transient=True)`: a ball
only between the flashes around its hit, as the held-out long clips of `avfast.experiments.long_clips`),
so a scenes crop can show a ball whose hit lies after the window, or none for a hit before it.
"""
from __future__ import annotations

import torch

from ..models.codec import audio_to_model, video_to_model
from ..models.config import ModelConfig
from .config import CROP_CONTENTS


CROP_LENGTHS = 3  # a cropped clip is cut from a clip this many windows long
CROP_STREAM = 7_777_777_777  # offsets the crop draws' seed from the plain clips' seeds


class SyntheticAVDataset:
    def __init__(self, config: ModelConfig, num_clips: int = 2048, seed: int = 0, cache: bool = True,
                 autoencoder=None, max_events: int = 3, crop_prob: float = 0.0,
                 crop_content: str = "persistent"):
        if num_clips < 1:
            raise ValueError(f"SyntheticAVDataset: `num_clips` must be >= 1, got {num_clips}")
        if config.height != config.width and config.video_space == "pixels":
            raise ValueError(f"SyntheticAVDataset: synthetic clips are square; the model takes "
                             f"{config.height}x{config.width} frames")
        # make_clip needs 3 frames before the first event, 3 after the last and 6 between events
        fit = (config.frames - 6) // 6 + 1
        if fit < 1:
            raise ValueError(f"SyntheticAVDataset: synthetic clips need >= 6 frames (an event with room around "
                             f"it); the model takes {config.frames}")
        if not 0 <= crop_prob <= 1:
            raise ValueError(f"SyntheticAVDataset: `crop_prob` must be in [0, 1], got {crop_prob}")
        self.config, self.num_clips, self.seed, self.autoencoder = config, num_clips, seed, autoencoder
        if crop_content not in CROP_CONTENTS:
            raise ValueError(f"SyntheticAVDataset: `crop_content` must be one of {', '.join(CROP_CONTENTS)}, "
                             f"got {crop_content!r}")
        self.crop_prob, self.crop_content = crop_prob, crop_content
        self.max_events = min(max_events, fit)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_clips

    def clip(self, index: int):
        """The raw `SyntheticClip` (pixels in [-1, 1], waveform, event times) of clip `index`."""
        from ..data.synthetic import make_clip

        if not 0 <= index < self.num_clips:
            raise IndexError(f"SyntheticAVDataset: index {index} out of range [0, {self.num_clips})")
        c = self.config
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        frames_px = c.height * (getattr(self.autoencoder, "downsample", 8) if c.video_space == "latent" else 1)
        if self.crop_prob > 0:  # its own generator: the plain clips' draws stay as they were
            gc = torch.Generator().manual_seed(self.seed * 1_000_003 + index + CROP_STREAM)
            if float(torch.rand((), generator=gc)) < self.crop_prob:
                return self._crop(gc, frames_px, make_clip)
        n_events = int(torch.randint(1, self.max_events + 1, (1,), generator=g))
        return make_clip(duration=c.frames / c.fps, fps=int(c.fps), sample_rate=c.sample_rate, size=frames_px,
                         n_events=n_events, kinds="mixed", generator=g)

    def _crop(self, g: torch.Generator, size: int, make_clip):
        """A window of the model's length cut at a random frame from a clip CROP_LENGTHS windows long."""
        from ..data.synthetic import SyntheticClip

        c = self.config
        frames = c.frames * CROP_LENGTHS
        fit = (frames - 6) // 6 + 1
        n_events = min(fit, int(torch.randint(1, self.max_events + 1, (CROP_LENGTHS,), generator=g).sum()))
        long = make_clip(duration=frames / c.fps, fps=int(c.fps), sample_rate=c.sample_rate, size=size,
                         n_events=n_events, kinds="mixed", generator=g, transient=self.crop_content == "scenes")
        start = int(torch.randint(0, frames - c.frames + 1, (1,), generator=g))
        t0, t1 = start / c.fps, (start + c.frames) / c.fps
        a0 = round(t0 * c.sample_rate)
        audio = long.audio[a0:a0 + round(c.frames / c.fps * c.sample_rate)]
        inside = [i for i, t in enumerate(long.event_times) if t0 <= t < t1]
        return SyntheticClip(video=long.video[:, start:start + c.frames], audio=audio,
                             event_times=[round((long.event_times[i] - t0) * c.fps) / c.fps for i in inside],
                             audio_event_times=[round(t - t0, 6) for t in long.audio_event_times if t0 <= t < t1],
                             event_kinds=[long.event_kinds[i] for i in inside],
                             ball_frames=[(max(lo, start) - start, min(hi, start + c.frames - 1) - start)
                                          for lo, hi in long.ball_frames if lo < start + c.frames and hi >= start],
                             fps=long.fps,
                             sample_rate=long.sample_rate)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        clip = self.clip(index)
        v = video_to_model(clip.video[None], self.config, self.autoencoder)[0]
        a = audio_to_model(clip.audio[None], self.config)[0]
        T = self.config.audio_length
        a = a[..., :T] if a.shape[-1] >= T else torch.nn.functional.pad(a, (0, T - a.shape[-1]), mode="replicate")
        item = (v.contiguous(), a.contiguous())
        if self._cache is not None:
            self._cache[index] = item
        return item

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[int(i)] for i in indices.tolist()]
        return torch.stack([v for v, _ in items]), torch.stack([a for _, a in items])
