"""Training pieces: contrastive negatives, batched positive/negative evaluation, the training loop."""
from .contrastive import GroupedPredictions, evaluate_groups, stack_groups
from .negatives import NegativeConfig, NegativePlan, Negatives, apply_plan, draw_plan, make_negatives

__all__ = ["GroupedPredictions", "NegativeConfig", "NegativePlan", "Negatives", "apply_plan", "draw_plan",
           "evaluate_groups", "make_negatives", "stack_groups", "TrainConfig", "train", "SyntheticAVDataset",
           "FolderAVDataset", "DataError"]


def __getattr__(name: str):
    # The loop imports models/ and diffusion/; keep `import avfast.train` (negatives only) light.
    if name in ("TrainConfig", "train"):
        from . import loop

        return getattr(loop, name)
    if name in ("FolderAVDataset", "DataError"):
        from . import folder

        return getattr(folder, name)
    if name == "SyntheticAVDataset":
        from .data import SyntheticAVDataset

        return SyntheticAVDataset
    raise AttributeError(f"module 'avfast.train' has no attribute {name!r}")
