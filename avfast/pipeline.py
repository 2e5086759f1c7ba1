"""`avfast.Pipeline`: a model folder in, clips with sound out. Encode → sample → decode, written once.

    pipe = avfast.Pipeline.from_pretrained("default")                 # or a folder; device=, runtime=, precision=
    clip = pipe(task="v2a", video="clip.mp4", steps=25, seed=0)       # sound for a video
    clip.save("out.mp4"); clip.av_align().score
    clips = pipe(task="joint", batch=4, seed=0)                        # clip i from seed 0 + i
    for i, c in enumerate(clips): c.save(f"joint_{i}.mp4")

A pipeline holds the denoiser (the model on any runtime of `avfast.runtime`, in any precision), the video
codec (pixels, or a frame autoencoder for latent models: a model folder's `autoencoder/` subfolder), the
mel codec and the vocoder (MelGAN weights, or the Griffin-Lim fallback). A call takes the task, the
condition as a file or a tensor, and the sampler's settings, and returns a `Clip`: pixels, waveform, fps
and sample rate, with `save(path)` (mp4 with sound, or .wav for the sound alone) and `av_align()`.

Inputs and outputs are data, not model space: video [3, F, H, W] or [B, 3, F, H, W] in [-1, 1] at the
model's frame size, audio [N] or [B, N] in [-1, 1] at its sample rate (longer inputs are cut to the
model's length, or to `seconds=`; seconds="all" keeps the whole input). Conditions may be torch tensors or
numpy arrays; uint8 video is read as 0..255 and int16 audio as 16-bit PCM (both mapped to [-1, 1]).

Long clips: `seconds=` beyond the model's window (or seconds="all" for v2a / a2v: the condition's own
length) samples overlapping windows denoised together at every step (`avfast.diffusion.windowed`), with
every sampler option; `window=` frames per window (default the model's config `long_window`, else its own
frames), `overlap=` frames between neighbouring windows, `window_batch=` windows per model call (peak memory
is that of `window_batch` windows, whatever the duration). See docs/long-clips.md.

    clip = pipe("joint", seconds=10, steps=25, seed=0)                  # 10 s of video with sound
    clip = pipe("v2a", video="long.mp4", seconds="all", overlap=6)      # sound for the whole video

`encode_video`, `encode_audio`, `decode_video` and `decode_audio` are the codecs on their own, for
callers that hold model-space tensors.

Determinism: clip i of a call draws its sampler noise from `seed + i` (`avfast.diffusion.sample`) and
its Griffin-Lim starting phase from a generator seeded `seed + i`, so the same seed and settings give
the same clips, whatever the batch and `max_batch` chunking around them.

The sampler is `avfast.diffusion.sample`, a plain function over any denoiser; the pipeline adds files,
codecs, runtimes and batching around it, not sampling logic.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runtime as _runtime
from ._precision import FLOAT_PRECISIONS, check_precision, in_precision
from .data.mel import MelConfig
from .data.vocoder import Vocoder
from .diffusion.distilled import DistilledStepsWarning, resolve
from .diffusion.protocol import supports_grad
from .diffusion.sampling import TASKS
from .diffusion.sampling import sample as _sample
from .diffusion.windowed import DEFAULT_MAX_BATCH as DEFAULT_WINDOW_BATCH
from .diffusion.windowed import (audio_columns_for_seconds, check_window_noise, frames_for_seconds,
                                 shared_window_noise, window_shapes, windowed)
from .export.runtimes import create_runtime
from .models import codec
from .models.config import REFINE_PASSES
from .runtime.available import check_available

__all__ = ["AUDIO_SUFFIXES", "Clip", "Pipeline", "RUNTIMES", "SAVE_SUFFIXES", "make_vocoder"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# What Clip.save writes: the video with its sound, or the sound alone.
SAVE_SUFFIXES = (".mp4", ".wav")
# Conditions given as data are in [-1, 1]; decoders and resamplers overshoot it a little (H.264, a VAE,
# polyphase filters: a few percent), so only values beyond this are refused, as data on another scale
# (0..255 pixels or 16-bit PCM held in floats), which the model would take as noise.
DATA_RANGE_TOLERANCE = 1.5
# "torch": the model as loaded (with autocast for bf16/fp16); the others are avfast.runtime's.
RUNTIMES = ("torch",) + _runtime.NAMES

PathLike = str | os.PathLike
# Refinement pass k (k >= 1) of clip i draws its starting noise from seed + i + k * REFINE_SEED_STRIDE: a fresh
# draw, not the joint pass's noise again (measured: the same noise gives an a2v pass the joint pass's video
# back). The CPU generator keeps a seed's low 32 bits, so the stride is odd and far from any nearby seed
# modulo 2**32 (the 32-bit golden-ratio constant): no clip within a billion seeds shares a pass's noise.
REFINE_SEED_STRIDE = 0x9E3779B9


# --------------------------------------------------------------------------------- the clip
@dataclass
class Clip:
    """One or more generated clips: pixels [B, 3, F, H, W] in [-1, 1], waveform [B, N] in [-1, 1] (CPU, fp32).

    `clip[i]` and iteration give single clips; `save` and `av_align` work on a single clip.
    `calls` and `seconds` are the denoiser evaluations and the sampling time of the call that made it
    (decoding excluded); `seeds` the seed of each clip.
    """

    pixels: torch.Tensor
    waveform: torch.Tensor
    fps: float
    sample_rate: int
    task: str = "joint"
    seeds: tuple[int, ...] = ()
    calls: int = 0
    seconds: float = 0.0
    audio_source: str = ""
    steps: int = 0
    sampler: str = ""
    windows: int = 0       # windows per step of a long clip (0: the model's own length, no windowing)
    window_frames: int = 0  # video frames per window of a long clip (0: no windowing)
    peak_batch: int = 0    # the largest batch of one model call (windows x clips x 2 with CFG)
    passes: tuple[str, ...] = ()  # a joint clip's conditional passes after the joint one (refine=), e.g. ("v2a",)
    gamma: float = 1.0     # the timestep adjustment γ it was sampled at (config sampling_gamma unless the call gave one)

    def __post_init__(self) -> None:
        if self.pixels.dim() != 5 or self.waveform.dim() != 2 or self.pixels.shape[0] != self.waveform.shape[0]:
            raise ValueError(f"Clip: expected pixels [B, 3, F, H, W] and waveform [B, N], got "
                             f"{list(self.pixels.shape)} and {list(self.waveform.shape)}")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, index: int | slice) -> Clip:
        keep = slice(index, index + 1 if index != -1 else None) if isinstance(index, int) else index
        if isinstance(index, int) and not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        return replace(self, pixels=self.pixels[keep], waveform=self.waveform[keep], seeds=self.seeds[keep])

    def __iter__(self) -> Iterator[Clip]:
        return (self[i] for i in range(len(self)))

    @property
    def duration(self) -> float:
        return self.pixels.shape[2] / self.fps

    def _single(self, what: str) -> None:
        if len(self) != 1:
            raise ValueError(f"Clip.{what}: this holds {len(self)} clips; call it on one (clip[i], or iterate)")

    def save(self, path: PathLike) -> Path:
        """Writes the clip as an mp4 (H.264) with its sound (AAC), or for a .wav path its sound alone (16-bit
        PCM). Missing parent folders are made; the file appears whole or not at all."""
        from .data.video import save_audio, write_video

        self._single("save")
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"Clip.save: {str(path)!r} is a folder; give a file name ending in .mp4 or .wav")
        if path.suffix.lower() not in SAVE_SUFFIXES:
            raise ValueError(f"Clip.save: {str(path)!r} must end in .mp4 (the video with its sound) or .wav (the "
                             f"sound alone)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        try:
            if path.suffix.lower() == ".wav":
                save_audio(tmp, self.waveform[0], sample_rate=self.sample_rate)
            else:
                write_video(tmp, self.pixels[0], fps=self.fps, audio=self.waveform[0], sample_rate=self.sample_rate)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def __repr__(self) -> str:
        # Shapes, not values: the dataclass's own repr printed every pixel and sample.
        def tensor(x: torch.Tensor) -> str:
            return f"{list(x.shape)} {str(x.dtype).removeprefix('torch.')}"

        return (f"Clip(task={self.task!r}, pixels {tensor(self.pixels)}, waveform {tensor(self.waveform)}, "
                f"{self.duration:.2f} s at {self.fps:g} fps and {self.sample_rate} Hz, seeds={self.seeds}, "
                f"sampler={self.sampler!r}, steps={self.steps}, gamma={self.gamma:g}, calls={self.calls}, seconds={self.seconds:.2f}, "
                f"windows={self.windows}, passes={self.passes}, audio_source={self.audio_source!r})")

    def av_align(self):
        """AV-Align of the clip (`avfast.metrics.av_align`): audio onsets against visual motion peaks."""
        from .metrics import av_align

        self._single("av_align")
        return av_align(self.pixels[0], self.waveform[0], fps=self.fps, sample_rate=self.sample_rate)


# --------------------------------------------------------------------------------- parts
def make_vocoder(weights: PathLike | None, mel: MelConfig) -> Vocoder:
    """MelGAN from local .safetensors `weights`, or the Griffin-Lim fallback for None (without its
    warning: programs say which decoder made the sound in their own output)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Vocoder(None if weights is None else os.fspath(weights), mel)


def _load_autoencoder(source: Any, device: torch.device):
    """A FrameAutoencoder as given, or loaded from a folder: avfast's frame codec (model.safetensors)
    or a Stable Diffusion VAE (diffusers layout)."""
    if source is None or isinstance(source, torch.nn.Module):
        return None if source is None else source.to(device).eval()
    from .data.frame_codec import autoencoder_from_folder

    return autoencoder_from_folder(source, device).eval()


class _Counted:
    """Counts denoiser evaluations (for ms/FE) and forwards what samplers look at (and its `name`, so a
    refusal names the runtime, not this wrapper)."""

    def __init__(self, denoiser: Any, config: Any) -> None:
        self.denoiser, self.config, self.calls, self.peak_batch = denoiser, config, 0, 0
        self.supports_grad = supports_grad(denoiser)
        self.name = getattr(denoiser, "name", None) or type(denoiser).__name__

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.peak_batch = max(self.peak_batch, int(args[0].shape[0]))
        return self.denoiser(*args, **kwargs)


def check_refine(refine: str | Sequence[str], task: str) -> tuple[str, ...]:
    """`refine=` as a tuple of conditional tasks ("v2a" / "a2v"), checked; only a joint call takes one."""
    passes = (refine,) if isinstance(refine, str) else refine
    if not isinstance(passes, Sequence) or not all(isinstance(p, str) for p in passes):
        raise ValueError(f"`refine` must be a task or a sequence of tasks ('v2a', 'a2v'), got {refine!r}")
    passes = tuple(passes)
    bad = [p for p in passes if p not in REFINE_PASSES]
    if bad:
        raise ValueError(f"`refine` passes must be {' or '.join(map(repr, REFINE_PASSES))}, got {bad[0]!r}")
    if passes and task != "joint":
        raise ValueError(f"`refine` redraws a modality of a joint clip; task {task!r} already keeps its "
                         f"condition (use task='joint')")
    return passes


def _check_seconds(seconds: Any, task: str) -> None:
    if seconds is None:
        return
    if isinstance(seconds, str):
        if seconds != "all":
            raise ValueError(f"`seconds` must be a number of seconds > 0 or 'all' (v2a / a2v: the whole "
                             f"condition), got {seconds!r}")
        if task == "joint":
            raise ValueError("seconds='all' takes the clip's length from the condition; task 'joint' has none: "
                             "give a number of seconds")
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds <= 0:
        raise ValueError(f"`seconds` must be a finite number of seconds > 0 (the clip's duration), got {seconds!r}")


class _WindowProgress:
    """One bar over sampler steps for long clips, the windows of the current step in its postfix."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", disable=not enabled, leave=False)

    def __call__(self, evaluation: int, done: int, windows: int) -> None:
        self.bar.set_postfix_str(f"windows {done}/{windows}", refresh=False)
        if done == windows:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _batched(x: torch.Tensor, dims: int) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == dims - 1 else x


def _as_data(source: Any, name: str) -> torch.Tensor | None:
    """A condition given as data: a tensor as it is, a numpy array as a tensor; None for a file path.
    Anything else is refused, naming what came."""
    if isinstance(source, torch.Tensor):
        return source
    if isinstance(source, np.ndarray):
        try:   # a copy only where torch cannot share the array's memory (negative strides, e.g. x[::-1])
            return torch.from_numpy(np.ascontiguousarray(source))
        except TypeError:
            raise TypeError(f"{name}: expected a numeric numpy array, got dtype {source.dtype}") from None
    if isinstance(source, (str, os.PathLike)):
        return None
    raise TypeError(f"{name}: expected a torch.Tensor, a numpy array or a file path, got {type(source).__name__}")


def _check_range(x: torch.Tensor, name: str, what: str, scaled: str) -> None:
    """Refuses float data far outside [-1, 1] (DATA_RANGE_TOLERANCE), naming the range found."""
    low, high = (float(v) for v in torch.aminmax(x))
    if max(-low, high) > DATA_RANGE_TOLERANCE:
        raise ValueError(f"{name}: {what} holds values in [{low:g}, {high:g}]; expected floats in [-1, 1] "
                         f"({scaled})")


# --------------------------------------------------------------------------------- the pipeline
class Pipeline:
    """Denoiser + video codec + mel codec + vocoder; `pipe(task, video=, audio=, ...)` -> `Clip`.

    model: a `JointUNet` (or any module with `.config` and the denoiser call).
    autoencoder: the frame autoencoder of a latent model (a `FrameAutoencoder`, or a folder); None for
        pixel models.
    vocoder: MelGAN `.safetensors` weights, a `Vocoder`, or None (Griffin-Lim).
    runtime: "torch" (the model itself) or a name of `avfast.runtime.NAMES`; exported runtimes are
        exported (and cached) on first use for each denoiser batch.
    precision: "fp32", "bf16" or "fp16": autocast for the PyTorch runtimes, the export's precision for
        exported ones; "int8" (runtime "openvino" or "onnxruntime"): the quantised export. A precision the
        runtime does not run is refused here, naming what it runs (avfast.runtime.RUNTIME_PRECISIONS).
    """

    def __init__(self, model: torch.nn.Module, *, autoencoder: Any = None, vocoder: Any = None,
                 runtime: str = "torch", precision: str = "fp32", progress: bool = True) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r} is not available; this build has {', '.join(RUNTIMES)}")
        self.precision = (check_precision(precision, FLOAT_PRECISIONS, "runtime 'torch' (PyTorch autocast)")
                          if runtime == "torch" else _runtime.check_runtime_precision(runtime, precision))
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError(f"Pipeline: the model needs a `.config` (avfast.models.ModelConfig), got "
                            f"{type(model).__name__}")
        self.model, self.config, self.runtime, self.progress = model.eval(), config, runtime, progress
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        check_available(runtime, self.device, self.precision)  # one line before any work, not after an export
        if runtime == "torch" and self.precision == "fp16" and self.device.type == "cpu":
            warnings.warn("precision 'fp16' on the CPU: PyTorch has no fast fp16 kernels there, so it runs many times "
                          "slower than fp32 (12x measured on a Zen 4); use 'bf16' for half precision on a CPU",
                          UserWarning, stacklevel=2)
        self.autoencoder = _load_autoencoder(autoencoder, self.device)
        if config.video_space == "latent" and self.autoencoder is None:
            raise ValueError("this model works on autoencoder latents (config.video_space='latent'), and none was "
                             "given or found in its folder's autoencoder/; give one: `--autoencoder DIR` on the "
                             "command line, `autoencoder=` (a folder, or e.g. "
                             "avfast.data.StableDiffusionVAE.from_pretrained(PATH)) in Python")
        if config.height != config.width:
            raise ValueError(f"Pipeline reads square frames; this model's are {config.height}x{config.width}")
        self.mel = MelConfig(sample_rate=config.sample_rate, n_mels=config.mel_bins)
        self.vocoder = vocoder if isinstance(vocoder, Vocoder) else make_vocoder(vocoder, self.mel)
        self._denoisers: dict[int | None, Any] = {}

    @classmethod
    def from_pretrained(cls, path: PathLike = "default", *, device: str | torch.device = "cpu",
                        runtime: str = "torch", precision: str = "fp32", weights: str | None = None,
                        autoencoder: Any = None, vocoder: Any = None, progress: bool = True) -> Pipeline:
        """The pipeline of a model folder (config.json + model.safetensors, and for a latent model an
        `autoencoder/` subfolder unless `autoencoder=` is given), or of the package's default model
        for "default". `weights` picks another weights file of the folder (e.g. "ema.safetensors")."""
        from . import models
        from ._cli import CliError, check_device

        if runtime not in RUNTIMES:  # before loading anything
            raise ValueError(f"runtime {runtime!r} is not available; this build has {', '.join(RUNTIMES)}")
        try:   # a device this torch lacks is one line here, not an assertion inside torch when the model moves
            device = check_device(device, flag="`device`")
        except CliError as e:
            raise ValueError(str(e)) from None
        check_precision(precision)
        # before loading (or exporting) anything: RuntimeUnavailable naming what to install or what runs here
        check_available(runtime, device, precision)
        if str(path) in ("default", "default:teacher"):
            folder = models.resolve_model_name(path)
            if not (folder / "model.safetensors").is_file():
                raise models.DefaultModelUnavailable(
                    f"this avfast installation has no trained default model (expected {folder}/model.safetensors); "
                    f"pass a model folder instead")
        else:
            folder = Path(path)
            if not folder.is_dir():
                raise FileNotFoundError(f"{str(path)!r} is not a folder (expected config.json + model.safetensors)")
        kwargs = {} if weights is None else {"weights": weights}
        model = models.from_pretrained(folder, device=device, **kwargs)
        if autoencoder is None and model.config.video_space == "latent" and (folder / "autoencoder").is_dir():
            autoencoder = folder / "autoencoder"
        return cls(model, autoencoder=autoencoder, vocoder=vocoder, runtime=runtime, precision=precision,
                   progress=progress)

    # ----------------------------------------------------------------------------- sizes
    @property
    def frame_size(self) -> int:
        """Pixel height (= width) of the frames the pipeline reads and writes."""
        down = self.autoencoder.downsample if self.config.video_space == "latent" else 1
        return self.config.height * down

    @property
    def num_samples(self) -> int:
        """Samples of sound per clip (the model's mel frames times the hop)."""
        return self.config.audio_length * self.mel.hop_length

    # ----------------------------------------------------------------------------- codecs
    def _frame_chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A long clip in pieces of the model's frames for the frame autoencoder (its memory stays a
        window's, whatever the duration); pixel models take it whole."""
        if self.autoencoder is None or x.shape[2] <= self.config.frames:
            return [x]
        return list(x.split(self.config.frames, dim=2))

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> model space (any F; a latent model's frames go through the
        autoencoder a window at a time)."""
        parts = [codec.video_to_model(p.to(self.device), self.config, self.autoencoder)
                 for p in self._frame_chunks(pixels)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    @torch.no_grad()
    def decode_video(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> pixels [B, 3, F, H, W] in [-1, 1], CPU fp32."""
        parts = [codec.video_from_model(p, self.config, self.autoencoder).float().cpu() for p in self._frame_chunks(x)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    @torch.no_grad()
    def encode_audio(self, waveform: torch.Tensor, columns: int | None = None) -> torch.Tensor:
        """[B, N] in [-1, 1] -> model-space mel [B, mel_bins, columns] (default: the model's audio_length)."""
        columns = self.config.audio_length if columns is None else columns
        return codec.audio_to_model(waveform.to(self.device).float(), self.config)[..., :columns]

    @torch.no_grad()
    def decode_audio(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Model-space mel [B, mel_bins, T] -> waveform [B, T * hop] in [-1, 1], CPU fp32. Griffin-Lim's
        starting phase of clip i comes from a generator seeded `seed + i`."""
        logmel = codec.audio_from_model(x.float(), self.config)
        waves = [self.vocoder(logmel[i: i + 1], generator=torch.Generator().manual_seed(seed + i))
                 for i in range(logmel.shape[0])]
        return torch.cat(waves).float().clamp(-1, 1).cpu()

    # ----------------------------------------------------------------------------- inputs
    def read_video(self, source: PathLike | torch.Tensor | np.ndarray,
                   seconds: float | str | None = None) -> torch.Tensor:
        """A file, tensor or numpy array -> pixels [B, 3, frames, size, size] in [-1, 1], cut to the model's
        frames, or to `seconds` of video (frames_for_seconds), or whole for seconds="all". Pixels given as data
        are floats in [-1, 1], or uint8 0..255 (mapped to [-1, 1] as decoded files are); integers of other
        types, and floats far outside [-1, 1] (such as 0..255), are refused."""
        cfg, size = self.config, self.frame_size
        _check_seconds(seconds, "v2a")
        frames = (cfg.frames if seconds is None else None if seconds == "all" else
                  frames_for_seconds(cfg, seconds))
        given = _as_data(source, "video")
        if given is not None:
            pixels = _batched(given, 5)
            if pixels.dim() != 5 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (size, size):
                raise ValueError(f"video: expected pixels [3, F, {size}, {size}] or [B, 3, F, {size}, {size}] in "
                                 f"[-1, 1], got {list(given.shape)}")
            if not (pixels.is_floating_point() or pixels.dtype == torch.uint8):
                raise TypeError(f"video: expected float pixels in [-1, 1] or uint8 pixels in 0..255, got {given.dtype}")
            what = "the video tensor"
        else:
            from .data.video import read_video

            path = os.fspath(source)
            if os.path.isdir(path):
                raise IsADirectoryError(f"video: {path!r} is a folder, not a video file")
            clip = read_video(path, fps=cfg.fps, size=size, sample_rate=cfg.sample_rate, max_frames=frames)
            pixels, what = clip.video[None], repr(path)
        if frames is None:
            frames = pixels.shape[2]
            if frames < 1:
                raise ValueError(f"video: {what} has no frames")
        if pixels.shape[2] < frames:
            needs = "the model needs" if seconds is None else f"seconds={seconds!r} needs"
            raise ValueError(f"video: {what} has {pixels.shape[2]} frames at {cfg.fps:g} fps; {needs} {frames}")
        pixels = pixels[:, :, :frames]
        # uint8 is 0..255, as decoded frames are: mapped to [-1, 1] the way avfast.data.video maps a file's frames
        pixels = pixels.float() / 127.5 - 1 if pixels.dtype == torch.uint8 else pixels.float()
        if not bool(torch.isfinite(pixels).all()):
            raise ValueError(f"video: {what} has NaN or infinite values")
        if given is not None:
            _check_range(pixels, "video", what, "for 0..255 pixels pass x / 127.5 - 1, or a uint8 tensor")
        return pixels

    def read_audio(self, source: PathLike | torch.Tensor | np.ndarray,
                   seconds: float | str | None = None) -> torch.Tensor:
        """A file (wav/flac/ogg, or the sound track of an mp4/m4a: its video track, if any, is not decoded),
        tensor or numpy array -> waveform [B, num_samples] in [-1, 1]; with `seconds`, the samples of that
        many seconds' mel columns (audio_columns_for_seconds x hop), or of the whole input's for
        seconds="all". A waveform given as data is floats in [-1, 1], or int16 16-bit PCM (divided by
        32768); integers of other types, and floats far outside [-1, 1], are refused. It is mono: [B, N]
        is B clips (a stereo [2, N] array would be two clips), and [N, channels] is refused."""
        sr, hop = self.config.sample_rate, self.mel.hop_length
        _check_seconds(seconds, "a2v")
        n = (self.num_samples if seconds is None else None if seconds == "all" else
             audio_columns_for_seconds(self.config, seconds) * hop)
        given = _as_data(source, "audio")
        if given is not None:
            wave = _batched(given, 2)
            if wave.dim() != 2:
                raise ValueError(f"audio: expected a waveform [N] or [B, N], got {list(given.shape)}")
            if wave.shape[1] < hop <= wave.shape[0] and wave.shape[1] <= 8:   # soundfile's [frames, channels]
                raise ValueError(f"audio: expected a mono waveform [N] or clips [B, N], got {list(given.shape)}: "
                                 f"samples x channels, as soundfile reads a file? pass x.mean(-1) for one mono "
                                 f"clip")
            if not (wave.is_floating_point() or wave.dtype == torch.int16):
                raise TypeError(f"audio: expected a float waveform in [-1, 1] or int16 PCM samples, got {given.dtype}")
            what = "the audio tensor"
        else:
            from .data.video import load_audio, read_audio_stream

            path = os.fspath(source)
            if os.path.isdir(path):
                raise IsADirectoryError(f"audio: {path!r} is a folder, not a sound or video file")
            what = repr(path)
            if Path(path).suffix.lower() in AUDIO_SUFFIXES:
                wave = load_audio(path, sample_rate=sr, resample=True)
            else:   # the sound track alone: a video track (at any frame rate, or none) is never decoded
                wave = read_audio_stream(path, sr)
                if wave is None:
                    raise ValueError(f"audio: {path!r} has no audio stream")
            wave = wave[None]
        if n is None:
            n = wave.shape[1] // hop * hop
            if n < hop:
                raise ValueError(f"audio: {what} has {wave.shape[1]} samples, less than one mel column ({hop})")
        if wave.shape[1] < n:
            needs = "the model needs" if seconds is None else f"seconds={seconds!r} needs"
            raise ValueError(f"audio: {what} has {wave.shape[1] / sr:.2f} s of sound; {needs} {n / sr:.2f} s")
        wave = wave[:, :n]
        # int16 is 16-bit PCM (as soundfile and scipy read wav files): full scale 32768
        wave = wave.float() / 32768 if wave.dtype == torch.int16 else wave.float()
        if not bool(torch.isfinite(wave).all()):
            raise ValueError(f"audio: {what} has NaN or infinite samples")
        if given is not None:
            _check_range(wave, "audio", what, "for 16-bit PCM values pass x / 32768, or an int16 tensor")
        return wave

    # ----------------------------------------------------------------------------- the denoiser
    def denoiser(self, calls_batch: int = 1) -> Any:
        """The model on this pipeline's runtime and precision; exported runtimes are made (and cached) for
        a fixed batch of denoiser inputs (`calls_batch`: 2x the clips with classifier-free guidance)."""
        name = self.runtime
        key = None if name == "torch" or name in _runtime.TORCH_RUNTIMES else calls_batch
        if key not in self._denoisers:
            if name == "torch":
                made = in_precision(self.model, self.precision)
            elif name in _runtime.TORCH_RUNTIMES:
                made = _runtime.create(name, self.model, precision=self.precision)
            else:
                try:
                    made = create_runtime(name, self.model, batch_size=calls_batch, device=self.device,
                                           precision=self.precision, progress=self.progress)
                except _runtime.RuntimeUnavailable as e:
                    raise _runtime.RuntimeUnavailable(f"runtime {name}: {e}") from None
            self._denoisers[key] = made
        return self._denoisers[key]

    # ----------------------------------------------------------------------------- the call
    def __call__(self, task: str = "joint", video: PathLike | torch.Tensor | np.ndarray | None = None,
                 audio: PathLike | torch.Tensor | np.ndarray | None = None, *, steps: int | None = None,
                 sampler: str | None = None, seed: int = 0, batch: int | None = None, gamma: float | None = None,
                 guidance: float = 0.0,
                 cfg: float | Sequence[float] = 1.0, labels: int | torch.Tensor | None = None, eta: float = 0.0,
                 spacing: str = "trailing", condition_mode: str | None = None, max_batch: int | None = None,
                 progress: bool | None = None, seconds: float | str | None = None, overlap: int | None = None,
                 window_batch: int | None = None, window_noise: str | None = None, window: int | None = None,
                 refine: str | Sequence[str] | None = None) -> Clip:
        """Generates `batch` clips and returns them as a `Clip` (see the module docstring).

        task: "joint" (no condition), "v2a" (video= a file or pixels), "a2v" (audio= a file or waveform);
            pixels and waveforms as torch tensors or numpy arrays (read_video and read_audio say which dtypes).
            A batched condition [B, ...] gives B clips; an unbatched one is repeated `batch` times.
        steps, sampler, eta, spacing, gamma, guidance, condition_mode, cfg, labels: as
            `avfast.diffusion.sample` (cfg = its cfg_scale: one scale, or (video, audio)). steps / sampler /
            gamma None: a distilled student's own (config.distilled_steps, distilled_sampler,
            distilled_gamma; see avfast.diffusion.distilled), else 25 steps of "dpmpp2m" at γ = 1.
        seed: clip i uses seed + i. max_batch: at most this many clips per sampler call (memory), with
            the same result as one call.
        seconds: the clip's duration; None: the model's own length (a longer condition is cut to it). Longer
            than the model's window (or shorter), or "all" for v2a / a2v (the condition's whole length), the
            clip is sampled as overlapping windows denoised together (avfast.diffusion.windowed): one sampler
            state for the whole clip, so every option above works unchanged. A duration of exactly one window
            gives the plain call's clip bit for bit.
        overlap: video frames shared by neighbouring windows, 0 <= overlap < the window's frames (default a
            third of them); window_batch: windows per model call (default 8; 1 on exported runtimes, whose
            batch is fixed). window_noise: the windows' starting noise, "independent" (the default: drawn
            for the whole clip) or "shared" (every window starts from a permutation of the first window's
            noise frames and columns, FreeNoise-style: `avfast.diffusion.windowed.shared_window_noise`,
            clip i from seed + i). window: video frames per window (default the model's config
            `long_window`, else its own frames: 36 for the shipped default, two of its 18-frame windows); a
            longer window is the same U-Net on more frames and their seconds of mel columns (it has no
            positional encoding along time), with more context per window and memory that grows with the
            window, not the clip (docs/long-clips.md measures what it buys). Exported runtimes run the
            model's own frames only. All four need `seconds`.
        refine: joint only: conditional passes run after the joint pass, in order, each redrawing one
            modality for the other (a Gibbs sweep through the model's own conditionals), e.g. "v2a" (the
            sound redrawn for the joint video) or ("a2v", "v2a") (the video redrawn for the joint sound,
            then the sound for that video); () the joint pass alone; None the model's own
            (`config.joint_refine`; the shipped default's is ("v2a",)). Each pass has the call's sampler
            settings and `condition_mode` (guidance applies to the passes, not the joint pass), fresh noise
            (REFINE_SEED_STRIDE) and one more clip's sampling cost. See docs/sampling.md ("Joint clips in
            passes") for what it buys.
        """
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
        given = {"video": video, "audio": audio}
        wanted = {"joint": (), "v2a": ("video",), "a2v": ("audio",)}[task]
        for name, value in given.items():
            if name in wanted and value is None:
                raise ValueError(f"task {task!r} needs {name}= (a file or a tensor) to condition on")
            if name not in wanted and value is not None:
                raise ValueError(f"task {task!r} takes no {name}= " +
                                 ("(it generates both modalities)" if task == "joint" else
                                  f"(it generates the {name}; the condition is {wanted[0]}=)"))
        for name, value in (("batch", batch), ("max_batch", max_batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0, got {seed!r}")
        if guidance and self.runtime in _runtime.EXPORTED_RUNTIMES:
            raise ValueError(f"`guidance` > 0 (reconstruction guidance) needs gradients through the denoiser, and "
                             f"runtime {self.runtime!r} has none; use guidance=0 (replacement) or a PyTorch runtime")
        _check_seconds(seconds, task)
        if refine is None:   # the model's own joint passes (conditional tasks are one pass)
            refine = tuple(getattr(self.config, "joint_refine", ())) if task == "joint" else ()
        else:
            refine = check_refine(refine, task)
        exported = self.runtime != "torch" and self.runtime not in _runtime.TORCH_RUNTIMES
        # The model's long-clip window (config long_window) unless the call gives one; an exported graph has
        # the model's own frames only.
        frames_per_window = (window if window is not None else self.config.frames if exported
                             else self.config.long_window_frames)
        if window_noise is not None:
            check_window_noise(window_noise)
            if seconds is None:
                raise ValueError("`window_noise` is the starting noise of a long clip's windows; give `seconds=` too "
                                 "(a duration, or 'all' for the condition's length)")
        if overlap is not None or window_batch is not None or window is not None:
            if seconds is None:
                raise ValueError("`overlap`, `window_batch` and `window` shape the windows of a long clip; give "
                                 "`seconds=` too (a duration, or 'all' for the condition's length)")
        if window is not None:
            window_shapes(self.config, window)   # the sampler's own check: an int number of frames >= 1
        if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int)
                                    or not 0 <= overlap < frames_per_window):
            raise ValueError(f"`overlap` must be an int number of video frames in [0, {frames_per_window - 1}] (less "
                             f"than the window's {frames_per_window} frames), got {overlap!r}")
        if window_batch is not None and (isinstance(window_batch, bool) or not isinstance(window_batch, int)
                                         or window_batch < 1):
            raise ValueError(f"`window_batch` must be an int >= 1 (windows per model call), got {window_batch!r}")
        if exported and window_batch not in (None, 1):
            raise ValueError(f"runtime {self.runtime!r} has a fixed input batch: it runs one window per call "
                             f"(window_batch=1), got window_batch={window_batch}")
        if exported and window not in (None, self.config.frames):
            raise ValueError(f"runtime {self.runtime!r} has a fixed input shape of {self.config.frames} frames: it "
                             f"runs the model's own window only, got window={window}; use runtime 'torch'")
        window_batch = 1 if exported else window_batch or DEFAULT_WINDOW_BATCH
        progress = self.progress if progress is None else progress
        # A distilled student's own steps/sampler/γ when not given (refusals and warnings here, once).
        settings = resolve(self.config, steps, sampler, spacing, gamma, eta, default_steps=25,
                           default_sampler="dpmpp2m")
        steps, sampler, spacing, gamma = settings

        data = condition = None
        if task == "v2a":
            data = self.read_video(video, seconds)
        elif task == "a2v":
            data = self.read_audio(audio, seconds)
        long = seconds is not None
        if long:   # the clip's frames and mel columns, from its duration
            duration = (seconds if seconds != "all" else data.shape[2] / self.config.fps if task == "v2a"
                        else data.shape[1] / self.config.sample_rate)
            frames = frames_for_seconds(self.config, duration)
            columns = audio_columns_for_seconds(self.config, duration)
            if task == "v2a":
                frames = data.shape[2]
            if exported and (frames < frames_per_window or columns < self.config.audio_length):
                raise ValueError(f"runtime {self.runtime!r} has a fixed input shape of {frames_per_window} frames; a "
                                 f"clip of {duration:g} s is shorter than a window: use runtime 'torch' or "
                                 f"seconds >= {frames_per_window / self.config.fps:g}")
        n_given = 1 if data is None else data.shape[0]
        if batch is not None and n_given not in (1, batch):
            raise ValueError(f"`batch` ({batch}) disagrees with the {n_given} clips given as the condition")
        B = batch or n_given
        use_cfg = labels is not None and tuple(cfg if isinstance(cfg, Sequence) else (cfg, cfg)) != (1.0, 1.0)
        if long:   # a long clip's own memory grows with its duration: refuse what cannot fit, before any work
            from ._memory import long_clips_that_fit
            from .models.memory import windows_peak_bytes

            # The windows in flight: window_batch of them (at most the clip's, counted as window_layout's
            # fewest) for each clip of a call, twice with classifier-free guidance; a clip shorter than a
            # window is one window of its own length.
            (_, window_frames, *_), (_, window_columns) = window_shapes(self.config, frames_per_window)
            stride = window_frames - (window_frames // 3 if overlap is None else overlap)
            clip_windows = 1 + max(0, -(-(frames - window_frames) // stride))
            in_flight = min(window_batch, clip_windows) * min(max_batch or B, B) * (2 if use_cfg else 1)
            model_bytes = windows_peak_bytes(self.config, min(frames, window_frames), min(columns, window_columns),
                                             in_flight)
            long_clips_that_fit(self.config, float(duration), self.device, self.frame_size, "`seconds`", clips=B,
                                model_bytes=model_bytes)
        if data is not None:
            data = data.expand(B, *data.shape[1:])
            condition = (self.encode_video(data) if task == "v2a" else
                         self.encode_audio(data, columns if long else None))

        chunk = max_batch or B
        window_video, window_audio = window_shapes(self.config, frames_per_window)
        label_ids = None if labels is None else torch.as_tensor(labels).reshape(-1)
        videos, audios, calls, elapsed, windows, peak = [], [], 0, 0.0, 0, 0
        bar = (_WindowProgress(steps * (1 + len(refine)) * -(-B // chunk), f"{sampler} {task} {duration:g} s",
                               progress)
               if long else None)
        try:
            for start in range(0, B, chunk):
                stop = min(start + chunk, B)
                counted = _Counted(self.denoiser((2 if use_cfg else 1) * (stop - start) * (window_batch if long
                                                                                           else 1)), self.config)
                denoiser = counted
                if long:   # one sampler state for the whole clip; the model sees windows of it
                    denoiser = windowed(counted, frames, audio_length=columns, overlap=overlap,
                                        max_batch=window_batch, video_shape=window_video,
                                        audio_shape=window_audio, fps=float(self.config.fps),
                                        mel_rate=self.config.sample_rate / self.mel.hop_length, callback=bar)
                    windows = len(denoiser.layout.windows)
                part_labels = label_ids if label_ids is None or label_ids.numel() == 1 else label_ids[start:stop]
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                began = time.perf_counter()
                with warnings.catch_warnings():  # resolve() above already warned
                    warnings.simplefilter("ignore", DistilledStepsWarning)
                    kept = None if condition is None else condition[start:stop]
                    for i, pass_task in enumerate((task, *refine)):
                        if i:   # a refinement pass keeps the modality the last pass drew and redraws the other
                            kept = v if pass_task == "v2a" else a
                        pass_seed = seed + start + i * REFINE_SEED_STRIDE   # clip j: pass_seed + j, fresh per pass
                        start_noise = None
                        if long and window_noise == "shared":   # from the same seeds as the sampler's own noise
                            start_noise = shared_window_noise(denoiser.layout, window_video, window_audio,
                                                              range(pass_seed, pass_seed + stop - start))
                        v, a = _sample(denoiser, task=pass_task, condition=kept, steps=steps, sampler=sampler,
                                       seed=pass_seed, batch_size=stop - start, eta=eta, spacing=spacing,
                                       guidance=0.0 if refine and not i else guidance, condition_mode=condition_mode,
                                       gamma=gamma, cfg_scale=cfg, labels=part_labels, noise=start_noise,
                                       video_shape=denoiser.config.video_shape,
                                       audio_shape=denoiser.config.audio_shape, progress=progress and not long,
                                       device=self.device, dtype=self.dtype)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                elapsed += time.perf_counter() - began
                calls += denoiser.evaluations if long else counted.calls
                peak = max(peak, counted.peak_batch)
                videos.append(v)
                audios.append(a)
        finally:
            if bar is not None:
                bar.close()

        with torch.no_grad():
            pixels = data.float().cpu().clamp(-1, 1) if task == "v2a" else self.decode_video(torch.cat(videos))
            waves = data.float().cpu().clamp(-1, 1) if task == "a2v" else self.decode_audio(torch.cat(audios), seed)
        source = "input" if task == "a2v" else self.vocoder.method
        return Clip(pixels.contiguous(), waves.contiguous(), float(self.config.fps), int(self.config.sample_rate),
                    task=task, seeds=tuple(range(seed, seed + B)), calls=calls, seconds=elapsed, audio_source=source,
                    steps=settings.steps, sampler=settings.sampler, windows=windows, peak_batch=peak,
                    window_frames=frames_per_window if long else 0,
                    passes=refine, gamma=float(settings.gamma))

    def __repr__(self) -> str:
        video = "pixels" if self.autoencoder is None else type(self.autoencoder).__name__
        return (f"Pipeline({self.config.frames} frames of {self.frame_size}x{self.frame_size} at {self.config.fps:g} "
                f"fps, {self.num_samples / self.config.sample_rate:.2f} s of sound; video codec {video}, vocoder "
                f"{self.vocoder.method}, runtime {self.runtime}, {self.precision} on {self.device})")

