"""`JointContrastiveLoss`: CMMD's joint contrastive diffusion loss (Eq. 6) as a drop-in module."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.contrastive_loss import DEFAULT_ETA, ContrastiveLossOutput, contrastive_loss


class JointContrastiveLoss(nn.Module):
    """(pred_v [G, B, ...], pred_a [G, B, ...], target_v [B, ...], target_a [B, ...], Kv) -> ContrastiveLossOutput.

    Group 0 of the predictions holds the positives, groups 1..Kv the video negatives and the rest
    the audio negatives (what `avfast.train.evaluate_groups` returns; pass its GroupedPredictions
    fields). `target_*` are the positives' velocity targets. Backpropagate `.loss`; `.positive`,
    `.negative_video`, `.negative_audio` are the components for logging. eta = 0 gives the plain
    joint v-prediction loss of the positives.
    """

    def __init__(self, eta: float = DEFAULT_ETA, weight_video: float = 1.0, weight_audio: float = 1.0,
                 reduction: str = "mean"):
        super().__init__()
        self.eta, self.weight_video, self.weight_audio, self.reduction = eta, weight_video, weight_audio, reduction

    def forward(self, pred_v: torch.Tensor, pred_a: torch.Tensor, target_v: torch.Tensor, target_a: torch.Tensor,
                num_video_negatives: int) -> ContrastiveLossOutput:
        return contrastive_loss(pred_v, pred_a, target_v, target_a, num_video_negatives, self.eta,
                                self.weight_video, self.weight_audio, self.reduction)

    def extra_repr(self) -> str:
        return (f"eta={self.eta}, weight_video={self.weight_video}, weight_audio={self.weight_audio}, "
                f"reduction={self.reduction!r}")
