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
A model kind without a weights path raises ``WeightsMissing`` — random weights are never used. A
weights file that cannot be read raises ``WeightsUnreadable`` (naming the file), and one whose keys do
not cover the model raises ``WeightsMismatch`` (naming the missing / unexpected keys): loading never
leaves a layer at its random initialisation.
"""

from __future__ import annotations

import abc

import hashlib
import os


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


class WeightsUnreadable(OpFailed):
    """The weights file exists but is not a readable state dict (garbage, a pickled object, a tensor)."""


class WeightsMismatch(OpFailed):
    """The weights file does not fit the model: keys the model needs are missing (they would stay
    random), keys it does not have are present, or shapes differ."""

    def __init__(self, message: str, *, missing=(), unexpected=(), mismatched=()):
        super().__init__(
            message, detail={"missing": len(missing), "unexpected": len(unexpected), "mismatched": len(mismatched)}
        )
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


#: The ``backbone`` record of the ``features.*`` ops (generated from src/contract/backbone.ts).
BackboneSpec = GeneratedBackboneSpec


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        from ..dist import default_device

        return default_device()
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


def _load_state_dict(path: str, kind: str) -> dict:
    """A ``{name: tensor}`` state dict from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file (a
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is unwrapped); anything else raises
    ``WeightsUnreadable`` naming the file."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), SafetensorError, OSError...
        first = (str(e).strip().splitlines() or [""])[0]
        raise WeightsUnreadable(
            f"backbone {kind}: cannot read weights file {path!r} as a state dict ({type(e).__name__}: {first})"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not sd:
        what = "an empty dict" if isinstance(sd, dict) else type(sd).__name__
        raise WeightsUnreadable(
            f"backbone {kind}: weights file {path!r} holds {what}, not a state dict of named tensors"
        )
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsUnreadable(
            f"backbone {kind}: weights file {path!r} is not a state dict of named tensors ({len(bad)} entries are not, e.g. {_names(bad)})"
        )
    return sd


def _names(keys, n: int = 5) -> str:
    keys = sorted(map(str, keys))
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def mismatch_error(
    what: str, path: str, missing=(), unexpected=(), mismatched=(), model: str = "the model"
) -> WeightsMismatch:
    """A ``WeightsMismatch`` naming the first few keys of each kind and their counts."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) the model needs (they would stay random): {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) the model does not have: {_names(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} key(s) with the wrong shape: {_names(mismatched)}")
    return WeightsMismatch(
        f"{what}: weights {path!r} do not fit {model}; "
        + "; ".join(parts)
        + ". pairuni never embeds with partly random weights.",
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
    )


def load_checked(
    model: torch.nn.Module, sd: dict, what: str, path: str, allow_unexpected=lambda key: False, desc: str = "the model"
) -> None:
    """Load ``sd`` into ``model``; every model key must be present with its shape, and every file key
    must be used unless ``allow_unexpected(key)`` (e.g. a classifier head the model was built without).
    Raises ``WeightsMismatch`` with the key names otherwise."""
    own = model.state_dict()
    mismatched = [k for k, v in sd.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if mismatched:
        mm = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
        missing = [k for k in own if k not in sd]
        raise mismatch_error(what, path, missing=missing, mismatched=mm, model=desc)
    try:
        res = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise WeightsMismatch(f"{what}: weights {path!r} do not fit {desc}: {first}") from None
    unexpected = [k for k in res.unexpected_keys if not allow_unexpected(k)]
    if res.missing_keys or unexpected:
        raise mismatch_error(what, path, missing=res.missing_keys, unexpected=unexpected, model=desc)


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
        arr = (
            np.stack([np.asarray(im.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) for im in ims])
            / 255.0
        )
        return torch.from_numpy(arr.reshape(len(ims), -1))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return batch - batch.mean(dim=1, keepdim=True)


class TorchModelBackbone(Backbone):
    """Any torch module taking a normalised NCHW batch (ResNet50, torchvision, timm)."""

    def __init__(
        self,
        kind: str,
        key: str,
        model: torch.nn.Module,
        dim: int,
        device: torch.device,
        resize: int,
        crop: int,
        mean,
        std,
    ) -> None:
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
    load_checked(
        model,
        _load_state_dict(weights, "resnet50"),
        "resnet50",
        weights,
        desc="torchvision's resnet50 layout (not a torchvision resnet50 state dict)",
    )
    return TorchModelBackbone(
        "resnet50",
        f"resnet50-{file_identity(weights)}",
        model,
        2048,
        device,
        256,
        224,
        pp.IMAGENET_MEAN,
        pp.IMAGENET_STD,
    )


def load_torchvision(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    try:
        import torchvision  # noqa: F401
        from torchvision import models
    except Exception as e:  # noqa: BLE001 - ImportError or a broken CUDA build
        raise MissingPackage(
            f"backbone kind 'torchvision' needs the torchvision package ({type(e).__name__}: {e}); install a torchvision build matching torch {torch.__version__}, or use kind 'resnet50'"
        ) from None
    if not spec.name:
        raise BadRequest("backbone kind 'torchvision' needs a model name, e.g. {name: 'resnet50'}")
    model = models.get_model(spec.name, weights=None)
    load_checked(model, _load_state_dict(weights, f"torchvision/{spec.name}"), f"torchvision/{spec.name}", weights)
    dim = _strip_head(model)
    return TorchModelBackbone(
        "torchvision",
        f"tv-{spec.name}-{file_identity(weights)}",
        model,
        dim,
        device,
        256,
        224,
        pp.IMAGENET_MEAN,
        pp.IMAGENET_STD,
    )


def load_timm(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    try:
        import timm
    except Exception as e:  # noqa: BLE001
        raise MissingPackage(
            f"backbone kind 'timm' needs the timm package ({type(e).__name__}: {e}); pip install timm"
        ) from None
    if not spec.name:
        raise BadRequest("backbone kind 'timm' needs a model name, e.g. {name: 'vit_pe_core_base_patch16_224'}")
    model = timm.create_model(spec.name, pretrained=False, num_classes=0)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    # num_classes=0 drops the classifier: its keys in a full checkpoint are the only ones left unused.
    heads = _timm_head_prefixes(model, cfg)
    load_checked(
        model,
        _load_state_dict(weights, f"timm/{spec.name}"),
        f"timm/{spec.name}",
        weights,
        allow_unexpected=lambda k: any(k.startswith(h + ".") for h in heads),
    )
    crop = int(cfg.get("input_size", (3, 224, 224))[-1])
    resize = int(round(crop / float(cfg.get("crop_pct", 0.875))))
    return TorchModelBackbone(
        "timm",
        f"timm-{spec.name}-{file_identity(weights)}",
        model,
        int(model.num_features),
        device,
        resize,
        crop,
        cfg.get("mean", pp.IMAGENET_MEAN),
        cfg.get("std", pp.IMAGENET_STD),
    )


def _timm_head_prefixes(model: torch.nn.Module, cfg: dict) -> list[str]:
    """Module names of the classifier timm removed for ``num_classes=0``: the model's
    ``pretrained_cfg['classifier']`` (a name or a tuple, e.g. ``('head', 'head_dist')``), else the
    usual head names. A prefix that still holds parameters in the headless model is not a removed head."""
    c = cfg.get("classifier") if isinstance(cfg, dict) else None
    names = [c] if isinstance(c, str) else [x for x in (c or ()) if isinstance(x, str)]
    if not names:
        names = ["head", "fc", "classifier", "head.fc", "last_linear"]
    own = model.state_dict()
    return [h for h in names if not any(k.startswith(h + ".") for k in own)]


def load_hf(spec: BackboneSpec) -> Backbone:
    device = resolve_device(spec.device)
    weights = _require_weights(spec)
    if not os.path.isdir(weights):
        raise WeightsMissing(
            f"backbone kind 'hf' needs a local model directory (config.json + weights); {weights!r} is not a directory"
        )
    from transformers import AutoModel

    try:
        model, info = AutoModel.from_pretrained(weights, local_files_only=True, output_loading_info=True)
    except OSError as e:
        raise WeightsMissing(f"backbone kind 'hf': cannot load a model from {weights!r}: {e}") from None
    except RuntimeError as e:  # shape mismatches (ignore_mismatched_sizes=False)
        first = (str(e).strip().splitlines() or [""])[0]
        raise WeightsMismatch(f"hf: weights {weights!r} do not fit the model: {first}") from None
    tower = ""
    if hasattr(model, "vision_model") and not hasattr(model, "pooler"):
        model = model.vision_model  # CLIP/SigLIP/PE-style dual encoders: keep the image tower
        tower = "vision_model."
    check_hf_loading_info(info, weights, tower)
    return HFBackbone(f"hf-{file_identity(weights)}", model, hf_preprocessing(weights, model), device)


def check_hf_loading_info(info: dict, weights: str, tower: str = "") -> None:
    """``from_pretrained`` initialises weights missing from the checkpoint at random and only logs it:
    refuse instead. Keys of the part we embed with (``tower``: the image tower of a dual encoder) must
    all be loaded; unexpected keys (a task head the base model does not have) are ignored by
    transformers and harmless, so they are only reported alongside."""
    missing = [k for k in (info.get("missing_keys") or ()) if k.startswith(tower)]
    mismatched = [k if isinstance(k, str) else str(k[0]) for k in (info.get("mismatched_keys") or ())]
    if missing or mismatched:
        raise mismatch_error(
            "hf", weights, missing=missing, unexpected=sorted(info.get("unexpected_keys") or ()), mismatched=mismatched
        )


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
        return {
            "resize": int(size["shortest_edge"]),
            "crop": int(crop or size["shortest_edge"]),
            "mean": mean,
            "std": std,
        }
    if crop:
        return {"resize": int(min(size["height"], size["width"])), "crop": int(crop), "mean": mean, "std": std}
    return {"height": int(size["height"]), "width": int(size["width"]), "crop": None, "mean": mean, "std": std}


def _strip_head(model: torch.nn.Module) -> int:
    """Replace a torchvision classifier with identity and return the feature width."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        lin = (
            head
            if isinstance(head, torch.nn.Linear)
            else next((m for m in head.modules() if isinstance(m, torch.nn.Linear)), None)
        )
        if lin is not None:
            setattr(model, attr, torch.nn.Identity())
            return int(lin.in_features)
    raise OpFailed(f"cannot find a classifier head on {type(model).__name__} to remove")
