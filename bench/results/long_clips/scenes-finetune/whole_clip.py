"""Throw-away: sample long clips with windows WIN_MULT x the model's training window (the U-Net has no
positional embedding along time, so it runs at any length)."""
import os, sys
W = sys.modules
import avfast.diffusion.windowed  # noqa
mod = sys.modules["avfast.diffusion.windowed"]
M = float(os.environ.get("WIN_MULT", "2"))
_orig = mod._window_sizes
def sizes(model, vs, as_):
    v, a = _orig(model, vs, as_)
    return (v[0], round(v[1] * M), v[2], v[3]), (a[0], round(a[1] * M))
mod._window_sizes = sizes
import math
import avfast.nn.attention as NA
from avfast.ops.attention import temporal_spatial_attention, default_scale
MODE = os.environ.get("ATTN_SCALE", "")
def fwd(self, x):
    qkv = self.qkv(self.norm(x))
    scale = None
    if MODE and (self.mode == "temporal" or not self.video) and M > 1:
        n = x.shape[2]
        n0 = max(n / M, 2)
        f = math.log(n) / math.log(n0)
        if MODE == "sqrtlog":
            f = math.sqrt(f)
        scale = default_scale(self.head_dim) * f
    return x + self.proj_out(temporal_spatial_attention(qkv, self.mode, self.head_dim, scale))
NA.TemporalSpatialAttention.forward = fwd
import avfast.experiments.long_clips as LC
def _cut(pipe, task, pixels, waves, settings, layout):
    p, w, sec, *_ = LC._generate(pipe, task, pixels, waves, settings, True)
    return p, w, sec
LC._generate_cut = _cut
SPAN = int(os.environ.get("EVENT_SPAN", "0"))   # held-out clips: 1-3 events per SPAN frames (the default model's 18)
if SPAN:
    _held = LC.held_out_clips
    class _Proxy:
        def __init__(self, pipe):
            self._pipe = pipe
            self.config = pipe.config.replace(frames=SPAN, audio_length=round(pipe.config.audio_length * SPAN / pipe.config.frames))
        def __getattr__(self, name):
            return getattr(self._pipe, name)
    def held(pipe, seconds, *a, **k):
        if k.get("offset"):   # the model's own window clips (offset 500_000): as they are
            return _held(pipe, seconds, *a, **k)
        return _held(_Proxy(pipe), seconds, *a, **k)
    LC.held_out_clips = held
_seam = LC.seam_scores
def seam(series, joins, distance):
    if not joins:
        joins = [series.shape[1] // 2]
    return _seam(series, joins, distance)
LC.seam_scores = seam
sys.exit(LC.main(sys.argv[1:]))
