"""Drop-in nn.Modules built on the avfast ops."""
from .easy_fusion import EasyFusion

__all__ = ["EasyFusion"]
