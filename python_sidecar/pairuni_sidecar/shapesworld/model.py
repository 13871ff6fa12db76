"""The tiny ShapesWorld Janus: config, image conversions, and the model-directory format.

A model directory holds ``config.json`` + ``model.safetensors`` (``save_pretrained``), the
tokenizer files, and ``pairuni_model.json``: prompt format, special ids and image geometry, so
consumers never guess how the model was trained.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..fsutil import atomic_dir
from .formats import PromptFormat
from .vocab import GRID, IMAGE_SIZE

MODEL_CARD = "pairuni_model.json"
MODEL_FORMAT = "pairuni-model/1"
NUM_IMAGE_TOKENS = GRID * GRID


@dataclass(frozen=True)
class TinySizes:
    """Sizes of the tiny model (the janus-rl.md §5 recipe, widened for a learnable task)."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 256
    vision_hidden: int = 64
    vision_layers: int = 2
    codebook: int = 64
    vq_channels: int = 32


def build_config(vocab_size: int, sizes: TinySizes = TinySizes(), special: dict | None = None):
    from transformers import JanusConfig

    special = special or {"pad": 0, "bos": 1, "eos": 2, "image": 3}
    patch = IMAGE_SIZE // GRID
    # Decoded side = num_patches * 2**(levels-1): levels = 1 + log2(patch) gives IMAGE_SIZE pixels.
    levels = 1 + (patch.bit_length() - 1)
    return JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=vocab_size,
            hidden_size=sizes.hidden,
            intermediate_size=sizes.intermediate,
            num_hidden_layers=sizes.layers,
            num_attention_heads=sizes.heads,
            num_key_value_heads=sizes.heads,
            max_position_embeddings=256,
            pad_token_id=special["pad"],
            bos_token_id=special["bos"],
            eos_token_id=special["eos"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            hidden_size=sizes.vision_hidden,
            num_hidden_layers=sizes.vision_layers,
            num_attention_heads=2,
            mlp_ratio=2.0,
            image_size=IMAGE_SIZE,
            patch_size=patch,
            projection_dim=sizes.hidden,
            depth=2,
            num_image_tokens=NUM_IMAGE_TOKENS,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=sizes.codebook,
            latent_channels=sizes.vq_channels,
            base_channels=sizes.vq_channels,
            channel_multiplier=[1] * levels,
            num_res_blocks=1,
            projection_dim=sizes.hidden,
            image_token_embed_dim=sizes.hidden,
            num_hidden_layers=2,
        ),
        image_token_id=special["image"],
        tie_word_embeddings=False,
    )


def to_pixels(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1] (Janus' mean 0.5 / std 0.5)."""
    return images_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(pixels_bhwc: torch.Tensor) -> torch.Tensor:
    """Decoder output (B, H, W, 3) in [-1, 1] -> uint8."""
    return ((pixels_bhwc.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def special_ids(tok) -> dict:
    ids = {
        "pad": tok.pad_token_id,
        "bos": tok.bos_token_id,
        "eos": tok.eos_token_id,
        "image": tok.convert_tokens_to_ids(tok.image_token),
        "boi": tok.convert_tokens_to_ids(tok.boi_token),
        "eoi": tok.convert_tokens_to_ids(tok.eoi_token),
    }
    return {k: int(v) for k, v in ids.items()}


def adapter_options(fmt: PromptFormat) -> dict:
    """The prompt layout of ``fmt`` in the Janus adapter's option names (adapters/README.md): callers
    pass ``fmt.und_user_text(question, choices)`` as the adapter's ``{question}``."""
    return {
        "und_template": "{system}" + fmt.und_template.replace("{text}", "{question}"),
        "gen_template": "{system}" + fmt.gen_template,
        "und_system_prompt": "",  # trained without system prompts: pinned, not the family default
        "gen_system_prompt": "",
    }


def model_card(tok, fmt: PromptFormat, extra: dict | None = None) -> dict:
    return {
        "format": MODEL_FORMAT,
        "family": "janus",
        "image_size": IMAGE_SIZE,
        "num_image_tokens": NUM_IMAGE_TOKENS,
        "image_normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "special_ids": special_ids(tok),
        "special_tokens": {
            "pad": tok.pad_token,
            "bos": tok.bos_token,
            "eos": tok.eos_token,
            "image": tok.image_token,
            "boi": tok.boi_token,
            "eoi": tok.eoi_token,
        },
        "bos_prepended_by_tokenizer": True,
        "prompt_format": fmt.to_json(),
        "adapter_options": adapter_options(fmt),
        "reward": "shapes",
        **(extra or {}),
    }


def save_model_dir(model, tok, fmt: PromptFormat, out: str | os.PathLike, extra: dict | None = None) -> None:
    """Write a complete model directory atomically (``fsutil.atomic_dir``)."""
    with atomic_dir(out) as d:
        tmp = Path(d)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / MODEL_CARD).write_text(json.dumps(model_card(tok, fmt, extra), indent=2) + "\n")


def load_model_dir(path: str | os.PathLike, dtype=torch.float32):
    """(model in eval mode, tokenizer, PromptFormat, card) from a model directory."""
    from transformers import AutoTokenizer, JanusForConditionalGeneration

    path = Path(path)
    card_path = path / MODEL_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path} not found: not a pairuni model directory")
    card = json.loads(card_path.read_text())
    model = JanusForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok, PromptFormat.from_json(card["prompt_format"]), card
