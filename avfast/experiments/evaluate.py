"""Scores every row of the claims table on held-out synthetic clips; per-clip scores go to a JSON file.

Rows (each one score per clip, clips 0..N-1 of `SyntheticAVDataset(config, N, seed=2)`: seed 0 trained
the models, seed 1 made the demo's bundled clips):
    ceiling   the clip's own sound                         (AV-Align only: its beats are the reference)
    vocoder   the clip's own sound through mel + Griffin-Lim  (the best any generated mel can score here)
    floor     another clip's sound (clip i gets clip i+1's)
    v2a       sound generated for the clip's video by a model, decoded by Griffin-Lim
    joint     video and sound generated together (timestep adjustment gamma); AV-Align only
Generated sound is scored against the clip's true sound for beat hit rate (±100 ms, ±500 ms). Sampling
noise and Griffin-Lim's starting phase of clip i come from seed `seed + i` in every row (`avfast.Pipeline`),
so two models' rows are paired clip by clip.

The JSON is rewritten after each row; a rerun with the same settings and weights keeps finished rows.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..models import default_folder
from ..pipeline import Clip, Pipeline
from .finetune import RUNS, base_weights_file

METRICS = ("av_align", "hit_100ms", "hit_500ms")
TOLERANCES = {"hit_100ms": 0.1, "hit_500ms": 0.5}


@dataclass(frozen=True)
class Row:
    key: str
    kind: str                       # ceiling | vocoder | floor | v2a | joint
    label: str
    model: str | None = None
    condition_mode: str | None = None
    gamma: float = 1.0


@dataclass
class EvalSettings:
    base: str = str(default_folder("teacher"))  # the shipped default's teacher (a full-step model; fp16 weights)
    runs: str = "runs/claims"
    clips: int = 50
    data_seed: int = 2
    steps: int = 25
    sampler: str = "dpmpp2m"
    seed: int = 0
    batch: int = 10
    replace_models: tuple = ("ncmmd", "cmmd-1e-3")   # v2a also by replacement (CMMD's own v2a method)
    joint_model: str = "ncmmd-indep"
    gammas: tuple = (1.0, 1.5, 2.0)
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.replace_models, self.gammas = tuple(self.replace_models), tuple(float(g) for g in self.gammas)
        for name in ("clips", "steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalSettings: `{name}` must be >= 1, got {getattr(self, name)!r}")
        if self.clips < 2:
            raise ValueError(f"EvalSettings: `clips` must be >= 2 (the floor row pairs clip i with clip i+1), "
                             f"got {self.clips}")
        if self.data_seed == 0:
            raise ValueError("EvalSettings: `data_seed` 0 is the training clips; use a held-out seed (e.g. 2)")
        if any(g <= 0 for g in self.gammas):
            raise ValueError(f"EvalSettings: `gammas` must be > 0, got {self.gammas}")

    def identity(self) -> dict:
        """What a finished row's scores depend on (progress, threads and batch do not change them)."""
        d = asdict(self)
        return {k: d[k] for k in ("clips", "data_seed", "steps", "sampler", "seed")}


def model_dirs(settings: EvalSettings) -> dict[str, Path]:
    """Every model that exists: "base" and each fine-tune's final EMA weights."""
    found = {"base": Path(settings.base)} if (Path(settings.base) / "config.json").is_file() else {}
    for name in RUNS:
        d = Path(settings.runs) / name / "final"
        if (d / "config.json").is_file():
            found[name] = d
    return found


def plan_rows(settings: EvalSettings, models: dict[str, Path]) -> list[Row]:
    rows = [Row("ceiling", "ceiling", "clip's own sound (ceiling)"),
            Row("vocoder", "vocoder", "own sound via mel + Griffin-Lim"),
            Row("floor", "floor", "another clip's sound (floor)")]
    for name in ["base", *RUNS]:
        if name in models:
            rows.append(Row(f"v2a/clean/{name}", "v2a", f"v2a clean, {name}", name, "clean"))
    for name in settings.replace_models:
        if name in models:
            rows.append(Row(f"v2a/replace/{name}", "v2a", f"v2a replace, {name}", name, "replace"))
    if settings.joint_model in models:
        for g in settings.gammas:
            rows.append(Row(f"joint/gamma={g:g}/{settings.joint_model}", "joint",
                            f"joint gamma={g:g}, {settings.joint_model}", settings.joint_model, gamma=g))
    return rows


@dataclass
class HeldOut:
    """The held-out clips: model-space video, pixels and the true waveform cut to the model's length."""

    video: torch.Tensor                 # [N, C, F, H, W] model space
    pixels: list[torch.Tensor]          # [3, F, H, W] in [-1, 1]
    waves: list[torch.Tensor]           # [n_samples]
    event_kinds: list[str] = field(default_factory=list)  # e.g. "flash+hit": which events clip i has


def held_out_clips(config, settings: EvalSettings, autoencoder=None) -> HeldOut:
    from ..data.mel import MelConfig
    from ..train.data import SyntheticAVDataset

    n = config.audio_length * MelConfig(sample_rate=config.sample_rate, n_mels=config.mel_bins).hop_length
    data = SyntheticAVDataset(config, num_clips=settings.clips, seed=settings.data_seed, cache=False,
                              autoencoder=autoencoder)
    pixels, waves, kinds, video = [], [], [], []
    for i in range(settings.clips):
        clip = data.clip(i)
        wave = clip.audio[:n]
        waves.append(torch.nn.functional.pad(wave, (0, n - wave.shape[0])))
        pixels.append(clip.video[:, : config.frames])
        kinds.append("+".join(sorted(set(clip.event_kinds))))
        video.append(data[i][0])
    return HeldOut(torch.stack(video), pixels, waves, kinds)


def score_clip(pixels: torch.Tensor, wave: torch.Tensor, reference: torch.Tensor | None, fps: float,
               sample_rate: int) -> dict[str, float | None]:
    """AV-Align of (pixels, wave); beat hit rates of `wave` against `reference` (None without one)."""
    from ..metrics import av_align, beat_hit_rate

    out: dict[str, float | None] = {"av_align": av_align(pixels, wave, fps=fps, sample_rate=sample_rate).score}
    hits = beat_hit_rate(wave, reference, sample_rate, tuple(TOLERANCES.values())) if reference is not None else None
    for name, tol in TOLERANCES.items():
        out[name] = hits.hit_rates[tol] if hits is not None else None
    return out


def _generate(pipe: Pipeline, row: Row, clips: HeldOut, settings: EvalSettings) -> Clip:
    """The clips of a v2a or joint row, `batch` per sampler call; clip i from seed `seed + i` (sampler noise
    and Griffin-Lim phase), so rows are paired clip by clip."""
    common = dict(steps=settings.steps, sampler=settings.sampler, seed=settings.seed, max_batch=settings.batch,
                  progress=settings.progress)
    if row.kind == "v2a":
        return pipe("v2a", video=torch.stack(clips.pixels), condition_mode=row.condition_mode, **common)
    return pipe("joint", batch=settings.clips, gamma=row.gamma, **common)


def evaluate_row(row: Row, pipe: Pipeline | None, clips: HeldOut, base: Pipeline, settings: EvalSettings) -> dict:
    """Per-clip scores of one row: `pipe` generates (v2a/joint rows), `base` decodes the vocoder row."""
    cfg = base.config
    fps, sr = cfg.fps, cfg.sample_rate
    n = settings.clips
    if row.kind == "ceiling":
        pairs = [(clips.pixels[i], clips.waves[i], None) for i in range(n)]
    elif row.kind == "floor":
        pairs = [(clips.pixels[i], clips.waves[(i + 1) % n], clips.waves[i]) for i in range(n)]
    elif row.kind == "vocoder":
        resynth = base.decode_audio(base.encode_audio(torch.stack(clips.waves)), seed=settings.seed)
        pairs = [(clips.pixels[i], resynth[i], clips.waves[i]) for i in range(n)]
    else:
        made = _generate(pipe, row, clips, settings)
        reference = row.kind == "v2a"
        pairs = [(made.pixels[i], made.waveform[i], clips.waves[i] if reference else None) for i in range(n)]
    per_clip = [score_clip(p, w, r, fps, sr) for p, w, r in pairs]
    return {name: [c[name] for c in per_clip] for name in METRICS}


def _load(path: Path, autoencoder=None) -> Pipeline:
    """A model folder's EMA weights (else its model weights) as a pipeline; fine-tunes, which have no
    autoencoder/ of their own, share the base's."""
    return Pipeline.from_pretrained(path, weights=base_weights_file(path), autoencoder=autoencoder, progress=False)


def run_evaluation(settings: EvalSettings, out: Path) -> dict:
    """Evaluates every planned row (keeping finished ones from `out` when settings and weights match),
    writes `out` after each row and returns the results."""
    from tqdm.auto import tqdm

    from ..models.weights import weights_checksum

    if settings.threads:
        torch.set_num_threads(settings.threads)
    dirs = model_dirs(settings)
    if "base" not in dirs:
        raise FileNotFoundError(f"--base: no model folder at {settings.base} (config.json + weights)")
    base = _load(dirs["base"])
    pipes = {"base": base} | {name: _load(d, base.autoencoder) for name, d in dirs.items() if name != "base"}
    checksums = {name: weights_checksum(p.model.state_dict()) for name, p in pipes.items()}
    missing = [name for name in RUNS if name not in pipes]
    if missing:
        print(f"not evaluated (no {settings.runs}/<name>/final yet): {', '.join(missing)}")
    previous = json.loads(out.read_text()) if out.is_file() else {}
    same = previous.get("settings", {}).get("identity") == settings.identity()
    results = {"settings": {**asdict(settings), "identity": settings.identity()},
               "models": {name: {"path": str(dirs[name]), "sha256": checksums[name]} for name in pipes},
               "rows": {}}
    clips = held_out_clips(base.config, settings, base.autoencoder)
    results["event_kinds"] = clips.event_kinds
    rows = plan_rows(settings, pipes)
    for row in tqdm(rows, desc="rows", unit="row", disable=not settings.progress):
        old = previous.get("rows", {}).get(row.key)
        if same and old is not None and old.get("sha256") == checksums.get(row.model):
            results["rows"][row.key] = old
            continue
        start = time.perf_counter()
        scores = evaluate_row(row, pipes.get(row.model), clips, base, settings)
        results["rows"][row.key] = {**asdict(row), "sha256": checksums.get(row.model), "scores": scores,
                                    "seconds": time.perf_counter() - start}
        _write_json(out, results)
    _write_json(out, results)
    return results


def _write_json(path: Path, data: dict) -> None:
    """Whole or not at all, and no temporary file left on failure (avfast._io.atomic_write_bytes)."""
    from .._io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
