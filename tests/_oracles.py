"""fp64 oracles written independently of the ops' reference composites (which are backends too, so
they must not judge themselves). Differentiable: autograd through them gives the oracle gradients."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avfast.ops.easy_fusion import nearest_indices


def easy_fusion_oracle(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index gathers and an explicit sum instead of the reference's interpolate and mean."""
    v, a = v.double(), a.double()
    B, Cv, Fr, H, W = v.shape
    T = a.shape[2]
    step_of_frame = nearest_indices(T, Fr)  # video frame f shows audio step [f]
    frame_of_step = nearest_indices(Fr, T)  # audio step t shows the pooled frame [t]
    v_fused = torch.cat([v, a[:, :, step_of_frame, None, None].expand(B, -1, Fr, H, W)], dim=1)
    pooled = v.sum(dim=(3, 4)) / (H * W)
    return v_fused, torch.cat([a, pooled[:, :, frame_of_step]], dim=1)


def contrastive_loss_oracle(pred_v: torch.Tensor, pred_a: torch.Tensor, target_v: torch.Tensor,
                            target_a: torch.Tensor, num_video_negatives: int, eta: float, weight_v: float,
                            weight_a: float) -> torch.Tensor:
    """The [4, B] rows (loss, positive, negative_video, negative_audio) group by group with mse_loss,
    instead of the reference's batched squared sums and `combine`."""
    pred_v, pred_a, target_v, target_a = (t.double() for t in (pred_v, pred_a, target_v, target_a))

    def joint_error(g: int) -> torch.Tensor:  # [B]
        ev = F.mse_loss(pred_v[g], target_v, reduction="none").flatten(1).mean(1)
        ea = F.mse_loss(pred_a[g], target_a, reduction="none").flatten(1).mean(1)
        return weight_v * ev + weight_a * ea

    G, Kv = pred_v.shape[0], num_video_negatives
    positive = joint_error(0)
    zero = torch.zeros_like(positive)
    negative_video = sum((joint_error(g) for g in range(1, 1 + Kv)), zero) / max(Kv, 1)
    negative_audio = sum((joint_error(g) for g in range(1 + Kv, G)), zero) / max(G - 1 - Kv, 1)
    return torch.stack([positive - eta * (negative_video + negative_audio), positive, negative_video, negative_audio])


def flash_attention_lse(qkv: torch.Tensor, mode: str, head_dim: int, scale: float) -> torch.Tensor:
    """Not an oracle: PyTorch's own log-sum-exp (its fused CPU flash kernel, on attention_sdpa's 4-D
    layout) as [B, heads, G, N], the baseline for the attention kernels' lse."""
    from avfast.ops import attention as A

    C = qkv.shape[1] // 3
    q, k, v = (A.sdpa_problems(t, mode, head_dim) for t in qkv.split(C, dim=1))
    lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)[1]
    B, heads, G, N = A._lse_shape(qkv, mode, head_dim)
    return lse.reshape(B, G, heads, N).transpose(1, 2)
