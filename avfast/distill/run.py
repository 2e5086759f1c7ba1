"""`distill(config)`: load the teacher, start the student from its weights, run the training loop with the
progressive-distillation objective, and leave every stage's student as a model folder."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import models
from ..models import JointUNet
from ..train.config import TrainConfig
from ..train.loop import train
from .config import DistillConfig
from .progressive import ProgressiveDistillation, student_config


def teacher_folder(spec: str) -> Path:
    """The folder of `spec`: "default" (the package's default model) or a model folder."""
    if spec == "default":
        folder = models.DEFAULT_DIR
        if not (folder / "model.safetensors").is_file():
            raise models.DefaultModelUnavailable(f"this avfast installation has no trained default model (expected "
                                                 f"{folder}/model.safetensors); pass --teacher DIR")
        return folder
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"teacher: {str(folder)!r} is not a model folder (expected config.json + "
                                f"model.safetensors)")
    return folder


def check_teacher(dcfg: DistillConfig, config: models.ModelConfig) -> None:
    """What the method cannot do with this teacher, as one ValueError."""
    if config.num_classes > 0:
        raise ValueError(f"teacher has num_classes = {config.num_classes}: guidance distillation needs class-labelled "
                         f"training data, which avfast's data sets do not have; this distiller handles unconditional "
                         f"teachers (num_classes = 0, like the default model, for which classifier-free guidance "
                         f"does not apply)")
    if config.distilled:
        if config.distilled_steps != dcfg.start_steps:
            raise ValueError(f"teacher is a student distilled for {config.distilled_steps} steps; distilling it "
                             f"further needs start_steps = {config.distilled_steps} (got {dcfg.start_steps})")
        if config.distilled_gamma != dcfg.gamma:
            raise ValueError(f"teacher was distilled for gamma = {config.distilled_gamma:g}; its students must keep "
                             f"it (got gamma = {dcfg.gamma:g})")
    if dcfg.start_steps > config.num_train_steps:
        raise ValueError(f"start_steps = {dcfg.start_steps} exceeds the teacher's num_train_steps "
                         f"({config.num_train_steps})")


def autoencoder_for(dcfg: DistillConfig, config: models.ModelConfig, folder: Path | None) -> str:
    """The autoencoder folder of a latent teacher: the option, else the teacher folder's autoencoder/."""
    if config.video_space != "latent":
        return dcfg.autoencoder
    if dcfg.autoencoder:
        return dcfg.autoencoder
    if folder is not None and (folder / "autoencoder").is_dir():
        return str(folder / "autoencoder")
    raise ValueError("the teacher works on autoencoder latents (video_space='latent') and its folder has no "
                     "autoencoder/; pass --autoencoder DIR (the frame codec it was trained with)")


def train_config(dcfg: DistillConfig, autoencoder: str) -> TrainConfig:
    """The loop's options for this distillation (preset/model are unused: the loop is given the student)."""
    steps = min(dcfg.stop_at, dcfg.total_steps) if dcfg.stop_at else dcfg.total_steps
    return TrainConfig(out=dcfg.out, steps=steps, batch_size=dcfg.batch_size, lr=dcfg.lr, lr_decay=1.0,
                       lr_min=0.0, warmup=0, grad_clip=dcfg.grad_clip, eta=0.0, ema_decay=dcfg.ema_decay,
                       precision=dcfg.precision, data=dcfg.data, autoencoder=autoencoder, cache_dir=dcfg.cache_dir,
                       num_clips=dcfg.num_clips, crop_prob=dcfg.crop_prob, crop_content=dcfg.crop_content, seed=dcfg.seed, save_every=dcfg.save_every, keep=dcfg.keep,
                       log_every=dcfg.log_every, resume=dcfg.resume, device=dcfg.device, threads=dcfg.threads,
                       progress=dcfg.progress)


def distill(dcfg: DistillConfig, teacher: JointUNet | None = None, data=None) -> JointUNet:
    """Runs (or resumes) a distillation; returns the last stage's student (EMA weights, config recording its
    step count, sampler and γ), also written to <out>/final/ and <out>/stages/<N>-steps/ for every stage.

    teacher: a model to distil instead of loading `dcfg.teacher` (tests; a latent one needs dcfg.autoencoder).
    data: clean clips in model space to noise (`len(data)`, `data.batch(indices)` -> (video, audio)) instead
        of the set `dcfg.data` names (e.g. the teacher's own samples).
    """
    folder = None
    if teacher is None:
        folder = teacher_folder(dcfg.teacher)
        config = models.ModelConfig.from_json(folder / "config.json")
        check_teacher(dcfg, config)
        teacher = models.from_pretrained(folder)
    check_teacher(dcfg, teacher.config)
    autoencoder = autoencoder_for(dcfg, teacher.config, folder)
    tcfg = train_config(dcfg, autoencoder)
    student = JointUNet(student_config(teacher.config, dcfg.stages()[0].student_steps, dcfg.sampler, dcfg.gamma))
    with torch.no_grad():
        student.load_state_dict(teacher.state_dict())
    objective = ProgressiveDistillation(dcfg, teacher, autoencoder if teacher.config.video_space == "latent" else None)
    model = train(tcfg, student, objective, data=data)
    final = Path(dcfg.out) / "final"
    if autoencoder and teacher.config.video_space == "latent" and final.is_dir() and os.environ.get("RANK", "0") == "0":
        import shutil

        shutil.copytree(autoencoder, final / "autoencoder", dirs_exist_ok=True)
    return model
