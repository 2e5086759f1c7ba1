"""Audio onset detection for AV-Align: librosa's onset_detect, re-done in plain numpy.

Why not call librosa: its peak picker is a numba gufunc that JIT-compiles on first use (~21 s in a
fresh environment, ~2 s in every later process) and that crashed with SIGSEGV when numba's on-disk
cache had gone bad.  The algorithm is small, so it lives here and needs only numpy.

Why the code looks so literal: the onsets must EQUAL librosa's (tests/test_onsets.py compares them
where librosa is installed), and a peak picker turns a one-ulp difference in the envelope into a
moved or lost onset when two frames tie or a frame sits on the threshold.  So each step repeats
librosa 0.11's numpy operations in the same order, dtypes and memory layouts:

  onset_strength (spectral flux):  |STFT|^2 (Hann, n_fft 2048, centred, float32 frames, float64
  FFT, complex64 result) -> 128 Slaney mel bands (float32 filterbank) -> power_to_db (amin 1e-10,
  top_db 80) -> first difference with lag 1 -> half-wave rectify -> mean over bands -> pad the
  front by lag + n_fft // (2 hop) frames so frames stay centred.

  onset_detect: normalise the envelope to [0, 1], then peak_pick with pre_max 30 ms, post_max
  1 frame, pre_avg 100 ms, post_avg 100 ms + 1 frame, wait 30 ms, delta 0.07; numba's np.mean
  is a sequential float32 sum divided in float64 and rounded back to float32, and delta is float32.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List

import numpy as np

N_FFT = 2048
N_MELS = 128
LAG = 1
DELTA = 0.07


def _check(y: np.ndarray, sample_rate: int, hop_length: int) -> None:
    if y.ndim != 1:
        raise ValueError(f"audio: expected a mono waveform [N], got shape {y.shape}")
    if y.size == 0:
        raise ValueError("audio: the waveform is empty")
    if not np.all(np.isfinite(y)):
        raise ValueError("audio: the waveform contains NaN or inf")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: expected > 0, got {sample_rate}")
    if not (isinstance(hop_length, (int, np.integer)) and hop_length > 0):
        raise ValueError(f"hop_length: expected a positive integer, got {hop_length!r}")


def _hann(n: int) -> np.ndarray:
    # scipy.signal.get_window("hann", n, fftbins=True): general_cosine over n + 1 points, truncated.
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    w += 0.5 * np.cos(0 * fac)
    w += 0.5 * np.cos(1 * fac)
    return w[:-1]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale (librosa htk=False): linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    mels = (hz - 0.0) / f_sp
    min_log_mel = (1000.0 - 0.0) / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = hz >= 1000.0
    mels[log_t] = min_log_mel + np.log(hz[log_t] / 1000.0) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = 0.0 + f_sp * mels
    min_log_mel = (1000.0 - 0.0) / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = 1000.0 * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


@lru_cache(maxsize=8)
def mel_basis(sample_rate: float, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with fmax = sr / 2: float32 [n_mels, n_fft//2 + 1]."""
    fmax = 0.5 * sample_rate
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    lo, hi = _hz_to_mel(np.array([0.0, float(fmax)]))
    mel_f = _mel_to_hz(np.linspace(lo, hi, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]  # Slaney area norm
    weights.flags.writeable = False
    return weights


def onset_strength(audio: np.ndarray, sample_rate: int, hop_length: int = 512,
                   pad_mode: str = "constant") -> np.ndarray:
    """Spectral-flux onset envelope, float32 [1 + N // hop]; = librosa.onset.onset_strength(y=audio,
    sr=sample_rate, hop_length=hop_length, pad_mode=pad_mode) for a float32 waveform."""
    y = np.asarray(audio, dtype=np.float32)
    _check(y, sample_rate, hop_length)
    padded = np.pad(y, (N_FFT // 2, N_FFT // 2), mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::hop_length]  # [T, n_fft]
    # float32 frames times the float64 window -> float64 FFT -> complex64, as librosa.stft.
    spec = np.fft.rfft(_hann(N_FFT) * frames, axis=-1).astype(np.complex64)
    power = np.abs(spec.T) ** 2.0  # [freq, T], Fortran-ordered like librosa's stft matrix
    mel = np.abs(np.einsum("...ft,mf->...mt", power, mel_basis(float(sample_rate)), optimize=True))
    db = 10.0 * np.log10(np.maximum(1e-10, mel))
    db -= 10.0 * np.log10(np.maximum(1e-10, 1.0))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, db[..., LAG:] - db[..., :-LAG])
    env = np.empty((1, flux.shape[-1]), order="F" if np.isfortran(flux) else "C", dtype=flux.dtype)
    env[0] = np.mean(flux, axis=-2)
    env = np.pad(env, [(0, 0), (LAG + N_FFT // (2 * hop_length), 0)], mode="constant")
    return env[0, :db.shape[-1]]


def _window_mean(x: np.ndarray) -> np.float32:
    # numba's np.mean on float32: a sequential float32 sum (cumsum is sequential), divided in
    # float64 and rounded to float32 -- numpy's own pairwise sum can differ in the last bit.
    return np.float32(float(np.cumsum(x, dtype=np.float32)[-1]) / x.size)


def peak_pick(x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int,
              delta: float, wait: int) -> np.ndarray:
    """librosa.util.peak_pick on a 1-D float32 array: frame indices n with x[n] the maximum of
    x[n - pre_max : n + post_max], x[n] >= mean(x[n - pre_avg : n + post_avg]) + delta, and more
    than `wait` frames after the previous pick (greedy, left to right)."""
    for name, value, least in (("pre_max", pre_max, 0), ("post_max", post_max, 1), ("pre_avg", pre_avg, 0),
                               ("post_avg", post_avg, 1), ("wait", wait, 0), ("delta", delta, 0)):
        if value < least:
            raise ValueError(f"{name}: expected >= {least}, got {value}")
    x = np.asarray(x, dtype=np.float32)
    pre_max, post_max, pre_avg, post_avg, wait = (int(np.ceil(v)) for v in
                                                  (pre_max, post_max, pre_avg, post_avg, wait))
    n = x.shape[0]
    padded = np.concatenate([np.full(pre_max, -np.inf, np.float32), x,
                             np.full(post_max - 1, -np.inf, np.float32)])
    local_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max).max(axis=-1)
    delta32 = np.float32(delta)
    peaks, next_allowed = [], 0
    for i in np.flatnonzero(x == local_max):
        if i < next_allowed:
            continue
        avg = _window_mean(x[max(0, i - pre_avg):min(i + post_avg, n)])
        if x[i] >= np.float32(avg + delta32):
            peaks.append(int(i))
            next_allowed = i + wait + 1
    return np.array(peaks, dtype=int)


def onset_detect(envelope: np.ndarray, sample_rate: int, hop_length: int = 512) -> np.ndarray:
    """Onset frames = librosa.onset.onset_detect(onset_envelope=envelope, sr=sample_rate,
    hop_length=hop_length) with its defaults (normalised envelope, no backtracking)."""
    env = np.array(envelope, dtype=np.float32)
    if env.ndim != 1:
        raise ValueError(f"envelope: expected a 1-D onset envelope, got shape {env.shape}")
    env = env - np.min(env, keepdims=True, axis=-1)
    env /= np.max(env, keepdims=True, axis=-1) + np.finfo(env.dtype).tiny
    if not env.any() or not np.all(np.isfinite(env)):
        return np.array([], dtype=int)
    sr, hop = sample_rate, hop_length
    return peak_pick(env, pre_max=0.03 * sr // hop, post_max=0.00 * sr // hop + 1,
                     pre_avg=0.10 * sr // hop, post_avg=0.10 * sr // hop + 1,
                     wait=0.03 * sr // hop, delta=DELTA)


def frames_to_time(frames: np.ndarray, sample_rate: int, hop_length: int) -> List[float]:
    """Frame indices -> times (s), as librosa.frames_to_time: integer samples over a float rate."""
    samples = (np.asanyarray(frames) * hop_length).astype(int)
    return [float(t) for t in samples / float(sample_rate)]
