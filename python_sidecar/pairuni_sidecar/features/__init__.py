"""Image features for PairUG pairing: backbones (ResNet50, torchvision/timm/HF models, `pixels`),
preprocessing, and batched L2-normalised embedding. Ops live in ``pairuni_sidecar.ops.features``."""

from .backbones import Backbone, BackboneSpec, WeightsMissing, load_backbone
from .embed import decode_images, embed_images

__all__ = ["Backbone", "BackboneSpec", "WeightsMissing", "load_backbone", "decode_images", "embed_images"]
