"""HPSv2 reward (human preference score v2/v2.1) from local files only; never downloads.

    make_reward("hps", {"checkpoint": "/ckpt/HPS_v2.1_compressed.pt",   # required
                        "model": "ViT-H-14",                            # open_clip architecture
                        "device": "cuda", "batch_size": 16, "precision": "amp"})

The HPS checkpoint holds the whole fine-tuned open_clip ViT-H-14 state dict, so the model is built with
``pretrained=None`` (no LAION download) and the checkpoint loaded on top. Score per image:
``cos(image_features, text_features)`` = ``diag(normalize(f_img) @ normalize(f_txt).T)`` with no logit scale
(typically 0.2-0.35), exactly as HPSv2's ``img_score``.

Images arrive as uint8 (B, H, W, 3). Preprocessing is open_clip's eval transform written with torch
ops (no torchvision): bicubic resize of the short side to 224 (antialiased), centre crop, OpenAI CLIP
mean/std normalisation.

open_clip is imported lazily: without it (or without the checkpoint) the factory raises a typed
error that names what is missing; install ``pairuni-sidecar[hps]`` on a GPU host.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import BadRequest, NotFound, OpFailed
from . import reward

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class RewardDependencyMissing(OpFailed):
    """A reward's Python package is not installed in the sidecar environment."""


class RewardCheckpointMissing(NotFound):
    """A reward's weight file does not exist."""


class RewardInputError(BadRequest):
    """Images/prompts a scorer cannot use (wrong dtype/shape, count mismatch)."""


def clip_preprocess(images: torch.Tensor, size: int = 224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, size, size): short side to ``size`` (bicubic), centre crop, normalise."""
    check_images(images)
    x = images.permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def check_images(images: torch.Tensor, prompts: list[str] | None = None) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        dtype = images.dtype if isinstance(images, torch.Tensor) else "-"
        raise RewardInputError(f"reward images must be uint8 (B, H, W, 3), got {dtype} {shape}")
    if prompts is not None and len(prompts) != images.shape[0]:
        raise RewardInputError(f"reward got {images.shape[0]} images but {len(prompts)} prompts")


class HPSScorer:
    """Cosine between CLIP image and text embeddings. Encoders are injectable (tests use tiny ones)."""

    def __init__(
        self,
        encode_image: Callable[[torch.Tensor], torch.Tensor],
        encode_text: Callable[[list[str]], torch.Tensor],
        *,
        image_size: int = 224,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        amp: bool = False,
    ) -> None:
        self.encode_image = encode_image
        self.encode_text = encode_text
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.amp = amp

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        check_images(images, prompts)
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = clip_preprocess(images[i : i + self.batch_size], self.image_size, self.mean, self.std).to(self.device)
            ctx = torch.autocast(
                self.device.type,
                dtype=torch.float16 if self.device.type == "cuda" else torch.bfloat16,
                enabled=self.amp,
            )
            with ctx:
                fi = self.encode_image(x).float()
                ft = self.encode_text(list(prompts[i : i + self.batch_size])).float()
            fi = F.normalize(fi, dim=-1)
            ft = F.normalize(ft, dim=-1)
            out.append((fi * ft).sum(-1).cpu())
        return torch.cat(out, 0).to(torch.float32)


def _load_open_clip_hps(cfg: dict) -> HPSScorer:
    ckpt = cfg.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        raise BadRequest(
            "reward 'hps' needs config.checkpoint: the local path of HPS_v2.1_compressed.pt "
            "(or HPS_v2_compressed.pt); nothing is downloaded"
        )
    ckpt_missing = not os.path.isfile(ckpt)
    try:
        import open_clip  # noqa: PLC0415 - optional heavy dependency
    except ImportError as e:
        extra = f"; also, the checkpoint {ckpt!r} does not exist" if ckpt_missing else ""
        raise RewardDependencyMissing(
            f"reward 'hps' needs the Python package open_clip_torch (import failed: {e}); install "
            f"pairuni-sidecar[hps] (open_clip_torch + a torchvision matching your torch) on a GPU host{extra}",
            detail={"package": "open_clip_torch", "checkpoint": ckpt, "checkpoint_exists": not ckpt_missing},
        ) from None
    if ckpt_missing:
        raise RewardCheckpointMissing(f"reward 'hps': checkpoint {ckpt!r} does not exist", detail={"checkpoint": ckpt})
    from ..dist import default_device

    device = torch.device(cfg.get("device") or default_device())
    arch = str(cfg.get("model", "ViT-H-14"))
    model, _, _ = open_clip.create_model_and_transforms(
        arch, pretrained=None, precision="amp", device=device, jit=False, force_quick_gelu=False
    )
    state = torch.load(ckpt, map_location=device, weights_only=False)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model.load_state_dict(state)
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return HPSScorer(
        lambda x: model.encode_image(x),
        lambda texts: model.encode_text(tokenizer(texts).to(device)),
        image_size=size,
        device=device,
        batch_size=int(cfg.get("batch_size", 16)),
        amp=str(cfg.get("precision", "amp")) == "amp" and device.type == "cuda",
    )


@reward("hps")
def make_hps(config: dict) -> HPSScorer:
    return _load_open_clip_hps(dict(config or {}))
