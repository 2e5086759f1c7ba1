"""Video and audio file I/O: mp4 (PyAV) and wav (soundfile) <-> the model's tensor layouts.

read_video: decode an mp4, resample to `fps` (10 by default, the paper's rate) by taking for each
output time k/fps the latest decoded frame at or before it, centre-crop to a square, resize to
`size` (128 or 64 in the paper) with antialiasing, and scale to [-1, 1] -> video [3, F, H, W].
The audio track (if any) is decoded, mixed to mono and resampled to 16 kHz -> audio [N].
write_video: the inverse, H.264 video with the audio muxed in as AAC.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ._deps import require

FPS = 10
SAMPLE_RATE = 16_000


@dataclass
class Clip:
    video: torch.Tensor  # [3, F, H, W] float in [-1, 1]
    audio: Optional[torch.Tensor]  # [N] float in [-1, 1], or None if the file has no audio
    fps: float
    sample_rate: int
    source_fps: float


def _check_file(path, what: str) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path!r} is a folder, not a{'n' if what[0] in 'aeiou' else ''} {what} file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path!r}")
    return path


def preprocess_frames(frames: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [3, F, size, size] in [-1, 1] (centre square crop, antialiased)."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [F, H, W, 3], got {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, 3, H, W]
    if size is not None:
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top:top + side, left:left + side]
        if side != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)
    return x.clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def _resample_audio(y: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return y
    signal = require("scipy.signal", "audio resampling")
    g = np.gcd(int(from_rate), int(to_rate))
    return signal.resample_poly(y, to_rate // g, from_rate // g).astype(np.float32)


def read_video(path, fps: float = FPS, size: Optional[int] = 128, sample_rate: int = SAMPLE_RATE,
               max_frames: Optional[int] = None, allow_upsampling: bool = False) -> Clip:
    """Read an mp4 into a Clip (video [3, F, size, size] in [-1, 1], audio [N] at sample_rate).

    Raises ValueError if the source frame rate is below `fps` (frames would be duplicated, which
    corrupts sync metrics) unless allow_upsampling=True.  size=None keeps the original frames.
    """
    av = require("av", "reading video files")
    path = _check_file(path, "video")
    with _open(av, path, "video") as container:
        if not container.streams.video:
            raise ValueError(f"video: {path!r} has no video stream")
        vstream = container.streams.video[0]
        rate = vstream.average_rate or vstream.guessed_rate
        source_fps = float(rate) if rate else None
        if source_fps is not None and source_fps + 1e-6 < fps and not allow_upsampling:
            raise ValueError(f"fps: {path!r} has {source_fps:.3g} fps, below the requested {fps}; "
                             f"pass allow_upsampling=True to repeat frames")
        frames, times = [], []
        for frame in container.decode(video=0):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else len(frames) / (source_fps or fps)
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(t)
    if not frames:
        raise ValueError(f"video: {path!r} contains no decodable video frames")
    times = np.asarray(times) - times[0]
    duration = times[-1] + 1.0 / (source_fps or fps)
    n_out = int(np.floor(duration * fps + 1e-6))
    if n_out < 1:  # a still image, or a clip shorter than one output frame: nothing to sample
        raise ValueError(f"video: {path!r} is {duration:.2f} s long, shorter than one frame at {fps:g} fps "
                         f"({1 / fps:.2f} s)")
    if max_frames is not None:
        n_out = min(n_out, max_frames)
    targets = np.arange(n_out) / fps
    # Latest frame shown at or before each target time (small epsilon absorbs pts rounding).
    index = np.clip(np.searchsorted(times, targets + 1e-4, side="right") - 1, 0, len(frames) - 1)
    picked = torch.from_numpy(np.stack([frames[i] for i in index]))
    video = preprocess_frames(picked, size)
    audio = read_audio_stream(path, sample_rate)
    if audio is not None:
        audio = audio[: int(round(n_out / fps * sample_rate))]
    return Clip(video, audio, fps, sample_rate, source_fps or fps)


def _open(av, path: str, what: str):
    try:
        return av.open(path)
    except Exception as exc:  # PyAV raises several error types for corrupt/unknown files
        raise ValueError(f"{what}: cannot read {path!r} as a{'n' if what[0] in 'aeiou' else ''} {what} file "
                         f"({type(exc).__name__}: {exc})") from exc


def read_audio_stream(path, sample_rate: int = SAMPLE_RATE) -> Optional[torch.Tensor]:
    """The first audio track of a media file (mp4, m4a, ...) as mono float [N] in [-1, 1] at `sample_rate`,
    or None if it has none. Only the audio is decoded: the file needs no video track, and its video track
    (at any frame rate) is never read."""
    av = require("av", "reading audio from video files")
    path = _check_file(path, "audio")
    with _open(av, path, "audio") as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        # AAC pads its last frame to 1024 samples; the stream's duration (from the mp4 edit list) is where
        # the sound ends, so the padding is cut off below.
        end = (round(float(stream.duration * stream.time_base) * sample_rate)
               if stream.duration and stream.time_base else None)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return None
    return torch.from_numpy(np.concatenate(chunks)[:end].astype(np.float32)).clamp(-1, 1)


def _video_to_uint8(video: torch.Tensor) -> np.ndarray:
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"video: expected [3, F, H, W] in [-1, 1], got {tuple(video.shape)}")
    x = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()  # [F, H, W, 3]


def write_video(path, video: torch.Tensor, fps: float = FPS, audio: Optional[torch.Tensor] = None,
                sample_rate: int = SAMPLE_RATE, crf: int = 18) -> None:
    """Write video [3, F, H, W] in [-1, 1] as H.264 mp4 (yuv420p, so H and W must be even), with
    mono audio [N] in [-1, 1] muxed in as AAC when given."""
    av = require("av", "writing video files")
    frames = _video_to_uint8(video)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"video: H.264 yuv420p needs even height and width, got {h}x{w}")
    if audio is not None and audio.dim() != 1:
        raise ValueError(f"audio: expected mono [N], got {tuple(audio.shape)}")
    # Written under a temporary name beside `path` and renamed when complete: a failure (the audio
    # encoder, a full disk, Ctrl-C) leaves no video-only or truncated mp4 behind, nor the temporary file.
    path = os.fspath(path)
    head, tail = os.path.split(path)
    stem, suffix = os.path.splitext(tail)
    tmp = os.path.join(head, f".{stem}.{os.getpid()}.partial{suffix or '.mp4'}")
    try:
        _encode_video(av, tmp, frames, fps, audio, sample_rate, crf, w, h)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _encode_video(av, path: str, frames: np.ndarray, fps: float, audio: Optional[torch.Tensor], sample_rate: int,
                  crf: int, w: int, h: int) -> None:
    with av.open(path, mode="w") as container:
        vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        # The same frames give the same bytes: x264's lookahead (macroblock tree, frame-type decisions) gave
        # small clips different bitstreams from run to run, even in one thread; it is off, in one thread.
        vstream.options = {"crf": str(crf), "x264-params": "rc-lookahead=0:mbtree=0:sync-lookahead=0"}
        vstream.codec_context.thread_count = 1
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for arr in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            samples = audio.detach().float().cpu().clamp(-1, 1).numpy().reshape(1, -1)
            aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="flt", layout="mono")
            aframe.sample_rate = sample_rate
            # An explicit pts lets the AAC encoder stamp its 1024-sample priming delay as negative
            # timestamps, which the mp4 muxer turns into an edit list, keeping audio in sync.
            aframe.pts = 0
            aframe.time_base = Fraction(1, sample_rate)
            for packet in astream.encode(aframe):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)


def load_audio(path, sample_rate: int = SAMPLE_RATE, resample: bool = False) -> torch.Tensor:
    """Read a wav/flac/ogg file as mono float [N].  A file at another rate raises ValueError
    naming both rates unless resample=True (polyphase resampling with SciPy)."""
    sf = require("soundfile", "reading audio files")
    path = _check_file(path, "audio")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise ValueError(f"audio: cannot read {path!r} as an audio file ({type(exc).__name__}: {exc})") from exc
    y = data.mean(axis=1)
    if rate != sample_rate:
        if not resample:
            raise ValueError(f"sample_rate: {path!r} is sampled at {rate} Hz, expected {sample_rate} Hz; "
                             f"pass resample=True to convert it")
        y = _resample_audio(y, rate, sample_rate)
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


def save_audio(path, audio: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono audio [N] in [-1, 1] as 16-bit PCM wav."""
    sf = require("soundfile", "writing audio files")
    if audio.dim() != 1:
        raise ValueError(f"audio: expected mono [N], got {tuple(audio.shape)}")
    sf.write(os.fspath(path), audio.detach().float().cpu().clamp(-1, 1).numpy(), sample_rate, subtype="PCM_16")
