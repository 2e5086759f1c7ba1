"""The training loop: nCMMD (eta = 0) and CMMD (eta > 0) on the joint U-Net (CMMD Alg. 1, §0.B.2).

One step: draw clips, timesteps (shared, or independent per modality: Sony baseline Eq. 9) and noise; with
eta > 0 also the negatives (`make_negatives`) with their own noise, all groups in one batched denoiser
call (`evaluate_groups`) and the fused loss (`contrastive_loss`); Adam; EMA.

What a step computes is an `Objective` (the batch it draws, the loss on it, and hooks for the learning
rate, the EMA's start and work between steps); `DiffusionObjective` is the training objective above,
and `avfast.distill` supplies progressive distillation's. Everything else (optimizer, precision, EMA,
DDP, atomic checkpoints and exact resume, progress, the JSONL log and loss plot) is this one loop's.

Reproducibility: everything random in step s comes from a generator seeded by (seed, s), and the whole
global batch is drawn on every rank, each rank keeping its slice. So a resumed run takes exactly the
steps an uninterrupted one would, and N processes under DDP compute what one process computes on the
same global batch (each rank still sees its own clips, noise and negatives).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.mel import HOP_LENGTH
from ..diffusion import CosineSchedule, joint_v_loss, noisy_batch, q_sample, sample_timesteps
from ..models import JointUNet, ModelConfig, create
from ..models.weights import atomic_write_bytes
from .._precision import autocast_dtype
from ..ops.contrastive_loss import contrastive_loss
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .contrastive import evaluate_groups
from .data import SyntheticAVDataset
from .negatives import NegativeConfig, make_negatives
from .runlog import append_row, cut_log, plot_loss


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

    def to(self, device: torch.device) -> "StepBatch":
        if device.type == "cpu":
            return self
        return StepBatch(*(None if x is None else x.to(device, non_blocking=True)
                           for x in dataclasses.astuple(self)))

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
    dtype = autocast_dtype(cfg.precision)
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


class Objective:
    """What one training step computes; the loop does the rest (see the module docstring).

    draw(step) -> batch: the GLOBAL batch of step `step`, identical on every rank (all randomness from
        `step_generator(cfg.seed, step)`), with `.shard(rank, world)` and `.to(device)`.
    loss(model, batch) -> (loss, parts): the scalar to minimise on this rank's shard and named extra
        scalars to log.
    The hooks default to plain training: `learning_rate` is `learning_rate(cfg, step)`, the EMA starts
    at step 0, nothing happens between steps, and checkpoints come every `save_every` steps.
    """

    desc = "train"  # the progress bar's label

    def bind(self, cfg: TrainConfig, model: JointUNet, data, schedule: CosineSchedule, device: torch.device,
             run: Path, rank: int, world: int) -> None:
        """Called once before the first step (after a resume's checkpoint is loaded)."""
        self.cfg, self.data, self.schedule, self.device, self.run = cfg, data, schedule, device, run
        self.rank, self.world = rank, world

    def learning_rate(self, cfg: TrainConfig, step: int) -> float:
        return learning_rate(cfg, step)

    def ema_start(self, step: int) -> int:
        """The step at which the EMA that step `step` updates began (its warm-up counts from there)."""
        return 0

    def begin_step(self, step: int, model: JointUNet, ema: dict[str, torch.Tensor],
                   opt: torch.optim.Optimizer) -> None:
        """Before step `step`, on every rank (e.g. a new distillation stage resets the weights)."""

    def end_step(self, done: int, model: JointUNet, ema: dict[str, torch.Tensor]) -> None:
        """After `done` steps, before that step's checkpoint, on every rank."""

    def save_at(self, done: int) -> bool:
        """Whether to checkpoint after `done` steps besides every `save_every` and the last step."""
        return False

    def state(self) -> dict:
        """Extra JSON-able entries for each checkpoint's state.json."""
        return {}

    def writes_final(self, done: int) -> bool:
        """Whether a run that ends after `done` steps writes <run>/final/ (a run stopped early may not)."""
        return True

    def draw(self, step: int):
        """Step `step`'s whole global batch (every rank draws it and keeps its shard). Each objective supplies it."""
        raise NotImplementedError(f"{type(self).__name__} must define draw(step)")

    def loss(self, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, named parts) of `batch` under `model`. Each objective supplies it."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(model, batch)")


class DiffusionObjective(Objective):
    """nCMMD / CMMD training: `draw_batch` and `compute_loss`."""

    def bind(self, cfg, model, data, schedule, device, run, rank, world) -> None:
        super().bind(cfg, model, data, schedule, device, run, rank, world)
        self.mcfg = model.config

    def draw(self, step: int) -> StepBatch:
        return draw_batch(self.cfg, self.mcfg, self.data, self.schedule, step)

    def loss(self, model, batch: StepBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return compute_loss(model, self.cfg, batch)


def resolve_device(cfg: TrainConfig) -> torch.device:
    """auto: this process's GPU (cuda:LOCAL_RANK under torchrun) when CUDA is available, else the CPU."""
    if cfg.device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig: device={cfg.device!r} but torch sees no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group): gloo on CPU, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started = False
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world, started


def _load_autoencoder(cfg: TrainConfig, device: torch.device):
    if not cfg.autoencoder:
        return None
    from ..data.frame_codec import autoencoder_from_folder

    return autoencoder_from_folder(cfg.autoencoder, device)  # avfast's FrameCodec or an SD VAE folder


def make_dataset(cfg: TrainConfig, mcfg: ModelConfig, autoencoder=None, rank: int = 0, world: int = 1):
    """The synthetic set, or the clips of the folder `cfg.data` (prepared into the cache first)."""
    if cfg.data == "synthetic":
        return SyntheticAVDataset(mcfg, cfg.num_clips, cfg.seed, autoencoder=autoencoder, crop_prob=cfg.crop_prob,
                                  crop_content=cfg.crop_content)
    from .folder import FolderAVDataset

    progress = cfg.progress and rank == 0
    if world > 1:  # the ranks share the front-end work, then each reads the whole set from the cache
        FolderAVDataset(mcfg, cfg.data, cfg.cache_dir or None, autoencoder, progress, share=(rank, world))
        torch.distributed.barrier()
    data = FolderAVDataset(mcfg, cfg.data, cfg.cache_dir or None, autoencoder, progress=progress and world == 1)
    if rank == 0:
        print(f"data: {len(data)} clips from {cfg.data}; {data.skip_summary()}", file=sys.stderr)
    return data


def _write_data_report(run: Path, data) -> None:
    """<run>/data.json: which data the run read, and every skipped clip with its reason."""
    if not hasattr(data, "skipped"):
        kind = "synthetic" if isinstance(data, SyntheticAVDataset) else type(data).__name__
        report = {"data": kind, "clips": len(data)}
    else:
        report = {"data": str(data.root), "clips": len(data), "fingerprint": data.fingerprint(),
                  "skipped": [{"file": str(p), "reason": r} for p, r in data.skipped]}
    atomic_write_bytes(run / "data.json", (json.dumps(report, indent=2) + "\n").encode())


def _seed_step(cfg: TrainConfig, step: int, rank: int) -> None:
    """The global RNG (dropout) from (seed, step, rank), a stream apart from step_generator's: exact
    resume with dropout too, and each rank its own masks."""
    digest = hashlib.blake2b(f"{cfg.seed}:{step}:{rank}:global".encode(), digest_size=8).digest()
    torch.manual_seed(int.from_bytes(digest, "little") >> 1)


def _global_mean(values: torch.Tensor, world: int) -> torch.Tensor:
    """Mean of each rank's per-shard values (equal shards: the global batch's mean), on every rank."""
    if world > 1:
        values = values.clone()
        torch.distributed.all_reduce(values)
        values /= world
    return values


def _initial_model(cfg: TrainConfig) -> JointUNet:
    """The run's starting weights: random (seeded), or `cfg.init`'s, which must be the preset's model."""
    # A model trained with clean conditions says so: samplers then pass its conditions clean by default.
    mode = "clean" if cfg.clean_prob > 0 else "replace"
    mcfg = cfg.model_config().replace(gradient_checkpointing=cfg.gradient_checkpointing, condition_mode=mode)
    if not cfg.init:
        return create(mcfg)
    from ..models.config import MEASURED_FIELDS, SAMPLING_FIELDS
    from ..models.pretrained import load_model_folder

    model = load_model_folder(cfg.init)
    network = {name: getattr(mcfg, name) for name in SAMPLING_FIELDS} | {"gradient_checkpointing": False, "version": 1}
    if model.config.replace(**network) != mcfg.replace(**network):
        raise ValueError(f"TrainConfig: init={cfg.init!r} is a different model from preset={cfg.preset!r} with "
                         f"model={cfg.model!r}; pass the preset and overrides it was made with")
    # What was measured on the init weights does not hold for the new ones: the timestep adjustment γ chosen
    # for them (sampling_gamma), the long clips' window (long_window) and, for a distilled student, its step
    # grid (a diffusion fine-tune is no longer a student). The joint passes (joint_refine) are a way of
    # sampling, not a measured value: kept.
    fresh = ModelConfig()
    model.config = model.config.replace(
        gradient_checkpointing=cfg.gradient_checkpointing, condition_mode=mode,
        **{name: getattr(fresh, name) for name in MEASURED_FIELDS})
    return model


def train(cfg: TrainConfig, model: JointUNet | None = None, objective: Objective | None = None,
          data=None) -> JointUNet:
    """Runs (or resumes) a training run; returns the model with its EMA weights loaded.

    objective: what each step computes (default: `DiffusionObjective()`, the diffusion training loss).
    data: clips in model space (`len(data)`, `data.batch(indices)` -> (video, audio)) instead of the
        set `cfg.data` names (e.g. a distillation on its teacher's own samples).
    """
    objective = objective or DiffusionObjective()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg)
    rank, world, started_group = _distributed(device)
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig: batch_size ({cfg.batch_size}) must be divisible by the number of processes "
                         f"({world})")
    run = Path(cfg.out)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # initial weights
    if model is None:
        model = _initial_model(cfg)
    model.to(device)
    mcfg = model.config
    schedule = CosineSchedule(mcfg.num_train_steps)
    if data is None:
        data = make_dataset(cfg, mcfg, _load_autoencoder(cfg, device), rank, world)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    # fp16 needs loss scaling against underflowing gradients; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start = 0
    ck = latest_checkpoint(run) if cfg.resume else None
    if ck is not None:
        ema, state = load_checkpoint(ck, model, opt)
        ema = {k: v.to(device) for k, v in ema.items()}
        if "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])
        start = state["step"]
        if rank == 0:
            print(f"resuming {run} from {ck.name} (step {start})", file=sys.stderr)
            if state.get("data_fingerprint", _fingerprint(data)) != _fingerprint(data):
                print(f"warning: the data differs from the data {ck.name} was trained on; the resumed run "
                      f"will not repeat the uninterrupted one", file=sys.stderr)
    objective.bind(cfg, model, data, schedule, device, run, rank, world)
    if rank == 0:
        cut_log(run, start)
        _write_data_report(run, data)
        if start >= cfg.steps:
            print(f"{run}: already at step {start} >= steps={cfg.steps}; nothing to train", file=sys.stderr)
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    model.train()
    float_keys = [k for k, v in ema.items() if v.is_floating_point()]
    other_keys = [k for k in ema if k not in float_keys]  # integer buffers: EMA copies them as they are

    from tqdm.auto import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=objective.desc, unit="step",
               disable=not cfg.progress or rank != 0, dynamic_ncols=True)
    t_last, logged = time.perf_counter(), start
    for step in bar:
        done = step + 1  # steps completed once this one is; what logs and checkpoints count
        objective.begin_step(step, model, ema, opt)
        lr = objective.learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        _seed_step(cfg, step, rank)
        batch = objective.draw(step).shard(rank, world).to(device)
        loss, parts = objective.loss(ddp, batch)
        stats = _global_mean(torch.stack([loss.detach().float()] + [v.detach().float().mean() for v in
                                                                    parts.values()]), world).tolist()
        value = stats[0]
        if not math.isfinite(value):
            raise NonFiniteLoss(f"training loss is {value} at step {done}; stopping (the last good checkpoint, "
                                f"{_latest_name(run)}, is kept)")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        grad_norm = float(grad_norm)
        if not math.isfinite(grad_norm) and not scaler.is_enabled():  # fp16: the scaler skips the step
            raise NonFiniteLoss(f"gradient norm is {grad_norm} at step {done}; stopping (the last good "
                                f"checkpoint, {_latest_name(run)}, is kept)")
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():
            age = step - objective.ema_start(step)
            decay = min(cfg.ema_decay, (1 + age) / (10 + age))
            current = model.state_dict()
            torch._foreach_lerp_([ema[k] for k in float_keys], [current[k] for k in float_keys], 1 - decay)
            for k in other_keys:
                ema[k].copy_(current[k])
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            now = time.perf_counter()
            row = {"step": done, "loss": value, "lr": lr, "grad_norm": grad_norm,
                   "sec_per_step": (now - t_last) / (done - logged)}
            row |= dict(zip(parts, stats[1:]))
            t_last, logged = now, done
            append_row(run, row)
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.1e}")
        objective.end_step(done, model, ema)
        if rank == 0 and (done % cfg.save_every == 0 or done == cfg.steps or objective.save_at(done)):
            state = {"train_config": cfg.to_dict(), "model_config": model.config.to_dict(),
                     "data_fingerprint": _fingerprint(data)} | objective.state()
            if scaler.is_enabled():
                state["grad_scaler"] = scaler.state_dict()
            save_checkpoint(run, done, model, ema, opt, state, cfg.keep)
            plot_loss(run)
    if rank == 0 and start < cfg.steps and objective.writes_final(cfg.steps):
        final = model.__class__(model.config)  # the objective may have changed it (a distilled student's)
        final.load_state_dict(ema)
        final.save_pretrained(run / "final")
    if world > 1:
        torch.distributed.barrier()
        if started_group:
            torch.distributed.destroy_process_group()
    model.load_state_dict(ema)
    return model.eval()


def _fingerprint(data) -> str:
    if hasattr(data, "fingerprint"):
        return data.fingerprint()
    return f"{'synthetic' if isinstance(data, SyntheticAVDataset) else type(data).__name__}:{len(data)}"


def _latest_name(run: Path) -> str:
    try:
        ck = latest_checkpoint(run)
    except FileNotFoundError:
        ck = None
    return ck.name if ck is not None else "none saved yet"
