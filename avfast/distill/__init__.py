"""Few-step students: progressive distillation (Salimans & Ho 2022) of a v-prediction cosine-schedule teacher.

    from avfast.distill import DistillConfig, distill
    student = distill(DistillConfig(teacher="runs/teacher/final", out="runs/distill", steps=4, start_steps=16,
                                    stage_steps=(400, 400)))
    avfast.diffusion.sample(student)          # 4 DDIM steps: the student's config records them

or `python -m avfast.distill --teacher DIR --steps 4 --start-steps 16 --stage-steps 400 400`. Each stage
halves the step count (16 → 8 → 4 here); every stage's student is a plain `JointUNet` folder
(<out>/stages/<N>-steps/, the last also <out>/final/) whose config.json records `distilled_steps`,
`distilled_sampler` and `distilled_gamma`, so export and every runtime take it unchanged and samplers use
its step count when none is given (avfast.diffusion.distilled: the rules for other step counts).

The loop is avfast.train's (`train(cfg, model, objective)`): atomic checkpoints and exact resume, EMA,
progress bar, JSONL log and loss plot, DDP under torchrun. See config.py for the stage schedule, the tasks
served (joint, v2a/a2v with replacement and with the clean condition), γ and classifier-free guidance,
and progressive.py for the objective.
"""
from .config import DistillConfig, Stage
from .progressive import DistillBatch, ProgressiveDistillation, stage_folder, student_config
from .run import distill, teacher_folder

__all__ = ["DistillBatch", "DistillConfig", "ProgressiveDistillation", "Stage", "distill", "stage_folder",
           "student_config", "teacher_folder"]
