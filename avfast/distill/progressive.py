"""Progressive distillation (Salimans & Ho 2022) as an objective of avfast's training loop.

One step of stage s (student: N steps of the trailing grid, teacher: 2N): draw clean clips, one of the
student's steps k (global timesteps t = G_N[k] → t'' = G_N[k+1], the teacher's midpoint t' = G_2N[2k+1],
each mapped to per-modality local timesteps by γ as the sampler maps them), a task per sample and noise:

    x_t   = α_t x0 + σ_t ε                                    (each modality at its local timestep)
    x_t'  = DDIM_teacher(x_t, t → t'),  x_t'' = DDIM_teacher(x_t', t' → t'')   (two teacher calls)
    x̃0   = (x_t'' - (σ_t''/σ_t) x_t) / (α_t'' - (σ_t''/σ_t) α_t)   (the x0 whose one DDIM step t → t'' lands on x_t'')
    ṽ    = (α_t x_t - x̃0) / σ_t                              (the same target as a velocity)
    L     = Σ_modalities max(SNR_t, 1) ‖x̂0 - x̃0‖² = max(α_t², σ_t²) ‖v̂ - ṽ‖²   ("truncated SNR" weighting, x-space)

Conditional tasks step like the sampler: with replacement the condition is α c + σ ε_c at every (sub)step
with its fixed noise ε_c, with the clean condition it stays c at t = 0; only the generated modality is a
target. A modality whose local timestep does not move over the step (γ ≠ 1 near the ends) has no target.

Everything random comes from the loop's per-step generator, so the loop's exact resume, DDP split, EMA,
checkpoints, log and plot carry over unchanged. Between stages the student and its EMA restart from the
previous stage's EMA, which is also the new teacher (written to <run>/stages/<N>-steps/ when the stage
ends, so a run resumed in the middle of a stage reloads exactly that teacher).
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion.schedule import CosineSchedule, q_sample
from ..diffusion.timesteps import adjust_timesteps, timestep_grid
from ..models import JointUNet, ModelConfig
from ..models import from_pretrained, save_pretrained
from .._precision import autocast_dtype
from ..train.loop import Objective, step_generator
from .config import DistillConfig, Stage

GEN, REPLACE, CLEAN = 0, 1, 2  # a modality's role in a sample: generated, condition by replacement, clean condition


@dataclass
class DistillBatch:
    """Step inputs, batch-first: clean data, noise, each modality's role and its local timesteps at the
    student's step start (t0), the teacher's midpoint (t1) and the step's end (t2)."""

    v0: torch.Tensor
    a0: torch.Tensor
    eps_v: torch.Tensor
    eps_a: torch.Tensor
    role_v: torch.Tensor
    role_a: torch.Tensor
    tv: torch.Tensor   # [3, B]: t0, t1, t2 of video
    ta: torch.Tensor   # [3, B]

    def to(self, device: torch.device) -> "DistillBatch":
        if device.type == "cpu":
            return self
        return DistillBatch(*(x.to(device, non_blocking=True) for x in dataclasses.astuple(self)))

    def shard(self, rank: int, world: int) -> "DistillBatch":
        if world == 1:
            return self
        B = self.v0.shape[0]
        lo, hi = rank * B // world, (rank + 1) * B // world
        parts = dataclasses.astuple(self)
        return DistillBatch(*(x.narrow(1 if i >= 6 else 0, lo, hi - lo) for i, x in enumerate(parts)))


def student_config(teacher: ModelConfig, steps: int, sampler: str, gamma: float) -> ModelConfig:
    return teacher.replace(distilled_steps=steps, distilled_sampler=sampler, distilled_gamma=float(gamma))


def stage_folder(run: Path, stage: Stage) -> Path:
    return Path(run) / "stages" / f"{stage.student_steps}-steps"


class ProgressiveDistillation(Objective):
    """The loop's objective for `DistillConfig` (see the module docstring)."""

    desc = "distill"

    def __init__(self, dcfg: DistillConfig, teacher: JointUNet, autoencoder_dir: str | Path | None = None) -> None:
        self.dcfg, self.stages = dcfg, dcfg.stages()
        self.teacher0 = teacher
        self.autoencoder_dir = Path(autoencoder_dir) if autoencoder_dir else None
        self.teacher: JointUNet | None = None
        self.teacher_stage: int | None = None
        base = teacher.config
        self.configs = [student_config(base, st.student_steps, dcfg.sampler, dcfg.gamma) for st in self.stages]

    # ----------------------------------------------------------------------------- the schedule
    def stage_of(self, step: int) -> Stage:
        for st in self.stages:
            if step < st.stop:
                return st
        return self.stages[-1]

    def bind(self, cfg, model, data, schedule, device, run, rank, world) -> None:
        super().bind(cfg, model, data, schedule, device, run, rank, world)
        T = model.config.num_train_steps
        self.grids = {}  # student steps -> ([video t0 grid, video teacher grid], [audio ...]) as float tensors
        for st in self.stages:
            N = st.student_steps
            student = adjust_timesteps(timestep_grid(N, T, "trailing"), T, self.dcfg.gamma)
            teacher = adjust_timesteps(timestep_grid(2 * N, T, "trailing"), T, self.dcfg.gamma)
            self.grids[N] = [(torch.tensor(student[m], dtype=torch.float32), torch.tensor(teacher[m], dtype=torch.float32))
                             for m in range(2)]

    def learning_rate(self, cfg, step: int) -> float:
        st = self.stage_of(step)
        return cfg.lr * (1 - (step - st.start) / (st.stop - st.start))

    def ema_start(self, step: int) -> int:
        return self.stage_of(step).start

    def save_at(self, done: int) -> bool:
        return any(done == st.stop for st in self.stages)

    def state(self) -> dict:
        return {"distill_config": self.dcfg.to_dict()}

    def writes_final(self, done: int) -> bool:
        return done == self.stages[-1].stop  # a run stopped early (stop_at) has no final student yet

    # ----------------------------------------------------------------------------- stage switches
    def _frozen(self, model: JointUNet) -> JointUNet:
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        return teacher

    def begin_step(self, step, model, ema, opt) -> None:
        st = self.stage_of(step)
        if step == st.start and st.index > 0 and self.teacher_stage != st.index:
            # A new stage: the previous stage's EMA is both the new teacher and the student's start.
            with torch.no_grad():
                model.load_state_dict(ema)
            opt.state.clear()
            model.config = self.configs[st.index - 1]
            self.teacher, self.teacher_stage = self._frozen(model), st.index
        elif self.teacher_stage != st.index:  # this process's first step (a fresh run, or a resume mid-stage)
            if st.index == 0:
                self.teacher = self.teacher0.to(self.device).eval().requires_grad_(False)
            else:
                folder = stage_folder(self.run, self.stages[st.index - 1])
                if not (folder / "model.safetensors").is_file():
                    raise FileNotFoundError(f"resuming stage {st.index} needs its teacher, stage {st.index - 1}'s "
                                            f"student, in {folder}; it is missing (start afresh with --no-resume)")
                self.teacher = from_pretrained(folder, device=self.device).requires_grad_(False)
            self.teacher_stage = st.index
        model.config = self.configs[st.index]

    def end_step(self, done, model, ema) -> None:
        st = self.stage_of(done - 1)
        if done != st.stop or self.rank != 0:
            return
        folder = stage_folder(self.run, st)
        save_pretrained(model, folder, state_dict=ema)  # model.config is this stage's student's
        if self.autoencoder_dir is not None:
            shutil.copytree(self.autoencoder_dir, folder / "autoencoder", dirs_exist_ok=True)
        print(f"stage {st.index}: {2 * st.student_steps} -> {st.student_steps} steps done; student in {folder}",
              file=sys.stderr)

    # ----------------------------------------------------------------------------- a step
    def draw(self, step: int) -> DistillBatch:
        d, st = self.dcfg, self.stage_of(step)
        g = step_generator(self.cfg.seed, step)
        B = d.batch_size
        idx = torch.randint(0, len(self.data), (B,), generator=g)
        v0, a0 = self.data.batch(idx)
        k = torch.randint(0, st.student_steps, (B,), generator=g)
        u = torch.rand(B, generator=g)
        video_given = torch.rand(B, generator=g) < 0.5
        eps_v = torch.randn(v0.shape, generator=g, dtype=v0.dtype)
        eps_a = torch.randn(a0.shape, generator=g, dtype=a0.dtype)
        joint = u < 1 - d.replace_prob - d.clean_prob
        cond = torch.where(u < 1 - d.clean_prob, REPLACE, CLEAN)
        role_v = torch.where(~joint & video_given, cond, GEN)
        role_a = torch.where(~joint & ~video_given, cond, GEN)
        times = []
        for m, role in ((0, role_v), (1, role_a)):
            grid, fine = self.grids[st.student_steps][m]
            t = torch.stack([grid[k], fine[2 * k + 1], grid[k + 1]])
            times.append(torch.where(role == CLEAN, torch.zeros_like(t), t))
        return DistillBatch(v0, a0, eps_v, eps_a, role_v, role_a, times[0], times[1])

    def _coef(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.schedule.alpha_bar(t.cpu()).to(like.device).view(-1, *([1] * (like.dim() - 1)))
        return a.sqrt(), (1 - a).sqrt()  # float64

    def _ddim(self, x, v, t, t_next):
        a, s = self._coef(t, x)
        a2, s2 = self._coef(t_next, x)
        x0 = a * x - s * v
        eps = s * x + a * v
        return (a2 * x0 + s2 * eps).to(x.dtype)

    def loss(self, model, b: DistillBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dtype = autocast_dtype(self.cfg.precision)
        dev = b.v0.device.type

        def autocast():
            return torch.autocast(dev, dtype=dtype or torch.float32, enabled=dtype is not None)

        xs = [q_sample(b.v0, b.tv[0], b.eps_v, self.schedule), q_sample(b.a0, b.ta[0], b.eps_a, self.schedule)]
        data, noise, roles, times = (b.v0, b.a0), (b.eps_v, b.eps_a), (b.role_v, b.role_a), (b.tv, b.ta)
        with torch.no_grad():
            with autocast():
                p1 = self.teacher(xs[0], xs[1], b.tv[0], b.ta[0])
            mids = []
            for m in range(2):
                stepped = self._ddim(xs[m], p1[m].float(), times[m][0], times[m][1])
                given = q_sample(data[m], times[m][1], noise[m], self.schedule)  # replacement; clean: t = 0
                mids.append(torch.where(_bcast(roles[m] == GEN, stepped), stepped, given))
            with autocast():
                p2 = self.teacher(mids[0], mids[1], b.tv[1], b.ta[1])
            targets, weights = [], []
            for m in range(2):
                t0, t2 = times[m][0], times[m][2]
                live = (roles[m] == GEN) & (t2 < t0)
                end = self._ddim(mids[m], p2[m].float(), times[m][1], t2).double()
                a, s = self._coef(torch.where(live, t0, torch.ones_like(t0)), end)
                a2, s2 = self._coef(torch.where(live, t2, torch.zeros_like(t2)), end)
                x = xs[m].double()
                x0 = (end - (s2 / s) * x) / (a2 - (s2 / s) * a)
                targets.append(((a * x - x0) / s).float())
                w = torch.maximum(a, s).square().flatten()
                weights.append(torch.where(live.to(w.device), w, torch.zeros_like(w)).float())
        with autocast():
            pred = model(xs[0], xs[1], b.tv[0], b.ta[0])
        terms = [weights[m] * (pred[m].float() - targets[m]).square().flatten(1).mean(1) for m in range(2)]
        loss = (terms[0] + terms[1]).mean()
        return loss, {"video": terms[0].detach().mean(), "audio": terms[1].detach().mean()}


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(like.device).view(-1, *([1] * (like.dim() - 1)))
