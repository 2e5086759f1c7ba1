"""Throw-away: train on long windows of scenes content. Every training clip is a scenes clip
(make_clip(transient=True)) of the model's frames (set with --model '{"frames": 72, "audio_length": 448}'),
with 1-3 events per 18 frames, as the held-out long clips of avfast.experiments.long_clips."""
import sys, torch
import avfast.train.data as D
from avfast.experiments.long_clips import MAX_EVENTS, MIN_GAP

SPAN = 18


def clip(self, index):
    from avfast.data.synthetic import make_clip
    c = self.config
    g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
    size = c.height * (getattr(self.autoencoder, "downsample", 8) if c.video_space == "latent" else 1)
    lengths = max(1, round(c.frames / SPAN))
    fit = max(1, (c.frames - 6) // MIN_GAP + 1)
    n_events = min(fit, int(torch.randint(1, MAX_EVENTS + 1, (lengths,), generator=g).sum()))
    return make_clip(duration=c.frames / c.fps, fps=int(c.fps), sample_rate=c.sample_rate, size=size,
                     n_events=n_events, kinds="mixed", min_gap_frames=MIN_GAP, generator=g, transient=True)


D.SyntheticAVDataset.clip = clip
from avfast.train.__main__ import main
sys.exit(main(sys.argv[1:]))
