"""`EasyFusion`: the CMMD cross-modal fusion block as a drop-in module."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.easy_fusion import easy_fusion


class EasyFusion(nn.Module):
    """(v [B, Cv, F, H, W], a [B, Ca, T]) -> (v_fused [B, Cv+Ca, F, H, W], a_fused [B, Ca+Cv, T]).

    Parameter-free: the 1x1 projections that follow fusion in CMMD's blocks belong to the caller.
    """

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return easy_fusion(v, a)
