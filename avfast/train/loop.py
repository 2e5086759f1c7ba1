"""The training loop: nCMMD (eta = 0) and CMMD (eta > 0) on the joint U-Net (seed 000 Alg. 1, §0.B.2).

One step: draw clips, timesteps (shared, or independent per modality: seed 002 Eq. 9) and noise; with
eta > 0 also the negatives (`make_negatives`) with their own noise, all groups in one batched denoiser
call (`evaluate_groups`) and the fused loss (`contrastive_loss`); Adam; EMA.

Reproducibility: everything random in step s comes from a generator seeded by (seed, s), and the whole
global batch is drawn on every rank, each rank keeping its slice. So a resumed run takes exactly the
steps an uninterrupted one would, and N processes under DDP compute what one process computes on the
same global batch (each rank still sees its own clips, noise and negatives).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.mel import HOP_LENGTH
from ..diffusion import CosineSchedule, joint_v_loss, noisy_batch, q_sample, sample_timesteps
from ..models import JointUNet, ModelConfig, create
from ..ops.contrastive_loss import contrastive_loss
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .contrastive import evaluate_groups
from .data import SyntheticAVDataset
from .negatives import METHODS, NegativeConfig, make_negatives

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Every option of `python -m avfast.train` (flags or a JSON/YAML file with these keys)."""

    out: str = "runs/tiny"                       # run folder: checkpoints/, metrics.jsonl, loss.png, final/
    preset: str = "tiny"                         # model preset (avfast.models.PRESETS)
    model: dict = field(default_factory=dict)    # ModelConfig overrides, e.g. {"fusion": "cmcpe"}
    steps: int = 2000
    batch_size: int = 8                          # global batch (split across DDP ranks)
    lr: float = 1e-4                             # Adam; x lr_decay every lr_decay_every steps, floor lr_min
    lr_decay: float = 0.8
    lr_decay_every: int = 80_000
    lr_min: float = 2e-5
    warmup: int = 0                              # linear warm-up steps
    grad_clip: float = 1.0                       # max global grad norm (0: off)
    eta: float = 5e-5                            # contrastive weight; 0 = nCMMD (no negatives)
    num_video_negatives: int = 1
    num_audio_negatives: int = 1
    negative_methods: tuple = METHODS
    independent_timesteps: bool = False          # seed 002 Eq. 9 (needed for timestep adjustment, gamma != 1)
    clean_prob: float = 0.0                      # chance a sample gets one modality clean (t = 0); eta must be 0
    weight_video: float = 1.0
    weight_audio: float = 1.0
    ema_decay: float = 0.999
    precision: str = "fp32"                      # fp32, bf16 or fp16 autocast
    gradient_checkpointing: bool = False
    data: str = "synthetic"                      # "synthetic" (the only source built in so far)
    num_clips: int = 2048                        # synthetic clips (deterministic by index)
    seed: int = 0
    save_every: int = 250
    keep: int = 2                                # checkpoints kept
    log_every: int = 10
    resume: bool = True                          # continue from <out>/checkpoints/latest if present
    threads: int = 0                             # torch.set_num_threads (0: leave as is)
    progress: bool = True

    def __post_init__(self) -> None:
        self.negative_methods = tuple(self.negative_methods)
        checks = [
            (self.steps >= 1, "steps must be >= 1"), (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"), (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.lr_decay_every >= 1, "lr_decay_every must be >= 1"), (self.lr_min >= 0, "lr_min must be >= 0"),
            (self.warmup >= 0, "warmup must be >= 0"), (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.eta >= 0, "eta must be >= 0"), (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (self.num_video_negatives >= 0 and self.num_audio_negatives >= 0, "negative counts must be >= 0"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (0 <= self.clean_prob <= 1, "clean_prob must be in [0, 1]"),
            (not (self.clean_prob > 0 and self.eta > 0), "clean_prob > 0 needs eta = 0 (the contrastive loss has "
                                                         "no clean-condition terms)"),
            (self.data == "synthetic", "data must be 'synthetic'"),
            (self.num_clips >= 1, "num_clips must be >= 1"), (self.save_every >= 1, "save_every must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.eta == 0 or self.num_video_negatives + self.num_audio_negatives > 0,
             "eta > 0 needs at least one negative"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {what}; got {self._values_for(what)}")

    def _values_for(self, what: str) -> str:
        names = [f.name for f in dataclasses.fields(self) if f.name in what]
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names) or "(see the values above)"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["negative_methods"] = list(self.negative_methods)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{source}: unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The paper's schedule: lr x decay^(step // every), not below lr_min; optional linear warm-up."""
    lr = max(cfg.lr * cfg.lr_decay ** (step // cfg.lr_decay_every), min(cfg.lr_min, cfg.lr))
    if cfg.warmup and step < cfg.warmup:
        lr *= (step + 1) / cfg.warmup
    return lr


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2 ** 63))


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class StepBatch:
    """What one step feeds the model: the global batch, drawn identically on every rank."""

    v_t: torch.Tensor
    a_t: torch.Tensor
    t_v: torch.Tensor
    t_a: torch.Tensor
    target_v: torch.Tensor
    target_a: torch.Tensor
    v_neg_t: torch.Tensor | None
    a_neg_t: torch.Tensor | None

    def shard(self, rank: int, world: int) -> "StepBatch":
        if world == 1:
            return self
        B = self.v_t.shape[0]
        lo, hi = rank * B // world, (rank + 1) * B // world
        cut = lambda x, d=0: None if x is None else x.narrow(d, lo, hi - lo)  # noqa: E731
        return StepBatch(cut(self.v_t), cut(self.a_t), cut(self.t_v), cut(self.t_a), cut(self.target_v),
                         cut(self.target_a), cut(self.v_neg_t, 1), cut(self.a_neg_t, 1))


def draw_batch(cfg: TrainConfig, mcfg: ModelConfig, data: SyntheticAVDataset, schedule: CosineSchedule,
               step: int) -> StepBatch:
    g = step_generator(cfg.seed, step)
    idx = torch.randint(0, len(data), (cfg.batch_size,), generator=g)
    v0, a0 = data.batch(idx)
    t_v, t_a = sample_timesteps(cfg.batch_size, schedule, g, cfg.independent_timesteps, cfg.clean_prob)
    nb = noisy_batch(v0, a0, schedule, t_v, t_a, generator=g)
    v_neg_t = a_neg_t = None
    if cfg.eta > 0:
        ncfg = NegativeConfig(methods=cfg.negative_methods, num_video=cfg.num_video_negatives,
                              num_audio=cfg.num_audio_negatives, video_rate=mcfg.fps,
                              audio_rate=mcfg.sample_rate / HOP_LENGTH, single_sample="shift")
        neg = make_negatives(v0, a0, ncfg, g)

        def noised(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # own noise, the positive's timestep
            K = x.shape[0]
            flat = x.flatten(0, 1)
            eps = torch.randn(flat.shape, generator=g, dtype=flat.dtype)
            return q_sample(flat, t.repeat(K), eps, schedule).unflatten(0, (K, -1))

        v_neg_t, a_neg_t = noised(neg.video, t_v), noised(neg.audio, t_a)
    return StepBatch(nb.v_t, nb.a_t, t_v, t_a, nb.target_v, nb.target_a, v_neg_t, a_neg_t)


def compute_loss(model, cfg: TrainConfig, b: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    dtype = PRECISIONS[cfg.precision]
    with torch.autocast(b.v_t.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        if cfg.eta > 0:
            g = evaluate_groups(model, b.v_t, b.a_t, b.t_v, b.t_a, b.v_neg_t, b.a_neg_t)
            out = contrastive_loss(g.video.float(), g.audio.float(), b.target_v, b.target_a,
                                   g.num_video_negatives, cfg.eta, cfg.weight_video, cfg.weight_audio)
            return out.loss, {"positive": out.positive, "negative_video": out.negative_video,
                              "negative_audio": out.negative_audio}
        pv, pa = model(b.v_t, b.a_t, b.t_v, b.t_a)
        loss = joint_v_loss(pv.float(), pa.float(), b.target_v, b.target_a, cfg.weight_video, cfg.weight_audio,
                            b.t_v, b.t_a)
        return loss, {}


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _plot(run: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(run.name)
    fig.tight_layout()
    tmp = run / ".loss.png.tmp"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, run / "loss.png")


def _log(run: Path, row: dict, resumed_from: int | None) -> None:
    path = run / "metrics.jsonl"
    if resumed_from is not None and path.exists():  # drop rows past the checkpoint we resumed from
        kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resumed_from]
        path.write_text("".join(ln + "\n" for ln in kept))
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def train(cfg: TrainConfig, model: JointUNet | None = None) -> JointUNet:
    """Runs (or resumes) a training run; returns the model with its EMA weights loaded."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = _distributed()
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig: batch_size ({cfg.batch_size}) must be divisible by the number of processes "
                         f"({world})")
    run = Path(cfg.out)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # initial weights
    model = model or create(cfg.preset, gradient_checkpointing=cfg.gradient_checkpointing, **cfg.model)
    mcfg = model.config
    schedule = CosineSchedule(mcfg.num_train_steps)
    data = SyntheticAVDataset(mcfg, cfg.num_clips, cfg.seed)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start, resumed_from = 0, None
    ck = latest_checkpoint(run) if cfg.resume else None
    if ck is not None:
        ema, state = load_checkpoint(ck, model, opt)
        start = resumed_from = state["step"]
        if rank == 0:
            print(f"resuming {run} from {ck.name} (step {start})", file=sys.stderr)
    if start >= cfg.steps and rank == 0:
        print(f"{run}: already at step {start} >= steps={cfg.steps}; nothing to train", file=sys.stderr)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    scaler = torch.amp.GradScaler(enabled=cfg.precision == "fp16")
    model.train()

    from tqdm.auto import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", unit="step",
               disable=not cfg.progress or rank != 0, dynamic_ncols=True)
    t_last = time.perf_counter()
    for step in bar:
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = draw_batch(cfg, mcfg, data, schedule, step).shard(rank, world)
        loss, parts = compute_loss(ddp, cfg, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"training loss is {value} at step {step}; stopping (the last good checkpoint "
                                f"in {run / 'checkpoints'} is kept)")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            current = model.state_dict()
            torch._foreach_lerp_([ema[k] for k in current if current[k].is_floating_point()],
                                 [current[k] for k in current if current[k].is_floating_point()], 1 - decay)
        done = step + 1
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            now = time.perf_counter()
            row = {"step": done, "loss": value, "lr": lr, "sec_per_step": (now - t_last) / cfg.log_every}
            row |= {k: float(v.detach().mean()) for k, v in parts.items()}
            t_last = now
            _log(run, row, resumed_from)
            resumed_from = None
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.1e}")
        if rank == 0 and (done % cfg.save_every == 0 or done == cfg.steps):
            save_checkpoint(run, done, model, ema, opt, {"train_config": cfg.to_dict(),
                                                         "model_config": mcfg.to_dict()}, cfg.keep)
            _plot(run)
    if rank == 0 and start < cfg.steps:
        final = model.__class__(mcfg)
        final.load_state_dict(ema)
        final.save_pretrained(run / "final")
    if world > 1:
        torch.distributed.barrier()
    model.load_state_dict(ema)
    return model.eval()
