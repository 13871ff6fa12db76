"""Image backbones for pairing features, all loaded from local files (no downloads, ever).

Kinds (``BackboneSpec.kind``):
  * ``resnet50``    — the paper's choice: our torch.nn ResNet-50 (resnet.py) with the head removed
                      (2048-d), loaded from a torchvision ``resnet50-*.pth`` / ``.safetensors``.
  * ``torchvision`` — any ``torchvision.models`` architecture by ``name`` + local weights; the
                      classifier is replaced by identity. Needs the torchvision package.
  * ``timm``        — any timm model by ``name`` (e.g. Perception Encoder ``vit_pe_core_*``) +
                      local weights, ``num_classes=0``. Needs the timm package.
  * ``hf``          — a local Hugging Face model directory (DINOv3, Perception Encoder, ...) via
                      ``transformers.AutoModel``; features = pooler output, else the CLS token.
  * ``pixels``      — weight-free: resize to ``size``×``size`` RGB, flatten, subtract the image's
                      mean (so cosine = pixel correlation; a shared background does not make every
                      pair look alike). Meant for small synthetic images and tests, not for photographs.
A model kind without a weights path raises ``WeightsMissing`` — random weights are never used.
"""
from __future__ import annotations

import abc

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..contract.generated import BackboneSpec as GeneratedBackboneSpec
from ..errors import BadRequest, NotFound, OpFailed
from . import preprocess as pp
from .resnet import ResNet50



class WeightsMissing(NotFound):
    """A model backbone was asked for without a usable local weights file."""


class MissingPackage(OpFailed):
    """An optional package (torchvision, timm) that this backbone needs is not installed."""


class BackboneSpec(GeneratedBackboneSpec):
    """The ``backbone`` record of the ``features.*`` ops (generated from src/contract/backbone.ts)."""

    @staticmethod
    def from_args(a: dict) -> "BackboneSpec":
        return BackboneSpec.from_wire(a, where="backbone")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadRequest(f"device {device!r} requested but CUDA is not available in this sidecar")
    return dev


_ID_CACHE: dict[tuple, str] = {}


def file_identity(path: str) -> str:
    """Cheap content identity of a weights file or model directory: sizes + SHA-256 of the first
    and last MiB of every file. Stable across copies, changes when the weights change."""
    files = []
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for n in sorted(names):
                files.append(os.path.join(root, n))
        files.sort()
    else:
        files = [path]
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        key = (f, st.st_size, st.st_mtime_ns)
        if key not in _ID_CACHE:
            fh = hashlib.sha256()
            with open(f, "rb") as fp:
                fh.update(fp.read(1 << 20))
                if st.st_size > 2 << 20:
                    fp.seek(-(1 << 20), os.SEEK_END)
                    fh.update(fp.read(1 << 20))
            _ID_CACHE[key] = f"{st.st_size}:{fh.hexdigest()}"
        h.update(os.path.relpath(f, path if os.path.isdir(path) else os.path.dirname(path)).encode())
        h.update(_ID_CACHE[key].encode())
    return h.hexdigest()[:16]


def _require_weights(spec: BackboneSpec) -> str:
    if not spec.weights:
        raise WeightsMissing(
            f"backbone {spec.kind}{'/' + spec.name if spec.name else ''} needs local weights (backbone.weights = path) and none "
            "was given; pairuni never falls back to random weights. For small synthetic images use the weight-free "
            "'pixels' embedder."
        )
    if not os.path.exists(spec.weights):
        raise WeightsMissing(f"backbone {spec.kind}: weights path {spec.weights!r} does not exist")
    return spec.weights


def _load_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return sd


class Backbone(abc.ABC):
    """A loaded embedder: ``prepare`` turns PIL images into a batch, ``forward`` into raw features."""

    kind: str
    key: str
    dim: int
    device: torch.device

    @abc.abstractmethod
    def prepare(self, ims: list[Image.Image]) -> torch.Tensor: ...

    @abc.abstractmethod
    def forward(self, batch: torch.Tensor) -> torch.Tensor: ...

    @torch.inference_mode()
    def embed(self, ims: list[Image.Image]) -> np.ndarray:
        """L2-normalised float32 features, one row per image."""
        x = self.prepare(ims).to(self.device)
        f = self.forward(x).float()
        f = f.reshape(f.shape[0], -1)
        f = torch.nn.functional.normalize(f, dim=1, eps=1e-12)
        return f.cpu().numpy().astype(np.float32, copy=False)


class PixelsBackbone(Backbone):
    def __init__(self, size: int) -> None:
        self.kind = "pixels"
        self.size = size
        self.dim = 3 * size * size
        self.key = f"pixels-v2-{size}"
        self.device = torch.device("cpu")

    def prepare(self, ims: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) for im in ims]) / 255.0
        return torch.from_numpy(arr.reshape(len(ims), -1))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch - batch.mean(dim=1, keepdim=True)


class TorchModelBackbone(Backbone):
    """Any torch module taking a normalised NCHW batch (ResNet50, torchvision, timm)."""

    def __init__(self, kind: str, key: str, model: torch.nn.Module, dim: int, device: torch.device, resize: int, crop: int, mean, std) -> None:
        self.kind, self.key, self.dim, self.device = kind, key, dim, device
        self.model = model.eval().to(device)
        self.resize, self.crop, self.mean, self.std = resize, crop, mean, std

    def prepare(self, ims: list[Image.Image]) -> torch.Tensor:
        return pp.to_tensor([pp.resize_center_crop(im, self.resize, self.crop) for im in ims], self.mean, self.std)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


class HFBackbone(Backbone):
    """A transformers vision model. Preprocessing is read from the directory's
    preprocessor_config.json and done with PIL (several HF image processors import torchvision)."""

    def __init__(self, key: str, model, prep: dict, device: torch.device) -> None:
        self.kind, self.key, self.device = "hf", key, device
        self.model = model.eval().to(device)
        self.prep = prep
        self.dim = -1  # known after the first batch

    def prepare(self, ims: list[Image.Image]) -> torch.Tensor:
        p = self.prep
        out = []
        for im in ims:
            if p["crop"] is not None:
                out.append(pp.resize_center_crop(im, p["resize"], p["crop"]))
            else:
                out.append(im.resize((p["width"], p["height"]), Image.BILINEAR))
        return pp.to_tensor(out, p["mean"], p["std"])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=batch)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = getattr(out, "image_embeds", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        self.dim = int(pooled.shape[-1])
        return pooled


def load_backbone(spec: BackboneSpec) -> Backbone:
    """The backbone registered under ``spec.kind`` (built-in kinds in ``pairuni_sidecar.plugins``)."""
    from ..registry import resolve

    return resolve("backbone", spec.kind)(spec)


def load_pixels(spec: BackboneSpec) -> Backbone:
    return PixelsBackbone(spec.size)


def load_resnet50(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    model = ResNet50()
    sd = _load_state_dict(weights)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise OpFailed(f"resnet50: {weights!r} is not a torchvision resnet50 state dict: {str(e).splitlines()[0]}") from None
    return TorchModelBackbone("resnet50", f"resnet50-{file_identity(weights)}", model, 2048, device, 256, 224, pp.IMAGENET_MEAN, pp.IMAGENET_STD)


def load_torchvision(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    try:
        import torchvision  # noqa: F401
        from torchvision import models
    except Exception as e:  # noqa: BLE001 - ImportError or a broken CUDA build
        raise MissingPackage(f"backbone kind 'torchvision' needs the torchvision package ({type(e).__name__}: {e}); install a torchvision build matching torch {torch.__version__}, or use kind 'resnet50'") from None
    if not spec.name:
        raise BadRequest("backbone kind 'torchvision' needs a model name, e.g. {name: 'resnet50'}")
    model = models.get_model(spec.name, weights=None)
    model.load_state_dict(_load_state_dict(weights), strict=True)
    dim = _strip_head(model)
    return TorchModelBackbone("torchvision", f"tv-{spec.name}-{file_identity(weights)}", model, dim, device, 256, 224, pp.IMAGENET_MEAN, pp.IMAGENET_STD)


def load_timm(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    try:
        import timm
    except Exception as e:  # noqa: BLE001
        raise MissingPackage(f"backbone kind 'timm' needs the timm package ({type(e).__name__}: {e}); pip install timm") from None
    if not spec.name:
        raise BadRequest("backbone kind 'timm' needs a model name, e.g. {name: 'vit_pe_core_base_patch16_224'}")
    model = timm.create_model(spec.name, pretrained=False, num_classes=0)
    model.load_state_dict(_load_state_dict(weights), strict=False)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    crop = int(cfg.get("input_size", (3, 224, 224))[-1])
    resize = int(round(crop / float(cfg.get("crop_pct", 0.875))))
    return TorchModelBackbone("timm", f"timm-{spec.name}-{file_identity(weights)}", model, int(model.num_features), device, resize, crop, cfg.get("mean", pp.IMAGENET_MEAN), cfg.get("std", pp.IMAGENET_STD))


def load_hf(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    if not os.path.isdir(weights):
        raise WeightsMissing(f"backbone kind 'hf' needs a local model directory (config.json + weights); {weights!r} is not a directory")
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(weights, local_files_only=True)
    except OSError as e:
        raise WeightsMissing(f"backbone kind 'hf': cannot load a model from {weights!r}: {e}") from None
    if hasattr(model, "vision_model") and not hasattr(model, "pooler"):
        model = model.vision_model  # CLIP/SigLIP/PE-style dual encoders: keep the image tower
    return HFBackbone(f"hf-{file_identity(weights)}", model, hf_preprocessing(weights, model), device)


def hf_preprocessing(model_dir: str, model) -> dict:
    """Resize/crop/normalise settings from preprocessor_config.json (ImageNet defaults otherwise)."""
    import json

    cfg = {}
    path = os.path.join(model_dir, "preprocessor_config.json")
    if os.path.exists(path):
        with open(path) as f:
            cfg = json.load(f)
    default = int(getattr(getattr(model, "config", None), "image_size", 224) or 224)
    size = cfg.get("size", {"height": default, "width": default})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    if isinstance(crop, dict):
        crop = crop.get("height")
    mean = cfg.get("image_mean", pp.IMAGENET_MEAN)
    std = cfg.get("image_std", pp.IMAGENET_STD)
    if "shortest_edge" in size:
        return {"resize": int(size["shortest_edge"]), "crop": int(crop or size["shortest_edge"]), "mean": mean, "std": std}
    if crop:
        return {"resize": int(min(size["height"], size["width"])), "crop": int(crop), "mean": mean, "std": std}
    return {"height": int(size["height"]), "width": int(size["width"]), "crop": None, "mean": mean, "std": std}


def _strip_head(model: torch.nn.Module) -> int:
    """Replace a torchvision classifier with identity and return the feature width."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        lin = head if isinstance(head, torch.nn.Linear) else next((m for m in head.modules() if isinstance(m, torch.nn.Linear)), None)
        if lin is not None:
            setattr(model, attr, torch.nn.Identity())
            return int(lin.in_features)
    raise OpFailed(f"cannot find a classifier head on {type(model).__name__} to remove")
