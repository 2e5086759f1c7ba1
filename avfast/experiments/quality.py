"""`python -m avfast.experiments.quality`: how good are a model's clips next to held-out real ones?

    python -m avfast.experiments.quality --model default --clips 100 --out bench/results/quality
    python -m avfast.experiments.quality --model runs/x/final --clips 16 --out /tmp/q --steps 8
    python -m avfast.experiments.quality --report-only --out bench/results/quality --docs

For each task (v2a: sound for a real clip's video; a2v: video for its sound; joint: both from noise) on
clips 0..N-1 of `SyntheticAVDataset(config, seed=--data-seed)` (seed 0 trained the models, seed 1 made
the demo's bundled clips, so the default 2 is held out), with a 95 % bootstrap CI over clips:
  residual ratio   mean median residual (avfast.metrics.frame_quality) of the generated frames over the
                   real clips' (paired bootstrap); 1 = as clean as the data. v2a: its video is the real
                   clip, so it has no video measures.
  AV-Align         of the generated clips, the real clips' own on the same clips, and their ratio.
  beat hit rate    ±100 / ±500 ms, generated sound against the clip's real sound (v2a only: a2v's sound
                   is the real one, joint has no reference sound).
  FD / KID         generated vs real frames in the fixed 180-d frame feature of
                   avfast.metrics.frame_quality (content, texture and motion; no pretrained network).
                   Floor: real vs real, clips 0..N-1 against the disjoint clips N..2N-1. FD's CI is a
                   bootstrap over clips shifted by its bias estimate (resamples repeat clips, which
                   raises FD); KID is the mean over random subsets of frames, without a CI.
  s/clip           wall time of generating (sampling + decoding) one clip, at --batch clips per call, after
                   an untimed call per task (an exported runtime's export and compilation are not a clip's cost).
Clips come from the model folder's `avfast.Pipeline` (`generate`). Sampling noise and Griffin-Lim's
starting phase of clip i come from seed `--seed + i` in every task; sound is decoded by the pipeline's
vocoder (Griffin-Lim for the default, as in the demo). Output in --out: quality.json (settings,
per-clip values, summary), quality.md (the table) and quality.png (real and generated frames side by
side, nearest-neighbour upscaled). `--readme FILE`
puts the table between FILE's <!-- quality:begin --> / <!-- quality:end --> markers; `--docs` puts it into
every file of README.md and docs/*.md (under the current folder) that holds them.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .._io import block_targets
from ..models.config import REFINE_WORDS, parse_refine

TASKS = ("v2a", "a2v", "joint")
DEFAULT_OUT = "bench/results/quality"
JSON_NAME, TABLE_NAME, FIGURE_NAME = "quality.json", "quality.md", "quality.png"
README_BLOCK = re.compile(r"(<!-- quality:begin -->\n)(.*?)(<!-- quality:end -->)", flags=re.S)
TOLERANCES = {"hit_100ms": 0.1, "hit_500ms": 0.5}
FD_RESAMPLES = 200


@dataclass
class QualitySettings:
    model: str = "default"
    clips: int = 100
    data_seed: int = 2
    steps: int | None = None     # None: the model's own (a distilled student's step count, else 25)
    sampler: str | None = None   # None: the model's own (a distilled student's sampler, else dpmpp2m)
    seed: int = 0
    batch: int = 8
    condition_mode: str = "clean"
    threads: int = 0            # torch threads (0: leave torch's default)
    progress: bool = True
    runtime: str = "torch"      # the denoiser's runtime (avfast.Pipeline's: torch or avfast.runtime.NAMES)
    precision: str = "fp32"     # its precision (fp32/bf16/fp16, int8 on openvino/onnxruntime)
    gamma: float | None = None  # timestep adjustment γ, every task (None: the model's own: sampling_gamma, a student's, else 1)
    tasks: tuple[str, ...] = TASKS  # a subset to score (a quick look at one task); README figures use all three
    refine: tuple[str, ...] | None = None  # joint's passes after the joint one (Pipeline's refine=; None: the model's)

    def __post_init__(self) -> None:
        for name in ("clips", "steps", "batch"):
            if name == "steps" and self.steps is None:
                continue
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"--{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.clips < 2:
            raise ValueError(f"--clips must be >= 2 (bootstrap intervals and FD need two clips or more), "
                             f"got {self.clips}")
        if self.data_seed == 0:
            raise ValueError("--data-seed 0 made the training clips; use a held-out seed (e.g. 2)")
        if self.sampler not in (None, "ddim", "dpmpp2m"):
            raise ValueError(f"--sampler must be 'ddim' or 'dpmpp2m', got {self.sampler!r}")
        if self.condition_mode not in ("clean", "replace"):
            raise ValueError(f"--condition-mode must be 'clean' or 'replace', got {self.condition_mode!r}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        if self.gamma is not None and (isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float))
                                       or not 0 < self.gamma < float("inf")):
            raise ValueError(f"--gamma must be a finite number > 0 (1 = no timestep adjustment), got {self.gamma!r}")
        from ..pipeline import check_refine

        if self.refine is not None:
            self.refine = check_refine(tuple(self.refine), "joint")
        self.tasks = tuple(self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"--tasks must name one or more of {', '.join(TASKS)} once each, got "
                             f"{' '.join(map(str, self.tasks)) or 'none'}")
        from ..pipeline import RUNTIMES
        from ..runtime import check_runtime_precision

        if self.runtime not in RUNTIMES:
            raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.runtime != "torch":
            check_runtime_precision(self.runtime, self.precision)
        elif self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"--runtime torch runs --precision fp32, bf16 or fp16, got {self.precision!r} "
                             f"(int8: --runtime openvino or onnxruntime)")


# --- the model, the held-out clips and generation ---------------------------------------------------

def model_folder(model: str) -> Path:
    """'default' / 'default:teacher' -> the package's default model / its teacher; else the folder (checked)."""
    from ..models import resolve_model_name

    folder = resolve_model_name(model)
    if not (folder / "config.json").is_file():
        what = "the package has no such default model" if model.startswith("default") else "not a model folder"
        raise FileNotFoundError(f"--model: {what}: expected config.json + weights in {folder}")
    return folder


@functools.lru_cache(maxsize=2)
def _pipeline(folder: str, runtime: str = "torch", precision: str = "fp32"):
    """The `avfast.Pipeline` of a model folder (its EMA weights when it has them) on a runtime and precision,
    loaded once per process."""
    from ..pipeline import Pipeline
    from .finetune import base_weights_file

    return Pipeline.from_pretrained(folder, weights=base_weights_file(Path(folder)), runtime=runtime,
                                    precision=precision, progress=False)


@dataclass
class HeldOutBatch:
    """Held-out clips: real pixels and sound at the model's frame size and length, and their events."""

    pixels: torch.Tensor       # [B, 3, F, H, W] in [-1, 1]
    waves: torch.Tensor        # [B, N] cut / padded to the model's audio length
    event_kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def slice(self, start: int, stop: int) -> "HeldOutBatch":
        return HeldOutBatch(self.pixels[start:stop], self.waves[start:stop], self.event_kinds[start:stop])


def held_out(folder: Path, start: int, stop: int, data_seed: int) -> HeldOutBatch:
    """Clips start..stop-1 of the held-out synthetic set with seed `data_seed` (never 0, the training seed)."""
    from ..train.data import SyntheticAVDataset

    if data_seed == 0:
        raise ValueError("held_out: seed 0 made the training clips")
    pipe = _pipeline(str(folder))
    cfg, n = pipe.config, pipe.num_samples
    data = SyntheticAVDataset(cfg, num_clips=stop, seed=data_seed, cache=False, autoencoder=pipe.autoencoder)
    pixels, waves, kinds = [], [], []
    for i in range(start, stop):
        clip = data.clip(i)
        wave = clip.audio[:n]
        pixels.append(clip.video[:, : cfg.frames])
        waves.append(torch.nn.functional.pad(wave, (0, n - wave.shape[0])))
        kinds.append("+".join(sorted(set(clip.event_kinds))))
    if pixels[0].shape[-1] != pipe.frame_size:
        raise ValueError(f"held_out: the synthetic clips are {pixels[0].shape[-1]} px, the model's frames "
                         f"{pipe.frame_size} px")
    return HeldOutBatch(torch.stack(pixels), torch.stack(waves), kinds)


def generate(model_folder: Path | str, task: str, held_out_batch: HeldOutBatch, steps: int, sampler: str,
             seed: int, condition_mode: str = "clean", runtime: str = "torch",
             precision: str = "fp32", gamma: float | None = None,
             refine: tuple[str, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels [B, 3, F, H, W] in [-1, 1], waveform [B, N]) for one task on a batch of held-out clips.

    v2a returns the clips' own pixels with generated sound, a2v generated pixels with the clips' own sound,
    joint both generated (clip i's sampling noise and Griffin-Lim's starting phase come from seed + i).
    gamma: the timestep adjustment γ of every pass (None: the model's own, config sampling_gamma, a student's
        distilled γ, else 1). In v2a / a2v the condition is clean (or forward-noised on the same grid); γ moves
        the generated modality's grid: v2a's sound on n(t), a2v's video on m(t).
    refine: joint's conditional passes after the joint one (`avfast.Pipeline`'s refine=; None: the model's own
        `joint_refine`), in condition_mode.
    The one place that turns a model folder into clips: a call to the folder's `avfast.Pipeline`.
    """
    if task not in TASKS:
        raise ValueError(f"generate: task must be one of {', '.join(TASKS)}, got {task!r}")
    pipe = _pipeline(str(model_folder), runtime, precision)
    given = {"v2a": {"video": held_out_batch.pixels}, "a2v": {"audio": held_out_batch.waves},
             "joint": {"batch": len(held_out_batch)}}[task]
    if gamma is not None:
        given["gamma"] = gamma
    if task == "joint":
        given["refine"] = refine
    clip = pipe(task, steps=steps, sampler=sampler, seed=seed, progress=False, condition_mode=condition_mode,
                **given)
    return clip.pixels.float().clamp(-1, 1), clip.waveform.float()


# --- scoring ----------------------------------------------------------------------------------------

def _av_align(pixels: torch.Tensor, waves: torch.Tensor, fps: float, sr: int) -> dict[str, list]:
    """Per-clip AV-Align scores and event counts (the counts give the event-pooled score)."""
    from ..metrics import av_align

    results = [av_align(p, w, fps=fps, sample_rate=sr) for p, w in zip(pixels, waves)]
    return {"av_align": [r.score for r in results], "av_align_counts": [list(r.counts) for r in results]}


def _beats(waves: torch.Tensor, reference: torch.Tensor, sr: int) -> dict[str, list[float]]:
    from ..metrics import beat_hit_rate

    hits = [beat_hit_rate(w, r, sr, tuple(TOLERANCES.values())).hit_rates for w, r in zip(waves, reference)]
    return {name: [h[tol] for h in hits] for name, tol in TOLERANCES.items()}


def _fd_interval(generated: np.ndarray, real: np.ndarray) -> dict:
    """FD with a bootstrap CI over clips (clip i of both sets drawn together; shifted by the bootstrap's
    bias estimate, see `bootstrap_statistic_ci`) and KID (mean over subsets) on the full sets."""
    from ..metrics.frame_quality import frame_distance
    from ..metrics.frechet import frechet_distance
    from .stats import bootstrap_statistic_ci

    d = generated.shape[-1]

    def fd(idx):
        return frechet_distance(generated[idx].reshape(-1, d), real[idx].reshape(-1, d))

    ci = bootstrap_statistic_ci(fd, generated.shape[0], resamples=FD_RESAMPLES, bias_corrected=True).to_dict()
    kid = frame_distance(generated, real)
    return {"fd": ci, "kid": kid["kid"], "kid_std": kid["kid_std"]}


def run_quality(settings: QualitySettings, out: Path) -> dict:
    """Generates and scores every task; writes quality.json, quality.md and quality.png into `out`."""
    from ..metrics.frame_quality import FEATURE_DIM, clip_residual, frame_features
    from ..models.weights import weights_checksum

    if settings.threads:
        torch.set_num_threads(settings.threads)
    folder = model_folder(settings.model)
    pipe = _pipeline(str(folder))
    model, autoencoder, cfg = pipe.model, pipe.autoencoder, pipe.config
    fps, sr, n = cfg.fps, cfg.sample_rate, settings.clips
    log = print if settings.progress else (lambda *a, **k: None)
    from ..diffusion.distilled import resolve

    # unset steps / sampler / gamma: the model's own (a distilled student's), recorded as resolved
    own = resolve(cfg, settings.steps, settings.sampler, None, settings.gamma, default_steps=25,
                  default_sampler="dpmpp2m", warn=False)
    settings = replace(settings, steps=own.steps, sampler=own.sampler, gamma=own.gamma,
                       refine=cfg.joint_refine if settings.refine is None else settings.refine)
    real = held_out(folder, 0, n, settings.data_seed)
    other = held_out(folder, n, 2 * n, settings.data_seed)  # disjoint: the real-vs-real floor
    real_feats = frame_features(real.pixels).numpy()
    results: dict = {
        "settings": asdict(settings),
        "model": {"folder": str(folder), "sha256": weights_checksum(model.state_dict()),
                  "video_space": cfg.video_space, "parameters": model.num_parameters,
                  "autoencoder": None if autoencoder is None else type(autoencoder).__name__},
        "vocoder": pipe.vocoder.method,
        "feature": f"avfast.metrics.frame_quality.frame_features ({FEATURE_DIM}-d: content, texture, motion)",
        "real": {"event_kinds": real.event_kinds,
                 "residual": clip_residual(real.pixels).tolist(),
                 **_av_align(real.pixels, real.waves, fps, sr),
                 "floor": _fd_interval(frame_features(other.pixels).numpy(), real_feats)},
        "tasks": {},
    }
    figure_clips: dict[str, torch.Tensor] = {"real": real.pixels[:2]}
    for task in settings.tasks:
        # Untimed first: an exported runtime is exported (or read from the cache) and compiled on its first
        # call at each batch size, which is not a clip's cost (it counted in v2a's s/clip before).
        for start in sorted({0, (n - 1) // settings.batch * settings.batch}):  # the first and the last batch size
            generate(folder, task, real.slice(start, min(start + settings.batch, n)), settings.steps, settings.sampler,
                     settings.seed + start, settings.condition_mode, settings.runtime, settings.precision,
                     settings.gamma, settings.refine)
        pixels, waves, seconds = [], [], 0.0
        for start in range(0, n, settings.batch):
            stop = min(start + settings.batch, n)
            t0 = time.perf_counter()
            p, w = generate(folder, task, real.slice(start, stop), settings.steps, settings.sampler,
                            settings.seed + start, settings.condition_mode, settings.runtime, settings.precision,
                            settings.gamma, settings.refine)
            seconds += time.perf_counter() - t0
            pixels.append(p)
            waves.append(w)
        pixels, waves = torch.cat(pixels), torch.cat(waves)
        per_clip: dict = _av_align(pixels, waves, fps, sr)
        entry: dict = {"seconds": seconds, "seconds_per_clip": seconds / n}
        if task == "v2a":
            per_clip |= _beats(waves, real.waves, sr)
            per_clip["residual"], entry["distance"] = None, None
        else:
            per_clip |= {name: None for name in TOLERANCES}
            per_clip["residual"] = clip_residual(pixels).tolist()
            entry["distance"] = _fd_interval(frame_features(pixels).numpy(), real_feats)
            figure_clips[task] = pixels[:2]
        results["tasks"][task] = {**entry, "per_clip": per_clip}
        log(f"{task}: {n} clips in {seconds:.1f} s ({seconds / n:.2f} s/clip)")
    results["summary"] = summarize(results)
    write_outputs(results, out)
    figure(figure_clips, out / FIGURE_NAME, results)
    return results


# --- the report -------------------------------------------------------------------------------------

def summarize(results: dict) -> dict:
    """task -> measure -> Interval dict (None where the task has no such measure), from the per-clip values."""
    from .pooled import pooled_ci, pooled_ratio_ci
    from .stats import bootstrap_ci, bootstrap_ratio_ci

    real = results["real"]
    real_counts = real.get("av_align_counts")   # results written before the pooled score have none
    out = {"real": {"av_align": bootstrap_ci(real["av_align"]).to_dict(), "fd": real["floor"]["fd"],
                    "kid": real["floor"]["kid"],
                    "av_align_pooled": None if real_counts is None else pooled_ci(real_counts)}}
    for task, entry in results["tasks"].items():
        c = entry["per_clip"]

        def ratio(a, b):
            r = None if a is None else bootstrap_ratio_ci(a, b)
            return None if r is None else r.to_dict()

        dist = entry.get("distance")
        out[task] = {
            "residual_ratio": ratio(c["residual"], real["residual"]),
            "av_align": bootstrap_ci(c["av_align"]).to_dict(),
            "av_align_ratio": ratio(c["av_align"], real["av_align"]),
            # per-event sync: every clip's onsets and motion peaks pooled (clip i resampled with real clip i)
            "av_align_pooled": None if real_counts is None or "av_align_counts" not in c
            else pooled_ci(c["av_align_counts"]),
            "av_align_pooled_ratio": None if real_counts is None or "av_align_counts" not in c
            else pooled_ratio_ci(c["av_align_counts"], real_counts),
            **{name: None if c[name] is None else bootstrap_ci(c[name]).to_dict() for name in TOLERANCES},
            "fd": None if dist is None else dist["fd"],
            "kid": None if dist is None else dist["kid"],
            "seconds_per_clip": entry["seconds_per_clip"],
        }
    return out


def _cell(ci: dict | None, fmt: str = ".3f") -> str:
    return "—" if ci is None else f"{ci['mean']:{fmt}} [{ci['low']:{fmt}}, {ci['high']:{fmt}}]"


def markdown(results: dict) -> str:
    """The quality table, rendered from a results JSON (the per-clip values and the stored FD intervals)."""
    s, summary = results["settings"], summarize(results)
    real = summary["real"]
    n = s["clips"]
    pooled = real.get("av_align_pooled") is not None   # results written before it have no event counts
    lines = [f"| task ({n} held-out clips) | residual ratio | AV-Align | AV-Align / real clips' | "
             + ("AV-Align, events pooled | pooled / real clips' | " if pooled else "")
             + "beat hit ±100 ms | beat hit ±500 ms | FD (frame feature) | KID ×10³ | s/clip |",
             "|---|---|---|---|" + ("---|---|" if pooled else "") + "---|---|---|---|---|"]
    kid = real["kid"]
    lines.append(f"| real clips (ceiling; FD floor: clips {n}–{2 * n - 1} vs 0–{n - 1}) | 1 | "
                 f"{_cell(real['av_align'])} | 1 | " + (f"{_cell(real['av_align_pooled'])} | 1 | " if pooled else "")
                 + f"— | — | {_cell(real['fd'], '.2f')} | {1e3 * kid:.1f} | — |")
    for task in TASKS:
        if task not in summary:
            continue
        t = summary[task]
        kid = "—" if t["kid"] is None else f"{1e3 * t['kid']:.1f}"
        lines.append(f"| {task} | {_cell(t['residual_ratio'], '.2f')} | {_cell(t['av_align'])} | "
                     f"{_cell(t['av_align_ratio'], '.2f')} | "
                     + (f"{_cell(t['av_align_pooled'])} | {_cell(t['av_align_pooled_ratio'], '.2f')} | " if pooled
                        else "")
                     + f"{_cell(t['hit_100ms'])} | {_cell(t['hit_500ms'])} | "
                     f"{_cell(t['fd'], '.2f')} | {kid} | {t['seconds_per_clip']:.2f} |")
    lines += ["", f"Model: {s['model']} ({results['model']['video_space']}, weights sha256 "
                  f"{results['model']['sha256'][:12]}), {s['sampler']} {s['steps']} steps, condition "
                  f"{s['condition_mode']}, sound by {results.get('vocoder', 'griffin-lim')}; held-out seed "
                  f"{s['data_seed']}; 95 % bootstrap CIs over clips. v2a's video is the real clip (no video measures); beats need a generated "
                  f"sound and a reference (v2a only)."]
    if pooled:
        lines.append("AV-Align is the mean of per-clip scores (a clip with one event scores 0 or 1; one whose video "
                     "draws no motion peak scores 0); events pooled: every clip's sound onsets and motion peaks "
                     "counted together (`avfast.metrics.pooled_av_align`), per-event sync, clip i resampled with "
                     "real clip i.")
    if s.get("gamma") not in (None, 1, 1.0):
        lines.append(f"Timestep adjustment γ = {s['gamma']:g} (every task: the generated modality's grid; "
                     f"docs/sampling.md).")
    if s.get("refine") and "joint" in summary:
        lines.append(f"Joint in passes: the joint pass, then {', then '.join(s['refine'])} (refine=; each pass "
                     f"{s['sampler']} {s['steps']} steps; docs/sampling.md).")
    runtime, precision = s.get("runtime", "torch"), s.get("precision", "fp32")
    if (runtime, precision) != ("torch", "fp32"):
        lines.append(f"Denoiser: runtime {runtime}, {precision}.")
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str | None:
    """The text between the README's quality markers, or None without them."""
    m = README_BLOCK.search(text)
    return None if m is None else m.group(2)


def update_readme(text: str, table: str) -> str:
    if readme_table(text) is None:
        raise ValueError("--readme: the file has no <!-- quality:begin --> ... <!-- quality:end --> block")
    return README_BLOCK.sub(lambda m: m.group(1) + table + m.group(3), text)


def doc_targets(readme: str | None, docs: bool, root: str | Path = ".") -> list[Path]:
    """The files the table goes into: `--readme FILE` and, with `--docs`, every file of README.md and docs/*.md
    under `root` that holds the quality markers (avfast._io.block_targets)."""
    return block_targets(README_BLOCK, "<!-- quality:begin --> ... <!-- quality:end -->", readme, docs, root)


def write_outputs(results: dict, out: Path) -> str:
    from .evaluate import _write_json

    _write_json(out / JSON_NAME, results)
    table = markdown(results)
    (out / TABLE_NAME).write_text(table)
    return table


def figure(clips: dict[str, torch.Tensor], path: Path, results: dict, frames: int = 9) -> None:
    """Rows of frames (clips x [real, a2v, joint]) at full resolution, upscaled by an integer factor with
    nearest-neighbour repetition and drawn one image pixel per screen pixel: no smoothing anywhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._figures import save_figure

    some = next(iter(clips.values()))
    f, h, w = some.shape[2:]
    picks = np.linspace(0, f - 1, min(frames, f)).round().astype(int)
    scale = max(1, 128 // h)
    gap, label_w, title_h = 4, 170, 40
    rows = [(name, i) for i in range(some.shape[0]) for name in clips]
    labels = {"real": "real clip {i}", "a2v": "a2v, clip {i}'s sound", "joint": "joint sample {i}"}
    row_h, row_w = h * scale, len(picks) * (w * scale + gap) - gap
    image = np.ones((len(rows) * (row_h + gap) - gap, row_w, 3))
    for r, (name, i) in enumerate(rows):
        video = ((clips[name][i].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).numpy()  # [F, H, W, 3]
        for k, fr in enumerate(picks):
            tile = np.repeat(np.repeat(video[fr], scale, axis=0), scale, axis=1)
            y, x = r * (row_h + gap), k * (w * scale + gap)
            image[y:y + row_h, x:x + w * scale] = tile
    dpi = 100
    width, height = label_w + image.shape[1] + 10, title_h + image.shape[0] + 10
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((label_w / width, 10 / height, image.shape[1] / width, image.shape[0] / height))
    ax.imshow(image, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    for r, (name, i) in enumerate(rows):
        y = 1 - (title_h + r * (row_h + gap) + row_h / 2) / height
        fig.text(8 / width, y, labels.get(name, name).format(i=i), fontsize=10, va="center")
    s = results["settings"]
    fig.text(8 / width, 1 - 14 / height,
             f"{s['model']}: frames {', '.join(str(p) for p in picks)} of held-out clips at {h}x{w} px, "
             f"shown x{scale} (nearest neighbour); {s['sampler']} {s['steps']} steps", fontsize=10, va="center")
    save_figure(fig, path)


# --- the command ------------------------------------------------------------------------------------

class _ArgumentError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error of this command (argparse prints usage too)
        raise _ArgumentError(message)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m avfast.experiments.quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    s = QualitySettings()
    ap.add_argument("--model", default=s.model, help="'default' or a model folder (default: %(default)s)")
    ap.add_argument("--clips", type=int, default=s.clips, help="held-out clips (default: %(default)s)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=s.steps)
    ap.add_argument("--sampler", default=s.sampler, choices=("ddim", "dpmpp2m"))
    ap.add_argument("--seed", type=int, default=s.seed, help="sampling noise of clip i: seed + i")
    ap.add_argument("--batch", type=int, default=s.batch, help="clips per sampling call (default: %(default)s)")
    ap.add_argument("--data-seed", type=int, default=s.data_seed, help="held-out clips' seed (default: %(default)s)")
    ap.add_argument("--condition-mode", default=s.condition_mode, choices=("clean", "replace"))
    ap.add_argument("--threads", type=int, default=s.threads, help="torch threads (0: torch's default)")
    ap.add_argument("--runtime", default=s.runtime, help="denoiser runtime: torch (default) or one of "
                                                         "avfast.runtime.NAMES, e.g. openvino")
    ap.add_argument("--precision", default=s.precision, help="denoiser precision: fp32 (default), bf16, fp16, "
                                                             "or int8 (runtime openvino/onnxruntime)")
    ap.add_argument("--gamma", type=float, default=s.gamma,
                    help="timestep adjustment γ of every task (default: the model's own, config sampling_gamma; "
                         "1 = none)")
    ap.add_argument("--refine", nargs="+", default=None, choices=REFINE_WORDS, metavar="TASK",
                    help="joint's passes after the joint one, in order, each v2a or a2v (--refine v2a: the sound "
                         "redrawn for the joint video), or none (the joint pass alone); default: the model's own "
                         "(config joint_refine)")
    ap.add_argument("--tasks", nargs="+", default=list(s.tasks), metavar="TASK",
                    help=f"tasks to score, of {', '.join(TASKS)} (default: all)")
    ap.add_argument("--readme", default=None, help="also put the table between this file's "
                                                   "<!-- quality:begin --> / <!-- quality:end --> markers")
    ap.add_argument("--docs", action="store_true", help="also put it into every file of README.md and docs/*.md "
                    "(under the current folder) that holds those markers")
    ap.add_argument("--report-only", action="store_true",
                    help="no generation: the table (and --readme) again from <out>/quality.json")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None) -> int:
    from .._cli import CliError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        out = Path(args.out)
        targets = doc_targets(args.readme, args.docs)  # fail before the run, not after it
        if args.report_only:
            if not (out / JSON_NAME).is_file():
                raise FileNotFoundError(f"--report-only: no results at {out / JSON_NAME}; run without it first")
            results = json.loads((out / JSON_NAME).read_text())
            table = write_outputs(results, out)
        else:
            from .._cli import check_out_folder

            check_out_folder(out)  # a file or an unwritable place: one line before any work
            settings = QualitySettings(args.model, args.clips, args.data_seed, args.steps, args.sampler, args.seed,
                                       args.batch, args.condition_mode, args.threads, not args.no_progress,
                                       args.runtime, args.precision, args.gamma, tuple(args.tasks),
                                       parse_refine(args.refine))
            table = markdown(run_quality(settings, out))
        print(table, end="")
        for readme in targets:
            readme.write_text(update_readme(readme.read_text(), table))
            print(f"{readme}: quality table regenerated")
        print(f"results: {out / JSON_NAME}; table: {out / TABLE_NAME}"
              + ("" if args.report_only else f"; figure: {out / FIGURE_NAME}"))
        return 0
    except (ValueError, FileNotFoundError, ImportError, CliError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
