"""A tiny random-init Bagel directory in the BAGEL-7B-MoT layout (tests, examples, the demo).

``build_tiny_bagel(dir)`` writes ``llm_config.json`` (Qwen2 MoT, hidden 64, 2 layers, GQA 4/2),
``vit_config.json`` (SigLIP, hidden 32, 2 effective layers), ``ae.safetensors`` (FLUX-style VAE, ch 32,
z 16, 8x down), ``ema.safetensors`` (upstream key names), a character-level tokenizer with Bagel's
special tokens, and ``pairuni_bagel.json`` (the small geometry). ~0.3 M parameters; builds in < 1 s.

    python -m pairuni_sidecar.adapters.tiny_bagel OUT_DIR [--seed 0]
"""

from __future__ import annotations

import json
import os

from ..fsutil import atomic_dir

SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]

TINY_GEOMETRY = {
    "latent_patch_size": 2,
    "max_latent_size": 8,
    "vit_patch_size": 14,
    "vit_max_num_patch_per_side": 8,
    "connector_act": "gelu_pytorch_tanh",
    "ae": {
        "resolution": 32,
        "in_channels": 3,
        "downsample": 8,
        "ch": 32,
        "out_ch": 3,
        "ch_mult": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "z_channels": 16,
        "scale_factor": 0.3611,
        "shift_factor": 0.1159,
    },
}


def tiny_llm_config(*, hidden: int = 64, layers: int = 2) -> dict:
    return {
        "vocab_size": len(SPECIALS) + len(CHARS) + 1,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "model_type": "qwen2",
    }


def tiny_vit_config() -> dict:
    # 3 layers stored: Bagel drops the last one (vit_select_layer=-2), as for the real SigLIP config.
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "patch_size": 14,
        "image_size": 112,
        "num_channels": 3,
        "model_type": "siglip_vision_model",
    }


def tiny_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS + ["<unk>"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[3:],
    )


def build_tiny_bagel(out_dir: str, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> str:
    """Write a tiny random-init Bagel directory to ``out_dir`` (atomically); return ``out_dir``."""
    import torch
    import nemo_automodel.components.models.bagel as bagel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    llm, vit = tiny_llm_config(hidden=hidden, layers=layers), tiny_vit_config()
    g = TINY_GEOMETRY
    cfg = bagel.BagelConfig(
        text_config=dict(llm, layer_module="Qwen2MoTDecoderLayer", qk_norm=True),
        vision_config=dict(vit),
        visual_und=True,
        visual_gen=True,
        vae_config={"z_channels": g["ae"]["z_channels"], "downsample": g["ae"]["downsample"]},
        latent_patch_size=g["latent_patch_size"],
        max_latent_size=g["max_latent_size"],
        vit_max_num_patch_per_side=g["vit_max_num_patch_per_side"],
        connector_act=g["connector_act"],
    )
    model = bagel.BagelForUnifiedMultimodal(cfg)
    # The port zero-inits llm2vae (a fresh Stage-2 head); a pretrained checkpoint has a live one.
    torch.nn.init.normal_(model.model.llm2vae.weight, std=0.02)
    vae = bagel.AutoEncoder(bagel.AutoEncoderParams(**g["ae"]))
    tok = tiny_tokenizer()
    with atomic_dir(out_dir) as tmp:
        sd = {k.removeprefix("model."): v.contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(tmp, "ema.safetensors"))
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, os.path.join(tmp, "ae.safetensors"))
        for name, d in (("llm_config.json", llm), ("vit_config.json", vit), ("pairuni_bagel.json", g)):
            with open(os.path.join(tmp, name), "w") as f:
                json.dump(d, f, indent=1)
        tok.save_pretrained(tmp)
    return out_dir


if __name__ == "__main__":
    from pairuni_sidecar.registry import tiny_main

    raise SystemExit(tiny_main("bagel"))
