"""Drop-in nn.Modules built on the avfast ops."""
from .easy_fusion import EasyFusion
from .contrastive_loss import JointContrastiveLoss

__all__ = ["EasyFusion"]
__all__ += ["JointContrastiveLoss"]
from .attention import TemporalSpatialAttention  # noqa: E402
__all__ += ["TemporalSpatialAttention"]
