"""Training pieces: contrastive negatives, batched positive/negative evaluation."""
from .contrastive import GroupedPredictions, evaluate_groups, stack_groups
from .negatives import NegativeConfig, NegativePlan, Negatives, apply_plan, draw_plan, make_negatives

__all__ = ["GroupedPredictions", "NegativeConfig", "NegativePlan", "Negatives", "apply_plan", "draw_plan",
           "evaluate_groups", "make_negatives", "stack_groups"]
