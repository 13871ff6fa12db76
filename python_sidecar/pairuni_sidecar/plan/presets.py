"""The paper's models as named presets, their configs typed in from the published ones (no download).

Each preset names its family, the config the architecture is built from, the image-token geometry the
rollout and activation estimates use, and the published total parameter count the tests check the
meta-built model against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    #: family-specific config (see ``arch.build``); plain dicts as in the published config files
    config: dict[str, Any]
    #: published total parameter count and where it is stated
    published_params: float
    published_source: str
    #: tokens one generated image takes in the sequence (Janus: 24x24 VQ grid; DiMOO: 32x32 at 512 px)
    image_tokens: int


def _janus_pro(hidden: int, inter: int, layers: int, heads: int) -> dict:
    # deepseek-ai/Janus-Pro-{1B,7B} config.json (language_config: a DeepSeek-LLM Llama; vision_config:
    # SigLIP-L/16 at 384 px -> 576 tokens; aligner/gen_aligner MLPs of depth 2; gen_vision: VQ-16 with
    # 16384 codes of dim 8; gen_head to 16384), in the layout of transformers' Janus port
    # (transformers/models/janus/configuration_janus.py, whose defaults are the Janus-Pro vision/VQ
    # towers: SigLIP-L 1024 x 24 layers, VQ base 128 channels, multipliers 1,1,2,2,4).
    return {
        "text_config": {
            "model_type": "llama",
            "vocab_size": 102400,
            "hidden_size": hidden,
            "intermediate_size": inter,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "max_position_embeddings": 16384,
        },
        "vision_config": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 16,
            "mlp_ratio": 4.0,
            "projection_dim": hidden,
            "depth": 2,
            "num_image_tokens": 576,
        },
        "vq_config": {
            "embed_dim": 8,
            "num_embeddings": 16384,
            "projection_dim": hidden,
            "image_token_embed_dim": hidden,
            "num_patches": 24,
        },
        "tie_word_embeddings": False,
    }


PRESETS: dict[str, Preset] = {
    "Janus-Pro-1B": Preset(
        "Janus-Pro-1B",
        "janus",
        _janus_pro(hidden=2048, inter=5632, layers=24, heads=16),
        # huggingface.co/deepseek-ai/Janus-Pro-1B: safetensors metadata "2.09B params" (the "1B" is the LLM's class)
        published_params=2.09e9,
        published_source="huggingface.co/deepseek-ai/Janus-Pro-1B (2.09B params)",
        image_tokens=576,
    ),
    "Janus-Pro-7B": Preset(
        "Janus-Pro-7B",
        "janus",
        _janus_pro(hidden=4096, inter=11008, layers=30, heads=32),
        # huggingface.co/deepseek-ai/Janus-Pro-7B: safetensors metadata "7.42B params"
        published_params=7.42e9,
        published_source="huggingface.co/deepseek-ai/Janus-Pro-7B (7.42B params)",
        image_tokens=576,
    ),
    "Lumina-DiMOO": Preset(
        "Lumina-DiMOO",
        "dimoo",
        # Alpha-VLLM/Lumina-DiMOO: LLaDA-8B backbone (GSAI-ML/LLaDA-8B-Base config.json: d_model 4096,
        # 32 llama blocks, 32 heads (no GQA), mlp_hidden_size 12288, no biases, untied output) with the
        # vocabulary widened by 8192 aMUSEd-VQ codes from id 126356: 134548 (upstream's arithmetic,
        # /work/shared/notes/upstream.md). Counted analytically (arch.dimoo_shapes): the upstream
        # LLaDA code is not installed, so its module cannot be built on the meta device here.
        {
            "d_model": 4096,
            "n_layers": 32,
            "n_heads": 32,
            "n_kv_heads": 32,
            "mlp_hidden_size": 12288,
            "vocab_size": 134548,
            "weight_tying": False,
            "include_bias": False,
        },
        # The DiMOO model card and report state "8B"; the count above gives 8.08B
        published_params=8.0e9,
        published_source="Lumina-DiMOO technical report / model card (8B: LLaDA-8B + 8192 image codes)",
        image_tokens=1024,
    ),
    "BAGEL-7B-MoT": Preset(
        "BAGEL-7B-MoT",
        "bagel",
        {
            # ByteDance-Seed/BAGEL-7B-MoT llm_config.json: Qwen2.5-7B (hidden 3584, 28 layers, 28 heads,
            # 4 KV heads, intermediate 18944, vocab 152064); Bagel doubles every block (MoT gen expert).
            "llm": {
                "vocab_size": 152064,
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "tie_word_embeddings": False,
                "model_type": "qwen2",
            },
            # vit_config.json: SigLIP so400m/14 (hidden 1152, intermediate 4304, 27 layers, 16 heads);
            # the port drops the last layer when it builds the tower (vit_select_layer=-2).
            "vit": {
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
                "patch_size": 14,
                "image_size": 980,
                "num_channels": 3,
                "model_type": "siglip_vision_model",
            },
        },
        # The BAGEL paper (arXiv 2505.14683): "7B active parameters, 14B total"
        published_params=14.0e9,
        published_source="BAGEL paper arXiv 2505.14683 (14B total, 7B active)",
        # 512 px: FLUX VAE /8 then 2x2 latent patches -> 32x32 = 1024 latent tokens
        image_tokens=1024,
    ),
}


def preset(name: str) -> Preset:
    from .memory import PlanError

    p = PRESETS.get(name)
    if p is None:
        raise PlanError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}", field="preset")
    return p
