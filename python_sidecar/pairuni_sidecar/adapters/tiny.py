"""Build tiny random-init model directories that follow the adapter contracts (tests, examples, benches).

``build_tiny_janus(dir)`` writes a ~0.4 M-parameter ``JanusForConditionalGeneration`` (2-layer Llama,
hidden 64, 32 px images in 8 px patches = 16 image tokens, 64-code VQ, 16 px decoded images) plus a
character-level ``PreTrainedTokenizerFast`` with the special tokens the Janus adapter needs, through
the real ``save_pretrained`` path, so ``from_pretrained(dir)`` is exercised end to end.

    python -m pairuni_sidecar.adapters.tiny OUT_DIR [--seed 0]
"""

from __future__ import annotations

import json
import os

from ..fsutil import atomic_dir

SPECIALS = ["<pad>", "<s>", "</s>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"]
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


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
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[3:],
    )


#: The tiny models are prompted without system prompts (their tests were written so); the adapter reads the pin
#: from config.json where ``und_system_prompt`` / ``gen_system_prompt`` are unset.
TINY_SYSTEM_PROMPTS = {"und": "", "gen": ""}


def tiny_janus_config(
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 128,
    codebook: int = 64,
    max_positions: int = 512,
    system_prompts: dict | None = TINY_SYSTEM_PROMPTS,
):
    from transformers import JanusConfig

    n_img = (image_size // patch_size) ** 2
    return JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=max_positions,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            mlp_ratio=2.0,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=hidden,
            depth=2,
            num_image_tokens=n_img,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=codebook,
            latent_channels=32,
            base_channels=32,
            channel_multiplier=[1, 1, 1],
            num_res_blocks=1,
            projection_dim=hidden,
            image_token_embed_dim=hidden,
            num_hidden_layers=2,
        ),
        image_token_id=3,
        tie_word_embeddings=False,
        **({"pairuni_system_prompts": dict(system_prompts)} if system_prompts is not None else {}),
    )


def build_tiny_janus(out_dir: str, *, seed: int = 0, **config_overrides) -> str:
    """Write a tiny random-init Janus model + tokenizer to ``out_dir`` (atomically); return ``out_dir``."""
    import torch
    from transformers import JanusForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(tiny_janus_config(**config_overrides)).eval()
    tok = tiny_tokenizer()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
            json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, f)
    return out_dir


if __name__ == "__main__":
    from pairuni_sidecar.registry import tiny_main

    raise SystemExit(tiny_main("janus"))
