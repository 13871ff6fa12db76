"""A family's architecture as the planner needs it: every parameter's name and shape, the FSDP units,
which train-module groups each parameter belongs to, the LoRA targets, and the transformer geometry.

Janus and Bagel are built as the real model classes on the meta device (shapes, no storage): Janus as
transformers' ``JanusForConditionalGeneration(JanusConfig)``, Bagel as nemo_automodel's
``BagelForUnifiedMultimodal`` configured as adapters/bagel.py configures it. DiMOO's LLaDA code is not
installed (the adapter imports it from a checkout at load time), so a DiMOO preset or real model dir is
counted analytically from its config, block by block as LLaDA's llama block lays it out; the project's
tiny DiMOO (``pairuni_tiny_mdm``) is built on the meta device.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import torch

from .presets import Preset

#: Linear layers LoRA adapts in each transformer block (the attention and MLP projections; the same
#: names Bagel's hook LoRA targets), by family naming
LORA_TARGETS = re.compile(
    r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|attn_out|ff_proj|ff_out|qkv|out|ff\.0|ff\.2)"
    r"(_moe_gen)?\.weight$"
)
#: the decoder-block index in a parameter name (one FSDP unit per block)
BLOCK = re.compile(r"^((?:.*?\.)?(?:layers|blocks))\.(\d+)\.")


@dataclass
class Stack:
    """The transformer geometry of one decoder stack (what a token costs in activations)."""

    layers: int
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    #: parallel expert copies a token may go through (Bagel's MoT: 2, each token uses one)
    experts: int = 1
    #: block layout: "llama" (RMSNorm, RoPE, SwiGLU: every real family) or "gelu" (the tiny DiMOO:
    #: LayerNorm, fused qkv, learned positions, GELU MLP)
    block: str = "llama"


@dataclass
class Arch:
    family: str
    #: (name, shape) of every parameter, in ``named_parameters()`` order
    params: list[tuple[str, tuple[int, ...]]]
    #: train-module groups of each parameter (a parameter trains when one of its groups is selected)
    groups: dict[str, frozenset[str]]
    #: groups this family accepts in ``train_modules``
    known_groups: tuple[str, ...]
    stack: Stack
    text_vocab: int
    #: width of the generation head (Janus image codes, DiMOO's logits are the whole vocabulary)
    gen_vocab: int
    image_tokens: int
    #: parameters that never train whatever is selected (fixed sin-cos tables)
    always_frozen: frozenset[str] = field(default_factory=frozenset)
    #: DiMOO: the image codes the sampler's softmax runs over (the last slice of the vocabulary)
    image_codes: int = 0
    #: Bagel: pixels per side of one latent token (VAE downsample x latent patch) and of one ViT patch,
    #: so the understanding image's SigLIP tokens follow from the generated image's latent tokens
    latent_stride: int = 0
    vit_patch: int = 0

    def unit_of(self, name: str) -> str:
        """FSDP unit of a parameter: its decoder block, else its top two name components (the
        adapters wrap each block and each directly-called submodule; dist.shard)."""
        m = BLOCK.match(name)
        return f"{m.group(1)}.{m.group(2)}" if m else ".".join(name.split(".")[:2])

    def lora_targets(self) -> list[str]:
        return [n for n, s in self.params if len(s) == 2 and BLOCK.match(n) and LORA_TARGETS.search(n)]


def _meta_params(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


# -- Janus ---------------------------------------------------------------------------------------------


def janus_from_config(config, image_tokens: int | None = None) -> Arch:
    from transformers import JanusConfig, JanusForConditionalGeneration

    from ..adapters.janus import MODULE_GROUPS

    cfg = config if isinstance(config, JanusConfig) else JanusConfig(**config)
    with torch.device("meta"):
        model = JanusForConditionalGeneration(cfg)
    params = _meta_params(model)
    groups = {n: frozenset(g for g, pre in MODULE_GROUPS.items() if n.startswith(pre)) for n, _ in params}
    t = cfg.text_config
    return Arch(
        "janus",
        params,
        groups,
        tuple(MODULE_GROUPS),
        Stack(
            t.num_hidden_layers,
            t.hidden_size,
            t.intermediate_size,
            t.num_attention_heads,
            t.num_key_value_heads or t.num_attention_heads,
        ),
        text_vocab=t.vocab_size,
        gen_vocab=cfg.vq_config.num_embeddings,
        image_tokens=image_tokens or cfg.vision_config.num_image_tokens,
    )


# -- DiMOO ---------------------------------------------------------------------------------------------


def dimoo_shapes(c: dict) -> list[tuple[str, tuple[int, ...]]]:
    """LLaDA's parameters from its config (modeling_llada.py, llama block): token embedding, per block
    two RMSNorm weights, q/k/v/attn_out and the SwiGLU ff_proj/up_proj/ff_out, the final norm and an
    untied output layer (biases when ``include_bias``)."""
    d, f, L = c["d_model"], c["mlp_hidden_size"], c["n_layers"]
    hd = d // c["n_heads"]
    kv = c.get("n_kv_heads") or c["n_heads"]
    vocab = c.get("embedding_size") or c["vocab_size"]
    bias = bool(c.get("include_bias", False))
    out: list[tuple[str, tuple[int, ...]]] = [("model.transformer.wte.weight", (vocab, d))]
    for i in range(L):
        p = f"model.transformer.blocks.{i}."
        lin = [
            ("q_proj", d, d),
            ("k_proj", kv * hd, d),
            ("v_proj", kv * hd, d),
            ("attn_out", d, d),
            ("ff_proj", f, d),
            ("up_proj", f, d),
            ("ff_out", d, f),
        ]
        out += [(p + "attn_norm.weight", (d,)), (p + "ff_norm.weight", (d,))]
        for name, o, i_ in lin:
            out.append((p + name + ".weight", (o, i_)))
            if bias:
                out.append((p + name + ".bias", (o,)))
    out.append(("model.transformer.ln_f.weight", (d,)))
    if not c.get("weight_tying", False):
        out.append(("model.transformer.ff_out.weight", (vocab, d)))
    return out


#: Lumina-DiMOO's image codes: aMUSEd-VQ, 8192 (upstream's config.py; /work/shared/notes/upstream.md)
DIMOO_IMAGE_CODES = 8192


def dimoo_from_config(c: dict, image_tokens: int) -> Arch:
    params = dimoo_shapes(c)
    # adapters/dimoo.py: ``language_model`` is the whole transformer; ``vision`` names nothing
    groups = {n: frozenset({"language_model"}) for n, _ in params}
    vocab = c.get("embedding_size") or c["vocab_size"]
    return Arch(
        "dimoo",
        params,
        groups,
        ("language_model", "vision"),
        Stack(c["n_layers"], c["d_model"], c["mlp_hidden_size"], c["n_heads"], c.get("n_kv_heads") or c["n_heads"]),
        text_vocab=vocab,
        gen_vocab=vocab,
        image_tokens=image_tokens,
        image_codes=DIMOO_IMAGE_CODES,
    )


def dimoo_tiny(c: dict) -> Arch:
    from ..diffusion.tiny_model import TinyMDM, TinyMDMConfig

    tc = TinyMDMConfig(**{k: c[k] for k in TinyMDMConfig.__dataclass_fields__ if k in c})
    with torch.device("meta"):
        model = TinyMDM(tc)
    params = _meta_params(model)
    grid = c.get("grid") or [0, 0]
    return Arch(
        "dimoo",
        params,
        {n: frozenset({"language_model"}) for n, _ in params},
        ("language_model", "vision"),
        Stack(tc.n_layers, tc.d_model, tc.d_ff, tc.n_heads, tc.n_heads, block="gelu"),
        text_vocab=tc.vocab_size,
        gen_vocab=tc.vocab_size,
        image_tokens=int(grid[0]) * int(grid[1]),
        image_codes=int((c.get("layout") or {}).get("codebook", tc.vocab_size)),
    )


# -- Bagel ---------------------------------------------------------------------------------------------


def bagel_from_config(llm: dict, vit: dict, geometry: dict | None, image_tokens: int) -> Arch:
    import nemo_automodel.components.models.bagel as bagel

    from ..adapters.bagel import _FROZEN_TABLES, _GEN_BRIDGES, DEFAULT_GEOMETRY, MODULE_GROUPS

    g = {**DEFAULT_GEOMETRY, **(geometry or {})}
    ae = {**DEFAULT_GEOMETRY["ae"], **g.get("ae", {})}
    # As adapters/bagel.py: MoT layers, qk-norm, untied head, no ViT RoPE (the port itself drops the
    # ViT's last layer: vit_select_layer=-2)
    cfg = bagel.BagelConfig(
        text_config=dict(llm, layer_module="Qwen2MoTDecoderLayer", qk_norm=True, tie_word_embeddings=False),
        vision_config=dict(vit),
        visual_und=True,
        visual_gen=True,
        vae_config={"z_channels": ae["z_channels"], "downsample": ae["downsample"]},
        latent_patch_size=g["latent_patch_size"],
        max_latent_size=g["max_latent_size"],
        vit_patch_size=g["vit_patch_size"],
        vit_max_num_patch_per_side=g["vit_max_num_patch_per_side"],
        connector_act=g["connector_act"],
        vit_rope=False,
    )
    with torch.device("meta"):
        model = bagel.BagelForUnifiedMultimodal(cfg)
    params = _meta_params(model)

    def group_of(n: str) -> frozenset[str]:  # the adapter's BagelAdapter._group_of
        if n.startswith(("model.vit_model.", "model.connector.")):
            return frozenset({"vit"})
        if n.startswith("model.language_model.") or n.startswith(_GEN_BRIDGES):
            gen = "_moe_gen" in n or n.startswith(_GEN_BRIDGES)
            return frozenset({"language_model", "gen_expert" if gen else "und_expert"})
        return frozenset()

    return Arch(
        "bagel",
        params,
        {n: group_of(n) for n, _ in params},
        MODULE_GROUPS,
        Stack(
            llm["num_hidden_layers"],
            llm["hidden_size"],
            llm["intermediate_size"],
            llm["num_attention_heads"],
            llm.get("num_key_value_heads") or llm["num_attention_heads"],
            experts=2,
        ),
        text_vocab=llm["vocab_size"],
        gen_vocab=0,
        image_tokens=image_tokens,
        always_frozen=frozenset(n for n, _ in params if n.startswith(_FROZEN_TABLES)),
        latent_stride=ae["downsample"] * g["latent_patch_size"],
        vit_patch=g["vit_patch_size"],
    )


# -- entry points --------------------------------------------------------------------------------------


def from_preset(p: Preset) -> Arch:
    if p.family == "janus":
        return janus_from_config(p.config, p.image_tokens)
    if p.family == "dimoo":
        return dimoo_from_config(p.config, p.image_tokens)
    return bagel_from_config(p.config["llm"], p.config["vit"], None, p.image_tokens)


def _json(path: str) -> dict:
    from .memory import PlanError

    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise PlanError(
            f"model_dir: no {os.path.basename(path)} in {os.path.dirname(path)!r}", field="model_dir"
        ) from None
    except (OSError, ValueError) as e:
        raise PlanError(f"model_dir: cannot read {path!r}: {e}", field="model_dir") from None


def from_model_dir(family: str, path: str, image_tokens: int | None) -> Arch:
    """The architecture of a model directory from its config files only (no weights are read)."""
    from .memory import PlanError

    if not os.path.isdir(path):
        raise PlanError(f"model_dir {path!r} is not a directory", field="model_dir")
    if family == "janus":
        from transformers import JanusConfig

        return janus_from_config(
            JanusConfig(
                **{
                    k: v
                    for k, v in _json(os.path.join(path, "config.json")).items()
                    if k not in ("architectures", "model_type", "transformers_version")
                }
            ),
            image_tokens,
        )
    if family == "dimoo":
        from ..diffusion.tiny_model import MODEL_TYPE

        c = _json(os.path.join(path, "config.json"))
        if c.get("model_type") == MODEL_TYPE:
            a = dimoo_tiny(c)
            a.image_tokens = image_tokens or a.image_tokens
            return a
        return dimoo_from_config(c, image_tokens or 1024)
    extra = os.path.join(path, "pairuni_bagel.json")
    return bagel_from_config(
        _json(os.path.join(path, "llm_config.json")),
        _json(os.path.join(path, "vit_config.json")),
        _json(extra) if os.path.isfile(extra) else None,
        image_tokens or 1024,
    )
