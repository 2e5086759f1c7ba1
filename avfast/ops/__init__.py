"""avfast fused ops. Each op lives in its own file with its reference, backends, fake impl and autograd."""
from ._validate import AvfastInputError
from .easy_fusion import easy_fusion, easy_fusion_reference
from .contrastive_loss import ContrastiveLossOutput, contrastive_loss, contrastive_loss_reference

__all__ = ["AvfastInputError", "easy_fusion", "easy_fusion_reference"]
__all__ += ["ContrastiveLossOutput", "contrastive_loss", "contrastive_loss_reference"]
from .attention import attention_reference, temporal_spatial_attention  # noqa: E402
__all__ += ["attention_reference", "temporal_spatial_attention"]
