"""`python -m avfast.train.autoencoder`: train the frame codec (`avfast.data.FrameCodec`) on synthetic frames.

    python -m avfast.train.autoencoder --out runs/codec --steps 3000

The run folder is laid out as a diffusion run's: checkpoints/ (atomic, resumable: a killed run continues
bit for bit from the newest complete one), metrics.jsonl, loss.png, and final/ (the EMA weights, with
`scaling_factor` set so that latents have unit standard deviation) plus final/reconstruction.json
(held-out PSNR and pixel residual of real vs reconstructed frames).

The loss is L1 + MSE on pixels. Half of each batch is decoded from latents with Gaussian noise added
(up to 10 % of the latents' spread): a diffusion model never returns the exact latents of a real frame,
and a decoder trained only on exact ones can turn small errors into speckle.
Exit status: 0 done, 2 bad options.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .._cli import Parser
from .._io import atomic_write_bytes
from ..data.frame_codec import AutoencoderConfig, FrameCodec
from ..data.synthetic import make_clip
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .runlog import append_row, cut_log, plot_loss

HELD_OUT_SEED = 10_007  # clips for the reconstruction figures; training clips use --seed


@dataclass
class CodecTrainConfig:
    out: str = "runs/codec"
    steps: int = 3000
    batch_size: int = 64        # frames per step
    lr: float = 1e-3            # Adam, cosine-decayed to lr/20 after `warmup` steps
    warmup: int = 100
    num_clips: int = 1024       # synthetic clips (18 frames each) the frames are drawn from
    size: int = 32              # frame size
    latent_noise: float = 0.1   # max std of the noise added to half the batch's latents (x their std)
    ema_decay: float = 0.999
    seed: int = 0
    save_every: int = 250
    log_every: int = 10
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [(n, v) for n, v in (("steps", self.steps), ("batch_size", self.batch_size), ("num_clips", self.num_clips),
                                    ("save_every", self.save_every), ("log_every", self.log_every)) if v < 1]
        if bad:
            raise ValueError(f"{bad[0][0]}: expected an integer >= 1, got {bad[0][1]}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr}")
        if self.size < 8 or self.size % 4:
            raise ValueError(f"size: expected a multiple of 4 >= 8, got {self.size}")
        if not 0 <= self.latent_noise < 1:
            raise ValueError(f"latent_noise: expected a number in [0, 1), got {self.latent_noise}")


def frames_of_clips(num_clips: int, seed: int, size: int) -> torch.Tensor:
    """[N*18, 3, size, size]: every frame of `num_clips` synthetic clips (1-3 events, kinds mixed)."""
    frames = []
    for i in range(num_clips):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        n_events = int(torch.randint(1, 3, (1,), generator=g))
        clip = make_clip(size=size, n_events=n_events, kinds="mixed", generator=g)
        frames.append(clip.video.transpose(0, 1))
    return torch.cat(frames)


def _lr(cfg: CodecTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    u = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr / 20 + (cfg.lr - cfg.lr / 20) * 0.5 * (1 + math.cos(math.pi * u))


def _generator(cfg: CodecTrainConfig, step: int) -> torch.Generator:
    digest = hashlib.blake2b(f"{cfg.seed}:{step}:codec".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def codec_loss(codec: FrameCodec, x: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    z = codec.encoder(x)
    half = x.shape[0] // 2
    if noise > 0 and half:
        spread = z.detach().std()
        scale = noise * torch.rand(half, 1, 1, 1, generator=g) * spread
        z = torch.cat([z[:half] + scale * torch.randn(z[:half].shape, generator=g), z[half:]])
    y = codec.decoder(z)
    return F.l1_loss(y, x) + F.mse_loss(y, x)


def residual(frames: torch.Tensor) -> torch.Tensor:
    """Per-frame mean |x - median3x3(x)| of [N, C, H, W] (replicate padding)."""
    n, c, h, w = frames.shape
    y = frames.reshape(n * c, 1, h, w)
    med = F.unfold(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3).median(dim=1).values.reshape(y.shape)
    return (y - med).abs().reshape(n, -1).mean(dim=1)


@torch.no_grad()
def reconstruction_report(codec: FrameCodec, frames: torch.Tensor) -> dict:
    rec = torch.cat([codec.decoder(codec.encoder(c)).clamp(-1, 1) for c in frames.split(256)])
    mse = ((rec - frames) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-12))  # peak-to-peak 2 in [-1, 1]
    return {"frames": frames.shape[0], "psnr_db": float(psnr.mean()), "psnr_db_min": float(psnr.min()),
            "residual_real": float(residual(frames).mean()), "residual_reconstructed": float(residual(rec).mean())}


def train_codec(cfg: CodecTrainConfig) -> FrameCodec:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    codec = FrameCodec(AutoencoderConfig(size=cfg.size))
    opt = torch.optim.Adam(codec.parameters(), lr=cfg.lr)
    ema = {k: v.detach().clone() for k, v in codec.state_dict().items()}
    start = 0
    ck = latest_checkpoint(run)
    if ck is not None:
        ema, state = load_checkpoint(ck, codec, opt)
        if state.get("train_config") != _as_dict(cfg) | {"steps": state["train_config"].get("steps")}:
            raise ValueError(f"{run} was started with other options ({state.get('train_config')}); "
                             f"use another --out or the same options")
        start = state["step"]
        print(f"resuming {run} from {ck.name} (step {start})", file=sys.stderr)
    cut_log(run, start)
    frames = frames_of_clips(cfg.num_clips, cfg.seed, cfg.size)
    from tqdm.auto import tqdm

    codec.train()
    t_last, logged = time.perf_counter(), start
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="codec", unit="step",
                     disable=not cfg.progress, dynamic_ncols=True):
        done = step + 1
        lr = _lr(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        g = _generator(cfg, step)
        idx = torch.randint(0, frames.shape[0], (cfg.batch_size,), generator=g)
        x = frames[idx]
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5  # left-right flips: the lanes are symmetric
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = codec_loss(codec, x, cfg.latent_noise, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for k, v in codec.state_dict().items():
                ema[k].lerp_(v, 1 - decay) if v.is_floating_point() else ema[k].copy_(v)
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            append_row(run, {"step": done, "loss": float(loss.detach()), "lr": lr,
                             "sec_per_step": (now - t_last) / (done - logged)})
            t_last, logged = now, done
        if done % cfg.save_every == 0 or done == cfg.steps:
            save_checkpoint(run, done, codec, ema, opt, {"train_config": _as_dict(cfg)}, keep=2)
            plot_loss(run)
    final = FrameCodec(codec.config)
    final.load_state_dict(ema)
    final.eval()
    with torch.no_grad():  # latents * scaling_factor: unit std, as the diffusion model expects
        z = torch.cat([final.encoder(c) for c in frames[::7].split(256)])
    final.config.scaling_factor = float(1.0 / z.std())
    final.scaling_factor = final.config.scaling_factor
    final.save_pretrained(run / "final")
    held = frames_of_clips(64, HELD_OUT_SEED, cfg.size)
    report = reconstruction_report(final, held)
    atomic_write_bytes(run / "final" / "reconstruction.json", (json.dumps(report, indent=2) + "\n").encode())
    print(f"codec: held-out PSNR {report['psnr_db']:.1f} dB, residual {report['residual_reconstructed']:.4f} "
          f"(real {report['residual_real']:.4f}); weights in {run / 'final'}", file=sys.stderr)
    return final


def _as_dict(cfg: CodecTrainConfig) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "threads", "save_every",
                                                                            "log_every")}


def main(argv=None) -> int:
    import dataclasses

    ap = Parser(prog="python -m avfast.train.autoencoder", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(CodecTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, dest=f.name, type=type(f.default), default=f.default, help=f"(default {f.default!r})")
    args = ap.parse_args(argv)
    from .._cli import CliError, check_out_folder

    try:
        cfg = CodecTrainConfig(**vars(args))
        check_out_folder(cfg.out)  # a file or an unwritable place: one line before any work
        train_codec(cfg)
    except (ValueError, FileNotFoundError, CliError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from .._cli import program  # the shared entry: heap setting, exit status (avfast/_cli.py)

    program(main)
