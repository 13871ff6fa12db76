"""Bagel (BAGEL-7B-MoT) adapter: supervised fine-tuning on PairUG pairs (PairUni Appendix E), sampling on
both sides (text answers from the und expert; images from the flow sampler, ``adapters/bagel_flow.py``)
and, with ``objective="pairgrpo"``, PairGRPO's log-probs (answer tokens; the SDE sampler's steps).

The model is NVIDIA NeMo AutoModel's maintained port, ``nemo_automodel.components.models.bagel``
(``BagelForUnifiedMultimodal``; pinned in python_sidecar/requirements-bagel.lock and installed with
``--no-deps`` by scripts/setup-python.mjs). It owns the Qwen2 mixture-of-transformers LLM (an
understanding and a ``*_moe_gen`` expert per block), the SigLIP-NaViT tower and connector, and the
flow-matching bridges; the FLUX VAE stays outside the module (frozen, encodes under ``no_grad``).

One PairUG pair becomes one packed sequence of two samples, as Bagel's ``PackedDataset.pack_sequence``
lays them out (see ``pack_pair``):

- und: ``[vit_image (full attention), question (causal, no loss), answer (causal, CE)]``;
- gen: ``[prompt (causal, no loss, dropped with p=text_cond_dropout), vae_image ("noise": MSE)]``.

Text items are ``<|im_start|> ids <|im_end|>``, CE labels ``ids + <|im_end|>`` at the positions of
``<|im_start|> ids``; an image is ``<|vision_start|> tokens <|vision_end|>`` with one RoPE position for
all its tokens; a "noise" image is invisible to every other token. The model draws the flow noise and
the loss image's timestep goes through ``sigmoid`` then Bagel's shift ``s t / (1 + (s - 1) t)``.

Loss: ``ce_weight * CE_mean + mse_weight * MSE_mean`` (CE over answer tokens, MSE over latent tokens
and channels, both token-means over the step's pairs, as Bagel's trainer reduces them).

Model directory (BAGEL-7B-MoT layout): ``llm_config.json``, ``vit_config.json``, ``ae.safetensors``,
``ema.safetensors`` and the Qwen2 tokenizer files; a missing one raises ``CheckpointNotFound`` naming
it. ``save_pretrained`` writes the same layout with upstream key names (``language_model.*``,
``vit_model.*``, ``connector.*``, ``vae2llm.*`` ...): ``ema.safetensors`` holds the EMA weights (the live
weights when EMA is off) so Bagel's own ``load_checkpoint_and_dispatch(ema.safetensors)`` loads it;
``model.safetensors`` holds the live weights (what training resumes from).
``pairuni_bagel.json`` (optional) carries geometry for non-7B configurations (tiny test models).

Parameter groups for ``train_modules``: ``language_model`` (both experts, embeddings, head and the
flow bridges), ``und_expert`` (the LLM's understanding copy, embeddings, head), ``gen_expert`` (the
``*_moe_gen`` copy and the flow bridges), ``vit`` (SigLIP tower + connector). Bagel's flags map to them:
``freeze_vit`` = leave out ``vit``; ``freeze_llm`` = leave out ``language_model``; ``freeze_und`` =
``["gen_expert"]`` (the und expert's Q/K/V are also detached, as upstream).

CPU: the port calls flash-attn (ViT, inference) and the CUDA-only EFFICIENT_ATTENTION SDPA backend in
training; without CUDA ``_cpu_attention`` swaps both for plain SDPA in fp32 (same maths, slower).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..contract.generated import BagelGenOptions, BagelLoadOptions, BagelUndOptions
from ..errors import BadRequest, NonFiniteError
from .base import (
    ANY_VALUE,
    AdapterConfigError,
    CapabilityError,
    CheckpointNotFound,
    GenItem,
    ImageReadError,
    LoadSpec,
    PolicyAdapter,
    RolloutBatch,
    SamplingCfg,
    SFTExample,
    UndItem,
    checkpoint_blocks,
    resolve_autocast,
    resolve_device,
    store_frozen,
)
from . import bagel_flow as flow
from .lora import LoRA, linear_modules

#: files a BAGEL-7B-MoT directory must hold
REQUIRED_FILES = ("llm_config.json", "vit_config.json", "ae.safetensors", "ema.safetensors")

#: Bagel's special tokens (data/data_utils.py::add_special_tokens)
BOS, EOS, BOI, EOI = "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"

#: BAGEL-7B-MoT geometry (app.py / TRAIN.md) unless pairuni_bagel.json overrides it
DEFAULT_GEOMETRY = {
    "latent_patch_size": 2,
    "max_latent_size": 64,
    "vit_patch_size": 14,
    "vit_max_num_patch_per_side": 70,
    "connector_act": "gelu_pytorch_tanh",
    "ae": {
        "resolution": 256,
        "in_channels": 3,
        "downsample": 8,
        "ch": 128,
        "out_ch": 3,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "z_channels": 16,
        "scale_factor": 0.3611,
        "shift_factor": 0.1159,
    },
}

MODULE_GROUPS = ("language_model", "und_expert", "gen_expert", "vit")
_GEN_BRIDGES = ("model.time_embedder.", "model.vae2llm.", "model.llm2vae.")
_FROZEN_TABLES = ("model.vit_pos_embed.", "model.latent_pos_embed.")  # fixed sin-cos tables
#: the layer lists FSDP2 shards one unit each (and the port calls through their forward)
_LAYER_LISTS = ("model.language_model.model.layers", "model.vit_model.vision_model.encoder.layers")
_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _require_bagel():
    try:
        import nemo_automodel.components.models.bagel as bagel
    except ImportError as e:
        raise AdapterConfigError(
            f"the bagel adapter needs nemo-automodel==0.7.0 ({e}); it is installed by `npm install` "
            "(scripts/setup-python.mjs, python_sidecar/requirements-bagel.lock)"
        ) from None
    return bagel


def _submodule(root: torch.nn.Module, path: str) -> torch.nn.ModuleList:
    m = root.get_submodule(path)
    if not isinstance(m, torch.nn.ModuleList):
        raise AdapterConfigError(
            f"bagel: {path} is a {type(m).__name__}, not the layer list this port is expected to have"
        )
    return m


# -- CPU attention -------------------------------------------------------------------------------


def _sdpa_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, causal=False, **_):
    """flash_attn_varlen_func's contract ((T, H, D) packed, per-segment attention) with plain SDPA."""
    out = []
    bounds = cu_seqlens_q.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        o = F.scaled_dot_product_attention(
            q[a:b].float().transpose(0, 1),
            k[a:b].float().transpose(0, 1),
            v[a:b].float().transpose(0, 1),
            is_causal=causal,
        )
        out.append(o.transpose(0, 1))
    return torch.cat(out, 0)


def _sdpa_fp32(q, k, v, mask):
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), mask.float())


_CPU_PATCHED = False


def _cpu_attention() -> None:
    """Route the port's CUDA-only attention calls to fp32 SDPA (once per process, CPU only)."""
    global _CPU_PATCHED
    if _CPU_PATCHED or torch.cuda.is_available():
        return
    from nemo_automodel.components.models.bagel import modeling_qwen2_packed as qp
    from nemo_automodel.components.models.bagel import modeling_siglip_navit as sn

    if not sn._HAS_FLASH_ATTN:
        sn._flash_attn_varlen = _sdpa_varlen
    qp.sdpa_kernel = lambda backends: contextlib.nullcontext()
    qp.scaled_dot_product_attention = _sdpa_fp32
    _CPU_PATCHED = True


# -- packing -------------------------------------------------------------------------------------


@dataclass
class Tokens:
    bos: int
    eos: int
    boi: int
    eoi: int


@dataclass
class Pack:
    """The model's packed-forward inputs for one pair, plus what the tests inspect."""

    sample_lens: list[int]
    split_lens: list[list[int]]
    attn_modes: list[list[str]]
    text_ids: list[int] = field(default_factory=list)
    text_indexes: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    vit_token_indexes: list[int] = field(default_factory=list)
    vit_position_ids: list[int] = field(default_factory=list)
    vit_tokens: torch.Tensor | None = None
    vae_token_indexes: list[int] = field(default_factory=list)
    latent_position_ids: list[int] = field(default_factory=list)
    latent_shape: tuple[int, int] = (0, 0)
    vae_image: torch.Tensor | None = None
    timesteps: list[float] = field(default_factory=list)
    mse_loss_indexes: list[int] = field(default_factory=list)
    ce_loss_indexes: list[int] = field(default_factory=list)
    label_ids: list[int] = field(default_factory=list)
    prompt_dropped: bool = False
    #: ViT tokens per und sample (a concatenation of several packs; one pack: its own count)
    vit_seqlens: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return sum(self.sample_lens)


def patchify(image: torch.Tensor, p: int) -> torch.Tensor:
    """(C, H, W) -> (H/p * W/p, p*p*C), row-major patches (Bagel's data/data_utils.py::patchify)."""
    c, h, w = image.shape
    x = image.reshape(c, h // p, p, w // p, p)
    return torch.einsum("chpwq->hwpqc", x).reshape(-1, p * p * c)


def grid_position_ids(h: int, w: int, max_per_side: int) -> list[int]:
    """Flattened 2D ids ``row * max_per_side + col`` of an h x w patch grid."""
    return [r * max_per_side + c for r in range(h) for c in range(w)]


def attention_mask(split_lens: list[int], attn_modes: list[str]) -> torch.Tensor:
    """One sample's additive mask (Bagel's ``prepare_attention_mask_per_sample``): causal splits see
    themselves causally and everything before; full/noise splits see themselves fully and everything
    before; nothing but a noise split itself sees a noise split."""
    n = sum(split_lens)
    allow = torch.zeros((n, n), dtype=torch.bool)
    s = 0
    for ln, mode in zip(split_lens, attn_modes):
        block = torch.ones((ln, ln), dtype=torch.bool)
        allow[s : s + ln, s : s + ln] = block.tril() if mode == "causal" else block
        allow[s : s + ln, :s] = True
        s += ln
    s = 0
    for ln, mode in zip(split_lens, attn_modes):
        if mode == "noise":
            allow[:, s : s + ln] = False
            allow[s : s + ln, s : s + ln] = True
        s += ln
    return torch.zeros((n, n)).masked_fill_(~allow, float("-inf"))


def pack_pair(
    tok: Tokens,
    *,
    und_image: torch.Tensor,
    question: list[int],
    answer: list[int],
    prompt: list[int],
    gen_image: torch.Tensor,
    vit_patch: int,
    vit_max_per_side: int,
    vae_downsample: int,
    latent_max_per_side: int,
    timestep: float,
    drop_prompt: bool,
) -> Pack:
    """One PairUG pair -> one packed sequence: the und sample, then the gen sample.

    ``und_image`` is the ViT input (3, H, W) in [-1, 1] (H, W multiples of ``vit_patch``); ``gen_image``
    the VAE input (3, H, W) in [-1, 1] (multiples of ``vae_downsample``); ``timestep`` the loss image's
    pre-sigmoid timestep (Bagel draws it from N(0, 1)).
    """
    pk = Pack(sample_lens=[], split_lens=[], attn_modes=[])
    curr = 0

    def text(ids: list[int], loss: bool, rope: int, splits: list[int], modes: list[str]) -> int:
        nonlocal curr
        shifted = [tok.bos] + ids
        pk.text_ids += shifted + [tok.eos]
        pk.text_indexes += list(range(curr, curr + len(shifted) + 1))
        if loss:
            pk.ce_loss_indexes += list(range(curr, curr + len(shifted)))
            pk.label_ids += ids + [tok.eos]
        n = len(shifted) + 1
        curr += n
        pk.position_ids += list(range(rope, rope + n))
        splits.append(n)
        modes.append("causal")
        return rope + n

    def image_brackets(n_tokens: int) -> int:
        """<|vision_start|> at curr, tokens after it, <|vision_end|>; returns the first token index."""
        nonlocal curr
        pk.text_ids.append(tok.boi)
        pk.text_indexes.append(curr)
        first = curr + 1
        pk.text_ids.append(tok.eoi)
        pk.text_indexes.append(first + n_tokens)
        curr = first + n_tokens + 1
        return first

    # und: vit image, question (no loss), answer (CE)
    splits, modes, start = [], [], curr
    vt = patchify(und_image, vit_patch)
    first = image_brackets(vt.shape[0])
    pk.vit_tokens = vt
    pk.vit_token_indexes = list(range(first, first + vt.shape[0]))
    pk.vit_position_ids = grid_position_ids(
        und_image.shape[1] // vit_patch, und_image.shape[2] // vit_patch, vit_max_per_side
    )
    pk.position_ids += [0] * (vt.shape[0] + 2)
    splits.append(vt.shape[0] + 2)
    modes.append("full")
    rope = text(question, False, 1, splits, modes)
    text(answer, True, rope, splits, modes)
    pk.sample_lens.append(curr - start)
    pk.split_lens.append(splits)
    pk.attn_modes.append(modes)

    # gen: prompt (no loss; dropped for CFG), vae image (noise: MSE)
    splits, modes, start, rope = [], [], curr, 0
    if drop_prompt:
        pk.prompt_dropped = True
    else:
        rope = text(prompt, False, 0, splits, modes)
    h, w = gen_image.shape[1] // vae_downsample, gen_image.shape[2] // vae_downsample
    first = image_brackets(h * w)
    pk.vae_image = gen_image
    pk.latent_shape = (h, w)
    pk.latent_position_ids = grid_position_ids(h, w, latent_max_per_side)
    pk.vae_token_indexes = list(range(first, first + h * w))
    pk.mse_loss_indexes = list(pk.vae_token_indexes)
    pk.timesteps = [timestep] * (h * w)
    pk.position_ids += [rope] * (h * w + 2)
    splits.append(h * w + 2)
    modes.append("noise")
    pk.sample_lens.append(curr - start)
    pk.split_lens.append(splits)
    pk.attn_modes.append(modes)
    return pk


def pack_gen(tok: Tokens, prompt: list[int] | None, h: int, w: int, latent_max_per_side: int) -> Pack:
    """One generation query as ``pack_pair`` lays out its gen sample: ``[prompt (causal)], [<|vision_start|>
    h*w latent tokens <|vision_end|>] ("noise")``, the image at the RoPE position after the prompt;
    ``prompt=None`` is the prompt-free (CFG) query, upstream's empty context."""
    pk = Pack(sample_lens=[], split_lens=[[]], attn_modes=[[]])
    rope = 0
    if prompt is not None:
        ids = [tok.bos] + list(prompt) + [tok.eos]
        pk.text_ids += ids
        pk.text_indexes += list(range(len(ids)))
        pk.position_ids += list(range(len(ids)))
        pk.split_lens[0].append(len(ids))
        pk.attn_modes[0].append("causal")
        rope = len(ids)
    else:
        pk.prompt_dropped = True
    first = rope + 1
    pk.text_ids += [tok.boi, tok.eoi]
    pk.text_indexes += [rope, first + h * w]
    pk.vae_token_indexes = list(range(first, first + h * w))
    pk.latent_position_ids = grid_position_ids(h, w, latent_max_per_side)
    pk.latent_shape = (h, w)
    pk.position_ids += [rope] * (h * w + 2)
    pk.split_lens[0].append(h * w + 2)
    pk.attn_modes[0].append("noise")
    pk.sample_lens.append(rope + h * w + 2)
    return pk


def pack_und(
    tok: Tokens,
    *,
    und_image: torch.Tensor,
    question: list[int],
    answer: list[int],
    vit_patch: int,
    vit_max_per_side: int,
) -> Pack:
    """The und sample of ``pack_pair`` alone: ``[vit image, question, <|im_start|> answer <|im_end|>]``;
    ``ce_loss_indexes`` are the positions whose logits predict ``answer + [<|im_end|>]``."""
    pk = pack_pair(
        tok,
        und_image=und_image,
        question=question,
        answer=answer,
        prompt=[],
        gen_image=torch.zeros(3, 0, 0),
        vit_patch=vit_patch,
        vit_max_per_side=vit_max_per_side,
        vae_downsample=1,
        latent_max_per_side=1,
        timestep=0.0,
        drop_prompt=True,
    )
    n = pk.sample_lens[0]
    keep = [i for i, ix in enumerate(pk.text_indexes) if ix < n]
    return Pack(
        sample_lens=[n],
        split_lens=pk.split_lens[:1],
        attn_modes=pk.attn_modes[:1],
        text_ids=[pk.text_ids[i] for i in keep],
        text_indexes=[pk.text_indexes[i] for i in keep],
        position_ids=pk.position_ids[:n],
        vit_token_indexes=pk.vit_token_indexes,
        vit_position_ids=pk.vit_position_ids,
        vit_tokens=pk.vit_tokens,
        ce_loss_indexes=pk.ce_loss_indexes,
        label_ids=pk.label_ids,
        vit_seqlens=[len(pk.vit_token_indexes)],
    )


def concat_packs(packs: list[Pack]) -> Pack:
    """Several packs as one packed sequence (indexes offset; each sample keeps its own mask and positions)."""
    out = Pack(sample_lens=[], split_lens=[], attn_modes=[])
    off, vit = 0, []
    for pk in packs:
        out.sample_lens += pk.sample_lens
        out.split_lens += pk.split_lens
        out.attn_modes += pk.attn_modes
        out.text_ids += pk.text_ids
        out.text_indexes += [i + off for i in pk.text_indexes]
        out.position_ids += pk.position_ids
        out.vit_token_indexes += [i + off for i in pk.vit_token_indexes]
        out.vit_position_ids += pk.vit_position_ids
        if pk.vit_token_indexes:
            vit.append(pk.vit_tokens)
            out.vit_seqlens += pk.vit_seqlens or [len(pk.vit_token_indexes)]
        out.vae_token_indexes += [i + off for i in pk.vae_token_indexes]
        out.latent_position_ids += pk.latent_position_ids
        out.ce_loss_indexes += [i + off for i in pk.ce_loss_indexes]
        out.label_ids += pk.label_ids
        off += pk.length
    out.vit_tokens = torch.cat(vit, 0) if vit else None
    return out


def shifted_timestep(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Bagel's training timestep: ``sigmoid`` (logit-normal for t ~ N(0, 1)) then ``s t / (1 + (s - 1) t)``."""
    t = torch.sigmoid(t)
    return shift * t / (1 + (shift - 1) * t)


# -- the adapter ---------------------------------------------------------------------------------


def check_bagel_dir(path: str, what: str = "model") -> None:
    if not isinstance(path, str) or not path:
        raise AdapterConfigError(f"{what}: a model directory path is required")
    if not os.path.isdir(path):
        raise CheckpointNotFound(f"{what}: Bagel model directory {path!r} does not exist")
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckpointNotFound(
            f"{what}: Bagel model directory {path!r} lacks {', '.join(missing)} "
            f"(a BAGEL-7B-MoT directory holds {', '.join(REQUIRED_FILES)})",
            detail={"path": path, "missing": missing},
        )


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointNotFound(f"cannot read {path!r}: {e}") from None


class BagelAdapter(PolicyAdapter):
    family = "ar+flow"
    #: sampling on both sides always; ``objective="pairgrpo"`` adds the log-probs PairGRPO needs
    capabilities = frozenset({"sft", "und_rollout", "gen_rollout", "cfg"})
    name = "bagel"
    # Text log-probs and the SDE steps' Gaussian log-probs are exact, so est_seeds change nothing (as Janus);
    # the flow sampler has no temperature (its rollout noise is gen.options.noise_level).
    honours = {
        "und.temperature": ANY_VALUE,
        "und.max_new_tokens": ANY_VALUE,
        "und.old_logp": ANY_VALUE,
        "und.est_seeds": ANY_VALUE,
        "gen.temperature": (1,),
        "gen.cfg_weight": ANY_VALUE,
        "gen.logp": ANY_VALUE,
        "gen.old_logp": ANY_VALUE,
        "gen.est_seeds": ANY_VALUE,
    }

    def __init__(self, spec: LoadSpec) -> None:
        bagel = _require_bagel()
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.spec = spec
        check_bagel_dir(spec.model_dir)
        self.source_dir = os.path.abspath(spec.model_dir)
        self.device = resolve_device(spec.device)
        self.amp = resolve_autocast(spec.autocast, self.device)
        o = BagelLoadOptions.from_wire(dict(spec.options or {}), where="bagel model.options")
        self.opts = o
        if o.objective == "pairgrpo":
            self.capabilities = type(self).capabilities | {"logprobs_und", "logprobs_gen"}
        if self.device.type == "cpu":
            _cpu_attention()

        d = self.source_dir
        self.llm_json = _read_json(os.path.join(d, "llm_config.json"))
        self.vit_json = _read_json(os.path.join(d, "vit_config.json"))
        geo = copy.deepcopy(DEFAULT_GEOMETRY)
        extra = os.path.join(d, "pairuni_bagel.json")
        if os.path.isfile(extra):
            for k, v in _read_json(extra).items():
                geo[k] = {**geo[k], **v} if isinstance(geo.get(k), dict) else v
        self.geometry = geo
        # Position tables bound the image sides: a larger side would index past them mid-rollout.
        for name, side, most, how in (
            (
                "vae_image_size",
                o.vae_image_size,
                geo["max_latent_size"] * geo["ae"]["downsample"] * geo["latent_patch_size"],
                f"max_latent_size {geo['max_latent_size']} latents per side x VAE downsample {geo['ae']['downsample']} x latent patch {geo['latent_patch_size']}",
            ),
            (
                "vit_image_size",
                o.vit_image_size,
                geo["vit_max_num_patch_per_side"] * geo["vit_patch_size"],
                f"vit_max_num_patch_per_side {geo['vit_max_num_patch_per_side']} x patch {geo['vit_patch_size']}",
            ),
        ):
            if side > most:
                raise AdapterConfigError(
                    f"bagel model.options.{name}={side} is beyond this model's largest image, {most} px ({how}); "
                    f"set model.options.{name} to at most {most}",
                    detail={"field": f"model.options.{name}"},
                )

        # As Bagel's app.py / training load: MoT layers, qk-norm, untied head; the ViT drops its last
        # layer (vit_select_layer=-2, applied by the port) and has no RoPE.
        llm = dict(
            self.llm_json,
            layer_module="Qwen2MoTDecoderLayer",
            qk_norm=True,
            tie_word_embeddings=False,
            freeze_und="und_expert" not in spec.train_modules and "language_model" not in spec.train_modules,
        )
        ae = geo["ae"]
        cfg = bagel.BagelConfig(
            text_config=llm,
            vision_config=dict(self.vit_json),
            visual_und=True,
            visual_gen=True,
            vae_config={"z_channels": ae["z_channels"], "downsample": ae["downsample"]},
            latent_patch_size=geo["latent_patch_size"],
            max_latent_size=geo["max_latent_size"],
            vit_patch_size=geo["vit_patch_size"],
            vit_max_num_patch_per_side=geo["vit_max_num_patch_per_side"],
            connector_act=geo["connector_act"],
            vit_rope=False,
            timestep_shift=o.timestep_shift,
        )
        self.model = bagel.BagelForUnifiedMultimodal(cfg)
        self.vae = bagel.AutoEncoder(bagel.AutoEncoderParams(**ae))
        from safetensors.torch import load_file

        self.vae.load_state_dict(load_file(os.path.join(d, "ae.safetensors")))
        self.vae.requires_grad_(False).eval().to(self.device)
        live = os.path.join(d, "model.safetensors")
        lora_file = os.path.join(d, "lora.safetensors")
        if o.lora_rank > 0 and o.ema_decay > 0:
            raise AdapterConfigError(
                "bagel: ema_decay needs full weights; use lora_rank 0 or ema_decay 0", detail={"field": "options"}
            )
        # A LoRA checkpoint read without LoRA: its merged weights are in ema.safetensors.
        use_live = os.path.isfile(live) and (o.lora_rank > 0 or not os.path.isfile(lora_file))
        self._load_weights(live if use_live else os.path.join(d, "ema.safetensors"))
        self.model.to(self.device)
        try:
            self.tok = AutoTokenizer.from_pretrained(d)
        except Exception as e:  # noqa: BLE001 - a typed error naming the directory
            raise CheckpointNotFound(f"model: no usable Qwen2 tokenizer in {d!r} ({type(e).__name__}: {e})") from None
        ids = {}
        for name in (BOS, EOS, BOI, EOI):
            i = self.tok.convert_tokens_to_ids(name)
            if i is None or i == self.tok.unk_token_id or not 0 <= i < cfg.text_config.vocab_size:
                raise AdapterConfigError(
                    f"model dir {d!r}: the tokenizer has no {name} token "
                    "(Bagel's data_utils.add_special_tokens adds it)"
                )
            ids[name] = int(i)
        self.tokens = Tokens(ids[BOS], ids[EOS], ids[BOI], ids[EOI])
        self._set_trainable(spec.train_modules)
        self.gradient_checkpointing = bool(spec.gradient_checkpointing)
        if self.gradient_checkpointing:
            checkpoint_blocks([m for path in _LAYER_LISTS for m in _submodule(self.model, path)])
        self.lora: LoRA | None = None
        if o.lora_rank > 0:
            self._add_lora(load_file(lora_file) if use_live and os.path.isfile(lora_file) else None)
        self.ema: dict[str, torch.Tensor] | None = None
        if o.ema_decay > 0:
            ema_path = os.path.join(d, "ema.safetensors")
            src = load_file(ema_path) if use_live else None  # own checkpoint: EMA kept apart
            self.ema = {}
            for n, p in self.trainable_parameters():
                hf = n.removeprefix("model.")
                self.ema[n] = (src[hf].float() if src is not None and hf in src else p.detach().float()).clone()
        self.model.train(False)

    # -- loading / saving ------------------------------------------------------------------------
    def _load_weights(self, path: str) -> None:
        from nemo_automodel.components.models.bagel.state_dict_adapter import BagelStateDictAdapter
        from safetensors.torch import load_file

        sd = BagelStateDictAdapter(stage="stage2").from_hf(load_file(path), stage="stage2", strict=False)
        # load_state_dict copies (and casts) into the fp32 parameters: no second fp32 copy of a 14B model
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith(_FROZEN_TABLES)]
        if missing:
            raise CheckpointNotFound(
                f"{path!r} lacks {len(missing)} weight(s) of this configuration "
                f"(e.g. {missing[:3]}): is it a BAGEL-7B-MoT checkpoint of the same size?",
                detail={"path": path, "missing": missing[:20]},
            )

    def _state_upstream(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Module-tree names -> BAGEL's checkpoint names (``model.`` root dropped)."""
        return {k.removeprefix("model."): v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    def save_pretrained(self, path: str, state_dict: dict | None = None, extra_state: dict | None = None) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        live = self._state_upstream(state_dict if state_dict is not None else self.model.state_dict())
        save_file(live, os.path.join(path, "model.safetensors"))
        extra = extra_state if extra_state is not None else self.extra_state()
        ema = dict(live)
        if self.ema is not None:
            ema.update(self._state_upstream({n: extra[f"ema:{n}"] for n in self.ema}))
        if self.lora:
            # Bagel's loader reads plain weights: ema.safetensors gets W + (alpha/r) B A; the factors
            # travel in lora.safetensors (model.safetensors keeps the base) so training resumes exactly.
            ema = self.lora.merged(ema, key=lambda n: n.removeprefix("model.") + ".weight")
            save_file(self.lora.file_state(), os.path.join(path, "lora.safetensors"))
        save_file(ema, os.path.join(path, "ema.safetensors"))
        for name in os.listdir(self.source_dir):
            src = os.path.join(self.source_dir, name)
            if name in ("ema.safetensors", "model.safetensors", "lora.safetensors") or not os.path.isfile(src):
                continue
            shutil.copyfile(src, os.path.join(path, name))  # configs, ae.safetensors, tokenizer files

    # -- parameters ------------------------------------------------------------------------------
    def _group_of(self, name: str) -> set[str]:
        if name.startswith(("model.vit_model.", "model.connector.")):
            return {"vit"}
        if name.startswith("model.language_model.") or name.startswith(_GEN_BRIDGES):
            gen = "_moe_gen" in name or name.startswith(_GEN_BRIDGES)
            return {"language_model", "gen_expert" if gen else "und_expert"}
        return set()

    def _set_trainable(self, modules) -> None:
        unknown = [m for m in modules if m not in MODULE_GROUPS]
        if unknown or not modules:
            raise AdapterConfigError(
                f"bagel: train_modules {list(modules)} must be a non-empty subset of {list(MODULE_GROUPS)}",
                detail={"field": "train_modules"},
            )
        want = set(modules)
        self.train_modules = tuple(modules)
        self._trainable: list[tuple[str, torch.nn.Parameter]] = []
        for n, p in self.model.named_parameters():
            on = bool(self._group_of(n) & want) and not n.startswith(_FROZEN_TABLES)
            if self.opts.lora_rank > 0 and n.startswith("model.language_model."):
                on = False  # LoRA factors train instead (_add_lora)
            p.requires_grad_(on)
            if on:
                self._trainable.append((n, p))
        # BAGEL-7B-MoT with the und expert frozen: 14 GB instead of 28 GB for that half under bf16
        store_frozen(self.model, self.amp)

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self._trainable)

    def _add_lora(self, saved: dict[str, torch.Tensor] | None) -> None:
        """LoRA (``adapters/lora.py``) on the LLM projections of the selected experts."""
        want = set(self.train_modules)
        targets = linear_modules(
            self.model,
            lambda n: (
                n.startswith("model.language_model.model.layers.")
                and n.rsplit(".", 1)[-1].split("_moe_gen")[0] in _LORA_TARGETS
                and bool(self._group_of(n + ".weight") & want)
            ),
        )
        if not targets:
            raise AdapterConfigError(
                f"bagel: lora_rank > 0 but train_modules {list(self.train_modules)} selects no LLM "
                "expert (language_model, und_expert or gen_expert)",
                detail={"field": "options"},
            )
        self.lora = LoRA(targets, rank=self.opts.lora_rank, alpha=self.opts.lora_alpha, device=self.device, saved=saved)
        self._trainable += self.lora.named_parameters()

    def extra_state(self) -> dict[str, torch.Tensor]:
        """LoRA factors (trainable parameters outside the module tree) and the EMA weights."""
        out = self.lora.state() if self.lora else {}
        out.update({f"ema:{n}": t for n, t in (self.ema or {}).items()})
        return out

    def after_step(self) -> None:
        """EMA of the trainable weights (Bagel: ``ema_decay`` 0.9999), after each optimizer step."""
        if self.ema is None:
            return
        d = self.opts.ema_decay
        with torch.no_grad():
            for n, p in self._trainable:
                self.ema[n].mul_(d).add_(p.detach().float(), alpha=1 - d)

    # -- scale-out -------------------------------------------------------------------------------
    def shard(self) -> None:
        """FSDP2 over every LLM decoder layer and ViT encoder layer (the port calls each through its
        forward), then the root (``dist.shard``; world > 1 only); the VAE stays outside, frozen and
        whole. The trainable list is rebuilt on the sharded parameters; LoRA factors stay replicated
        (``Policy`` averages their gradients) and the EMA is sharded like the weights it follows."""
        from .. import dist

        layers = [m for path in _LAYER_LISTS for m in _submodule(self.model, path)]
        dist.shard(layers, self.model, offload=self.spec.cpu_offload)
        lora = [(n, p) for n, p in self._trainable if n.startswith("lora:")]
        self._trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad] + lora
        if self.ema is not None:
            from torch.distributed.tensor import distribute_tensor

            params = dict(self._trainable)
            self.ema = {
                n: distribute_tensor(t, params[n].device_mesh, params[n].placements) for n, t in self.ema.items()
            }

    def combine_sft_losses(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.opts.ce_weight * losses["ce"] + self.opts.mse_weight * losses["mse"]

    def train_mode(self, on: bool) -> None:
        self.model.train(on)

    # -- data ------------------------------------------------------------------------------------
    def _image(self, path: str, size: int) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((size, size), Image.BICUBIC)
                arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
        except (OSError, ValueError) as e:
            raise ImageReadError(f"cannot read image {path!r}: {e}", detail={"path": path}) from None
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def _enc(self, s: str) -> list[int]:
        return list(self.tok.encode(s, add_special_tokens=False))

    def pair_examples(self, examples: list[SFTExample]) -> list[tuple[SFTExample, SFTExample]]:
        """The step's examples as (und, gen) pairs: a 1:1 ratio, pair i = the i-th und and i-th gen example."""
        und = [e for e in examples if e.side == "und"]
        gen = [e for e in examples if e.side == "gen"]
        bad = [e.side for e in examples if e.side not in ("und", "gen")]
        if bad:
            raise BadRequest(f"sft example side must be 'und' or 'gen', got {bad[0]!r}")
        if not und or len(und) != len(gen):
            raise BadRequest(
                f"bagel SFT packs one understanding and one generation sample per sequence: got "
                f"{len(und)} und and {len(gen)} gen examples (they must be equal and > 0)"
            )
        return list(zip(und, gen))

    def pack(self, und: SFTExample, gen: SFTExample, rng: random.Random, g: torch.Generator) -> Pack:
        geo, o = self.geometry, self.opts
        return pack_pair(
            self.tokens,
            und_image=self._image(und.image_path, o.vit_image_size),
            question=self._enc(und.text),
            answer=self._enc(und.target),
            prompt=self._enc(gen.text),
            gen_image=self._image(gen.image_path, o.vae_image_size),
            vit_patch=geo["vit_patch_size"],
            vit_max_per_side=geo["vit_max_num_patch_per_side"],
            vae_downsample=geo["ae"]["downsample"] * geo["latent_patch_size"],
            latent_max_per_side=geo["max_latent_size"],
            timestep=float(torch.randn((), generator=g)),
            drop_prompt=rng.random() < o.text_cond_dropout,
        )

    @contextlib.contextmanager
    def _packed_path(self):
        """The port runs packed (training-layout) forwards only in ``train()`` mode; none of its modules
        has dropout at Bagel's settings, so scoring uses the same path."""
        was = self.model.training
        self.model.train(True)
        try:
            yield
        finally:
            self.model.train(was)

    def forward_pack(self, pk: Pack) -> dict[str, torch.Tensor]:
        """Per-token ``ce`` (answer tokens) and ``mse`` (latent tokens x channels) of one packed pair."""
        dev = self.device
        T = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
        with torch.no_grad():
            latent = self.vae.encode(pk.vae_image[None].to(dev))
        masks = [attention_mask(s, m).to(dev) for s, m in zip(pk.split_lens, pk.attn_modes)]
        with self._packed_path(), self._autocast():
            out = self.model(
                sequence_length=pk.length,
                packed_text_ids=T(pk.text_ids),
                packed_text_indexes=T(pk.text_indexes),
                sample_lens=pk.sample_lens,
                packed_position_ids=T(pk.position_ids),
                nested_attention_masks=masks,
                packed_vit_tokens=pk.vit_tokens.to(dev),
                packed_vit_token_indexes=T(pk.vit_token_indexes),
                packed_vit_position_ids=T(pk.vit_position_ids),
                vit_token_seqlens=T([len(pk.vit_token_indexes)], torch.int),
                padded_latent=latent,
                patchified_vae_latent_shapes=[pk.latent_shape],
                packed_latent_position_ids=T(pk.latent_position_ids),
                packed_vae_token_indexes=T(pk.vae_token_indexes),
                packed_timesteps=T(pk.timesteps, torch.float32),
                mse_loss_indexes=T(pk.mse_loss_indexes),
                ce_loss_indexes=T(pk.ce_loss_indexes),
                packed_label_ids=T(pk.label_ids),
            )
        return {"ce": out["ce"].float(), "mse": out["mse"].float()}

    def sft_loss(self, examples: list[SFTExample], *, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Token-mean CE over all answer tokens and MSE over all latent tokens of the step's pairs
        (unweighted; ``combine_sft_losses`` applies ``ce_weight`` / ``mse_weight``).

        Data-parallel: every rank is given the step's pairs and runs pairs ``rank, rank + world, ...``.
        Each pair's randomness (prompt dropout, timestep, flow noise) derives from (step seed, pair
        index), and the means divide by the whole step's token counts (known from the texts and the
        image size), so the ranks' parts add up to the one-process loss; each rank returns world x its
        part because FSDP2 averages gradients over the ranks. A rank with fewer pairs than the busiest
        one runs a pair at weight 0, so every rank runs FSDP2's collectives the same number of times."""
        from .. import dist

        self.require("sft")
        pairs = self.pair_examples(examples)
        w = dist.current()
        # The step seed comes from the process RNG (saved in checkpoints) when none is given.
        base = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        n_lat = (
            self.opts.vae_image_size // (self.geometry["ae"]["downsample"] * self.geometry["latent_patch_size"])
        ) ** 2
        n_ce = sum(len(self._enc(u.target)) + 1 for u, _ in pairs)  # answer ids + <|im_end|>
        n_mse = n_lat * len(pairs)
        mine = list(range(w.rank, len(pairs), w.size))
        busiest = -(-len(pairs) // w.size)
        ce_sum = mse_sum = torch.zeros((), device=self.device)
        for j in range(busiest):
            i, weight = (mine[j], 1.0) if j < len(mine) else (0, 0.0)
            rng = random.Random(base * 1_000_003 + i)
            g = torch.Generator().manual_seed(rng.randrange(2**31))
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(rng.randrange(2**31))  # the model draws the flow noise from the process RNG
                out = self.forward_pack(self.pack(*pairs[i], rng, g))
            ce_sum = ce_sum + weight * out["ce"].sum()
            mse_sum = mse_sum + weight * out["mse"].mean(-1).sum()
        return {"ce": ce_sum * (w.size / n_ce), "mse": mse_sum * (w.size / n_mse)}

    # -- held-out understanding: option-letter scoring (no sampler) -------------------------------
    @torch.no_grad()
    def option_logprobs(self, image_path: str, question: str, options: list[str]) -> list[float]:
        """Sum log-prob of each candidate answer text after (image, question), teacher-forced: the
        und sample alone, exactly as packed for training (no generation sample)."""
        with self._packed_path():
            img = self._image(image_path, self.opts.vit_image_size)
            q = self._enc(question)
            geo = self.geometry
            res = []
            for opt in options:
                ans = self._enc(opt)
                pk = pack_und(
                    self.tokens,
                    und_image=img,
                    question=q,
                    answer=ans,
                    vit_patch=geo["vit_patch_size"],
                    vit_max_per_side=geo["vit_max_num_patch_per_side"],
                )
                dev = self.device
                T = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
                with self._autocast():
                    out = self.model(
                        sequence_length=pk.length,
                        packed_text_ids=T(pk.text_ids),
                        packed_text_indexes=T(pk.text_indexes),
                        sample_lens=pk.sample_lens,
                        packed_position_ids=T(pk.position_ids),
                        nested_attention_masks=[attention_mask(pk.split_lens[0], pk.attn_modes[0]).to(dev)],
                        packed_vit_tokens=pk.vit_tokens.to(dev),
                        packed_vit_token_indexes=T(pk.vit_token_indexes),
                        packed_vit_position_ids=T(pk.vit_position_ids),
                        vit_token_seqlens=T([len(pk.vit_token_indexes)], torch.int),
                        ce_loss_indexes=T(pk.ce_loss_indexes[: len(ans)]),
                        packed_label_ids=T(pk.label_ids[: len(ans)]),
                    )
                res.append(-float(out["ce"].float().sum()))
            return res

    # -- packed forwards (training layout, any mix of und and gen samples) ------------------------
    def _vit_embeds(self, pk: Pack) -> torch.Tensor:
        """The ViT tokens' LLM inputs: SigLIP tower (each image attends within itself), connector, 2D position."""
        mdl, dev = self.model.model, self.device
        vpos = torch.tensor(pk.vit_position_ids, dtype=torch.long, device=dev)
        lens = torch.tensor(pk.vit_seqlens or [len(pk.vit_token_indexes)], dtype=torch.int, device=dev)
        with self._autocast():
            f = mdl.vit_model(
                packed_pixel_values=pk.vit_tokens.to(dev),
                packed_flattened_position_ids=vpos,
                cu_seqlens=F.pad(torch.cumsum(lens, 0), (1, 0)).to(torch.int32),
                max_seqlen=int(lens.max()),
            )
            return mdl.connector(f) + mdl.vit_pos_embed(vpos)

    def _hidden(
        self,
        pk: Pack,
        latent: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        vit: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden states of a packed sequence, through the port's training-layout path (the one SFT
        trains; its cached inference path needs flash-attn and casts to bf16). ``latent`` (tokens, D) and
        ``t`` (tokens,) fill the sequence's latent positions as Bagel's flow input ``vae2llm(x_t) +
        time_embed(t) + pos``; ``vit``: the ViT tokens' inputs already computed (``_vit_embeds``)."""
        mdl = self.model.model
        lm, dev = mdl.language_model, self.device
        T = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
        with self._packed_path(), self._autocast():
            text_idx = T(pk.text_indexes)
            emb = lm.model.embed_tokens(T(pk.text_ids))
            seq = emb.new_zeros((pk.length, emb.shape[-1]))
            seq[text_idx] = emb
            und_idx, gen_idx = text_idx, None
            if pk.vit_token_indexes:
                vit_idx = T(pk.vit_token_indexes)
                seq[vit_idx] = (self._vit_embeds(pk) if vit is None else vit).to(seq.dtype)
                und_idx = torch.cat([text_idx, vit_idx])
            if latent is not None:
                gen_idx = T(pk.vae_token_indexes)
                z = mdl.vae2llm(latent) + mdl.time_embedder(t) + mdl.latent_pos_embed(T(pk.latent_position_ids))
                seq[gen_idx] = z.to(seq.dtype)
            masks = [attention_mask(s_, m).to(dev) for s_, m in zip(pk.split_lens, pk.attn_modes)]
            return lm(
                packed_sequence=seq,
                sample_lens=pk.sample_lens,
                attention_mask=masks,
                packed_position_ids=T(pk.position_ids),
                packed_und_token_indexes=und_idx,
                packed_gen_token_indexes=gen_idx,
            )

    # -- generation: the flow sampler ------------------------------------------------------------
    def _gen_options(self, options: dict) -> BagelGenOptions:
        g = BagelGenOptions.from_wire(dict(options or {}), where="bagel gen.options")
        lo, hi = g.cfg_interval
        if lo > hi:
            raise AdapterConfigError(
                f"bagel gen.options.cfg_interval must be [lo, hi] with lo <= hi, got {g.cfg_interval}",
                detail={"field": "gen.options.cfg_interval"},
            )
        return g

    def _latent_grid(self) -> tuple[int, int, int]:
        """(h, w, D) of the generated latent: side / (VAE downsample x latent patch), D = patch^2 x z."""
        geo = self.geometry
        p, down = geo["latent_patch_size"], geo["ae"]["downsample"] * geo["latent_patch_size"]
        side = self.opts.vae_image_size
        return side // down, side // down, p * p * geo["ae"]["z_channels"]

    def _gen_packs(self, prompts: list[list[int]]) -> tuple[Pack, Pack]:
        """The conditional queries of ``prompts`` and the same followed by as many prompt-free queries."""
        h, w, _ = self._latent_grid()
        mx = self.geometry["max_latent_size"]
        cond = [pack_gen(self.tokens, p, h, w, mx) for p in prompts]
        free = [pack_gen(self.tokens, None, h, w, mx)] * len(prompts)
        return concat_packs(cond), concat_packs(cond + free)

    def _velocity(self, pk: Pack, x: torch.Tensor, t: float) -> torch.Tensor:
        """The model's velocity (n, N, D) at latents x (n, N, D), all at time t, for the n queries of pk."""
        n, N, D = x.shape
        tt = torch.full((n * N,), float(t), dtype=torch.float32, device=self.device)
        h = self._hidden(pk, x.reshape(n * N, D), tt)
        with self._autocast():
            v = self.model.model.llm2vae(h[torch.tensor(pk.vae_token_indexes, device=self.device)])
        return v.float().reshape(n, N, D)

    def _guided(
        self, packs: tuple[Pack, Pack], x: torch.Tensor, t: float, w: float, g: BagelGenOptions
    ) -> torch.Tensor:
        """Text-guided velocity inside the guidance interval, the conditional one elsewhere (and at w = 1)."""
        if w == 1.0 or not flow.guidance_on(t, g.cfg_interval):
            return self._velocity(packs[0], x, t)
        v = self._velocity(packs[1], torch.cat([x, x], 0), t)
        B = x.shape[0]
        return flow.guided_velocity(v[:B], v[B:], w, g.cfg_renorm_min, g.cfg_renorm_type)

    def _flow_sample(
        self, prompts: list[list[int]], seeds: list[int], *, w: float, g: BagelGenOptions, noise_level: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (B, N, D) from noise by the Euler ODE (noise_level 0) or Flow-GRPO's SDE, one query per
        prompt, row j's noise drawn from its own generator seeded ``seeds[j]`` (a batch equals its rows
        run alone). Returns the trajectory (B, S + 1, N, D) and, for the SDE, the per-step log-probs (B, S)."""
        h, w_, D = self._latent_grid()
        N = h * w_
        gens = [torch.Generator().manual_seed(int(s_)) for s_ in seeds]
        draw = lambda: torch.stack([torch.randn(N, D, generator=q) for q in gens]).to(self.device)  # noqa: E731
        packs = self._gen_packs(prompts)
        grid = flow.time_grid(g.num_timesteps, g.timestep_shift)
        x = draw()
        traj, lps = [x], []
        for k in range(len(grid) - 1):
            t, dt = float(grid[k]), float(grid[k] - grid[k + 1])
            v = self._guided(packs, x, t, w, g)
            if noise_level > 0:
                sigma = flow.sde_sigma(grid, k, noise_level)
                mean = flow.sde_mean(x, v, t, dt, sigma)
                std = sigma * dt**0.5
                x = mean + std * draw()
                lps.append(flow.step_logp(x, mean, std))
            else:
                x = x - v * dt
            traj.append(x)
        return torch.stack(traj, 1), (torch.stack(lps, 1) if lps else None)

    @torch.no_grad()
    def decode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Latent tokens (B, N, D) -> uint8 images (B, H, W, 3) on the CPU, as upstream's ``decode_image``
        (unpatchify, VAE decode, ``(x / 2 + 0.5).clamp(0, 1) * 255`` truncated)."""
        h, w, D = self._latent_grid()
        p, c = self.geometry["latent_patch_size"], self.geometry["ae"]["z_channels"]
        z = torch.einsum("nhwpqc->nchpwq", x.reshape(-1, h, w, p, p, c)).reshape(-1, c, h * p, w * p)
        with self._autocast():
            img = self.vae.decode(z.to(self.device)).float()
        return ((img * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()

    @staticmethod
    def _row_seeds(seed: int, rows: int) -> list[int]:
        return [(int(seed) * 1_000_003 + j) % (2**63 - 1) for j in range(rows)]

    def _check_gen_sampling(self, s: SamplingCfg) -> BagelGenOptions:
        if float(s.temperature) != 1.0:
            raise AdapterConfigError(
                f"bagel: gen.temperature must be 1 (got {s.temperature}): the flow sampler has no "
                "temperature; its rollout noise is gen.options.noise_level",
                detail={"field": "gen.temperature"},
            )
        return self._gen_options(s.options)

    @torch.no_grad()
    def gen_rollout(self, items: list[GenItem], n: int, s: SamplingCfg) -> RolloutBatch:
        """``n`` images per prompt from the SDE sampler (gen.options.noise_level > 0; per-step log-probs
        recorded) or the ODE one (noise_level 0: no log-probs). ``out_ids`` are the step numbers: the
        "tokens" of a flow trajectory are its steps."""
        self.require("gen_rollout")
        g = self._check_gen_sampling(s)
        if not items or n < 1:
            raise BadRequest(f"gen_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        group = torch.arange(len(items)).repeat_interleave(n)
        prompts = [self._enc(it.prompt) for it in items]
        rows = [prompts[i] for i in group.tolist()]
        B, w = len(rows), float(s.cfg_weight)
        traj, lps = self._flow_sample(rows, self._row_seeds(s.seed, B), w=w, g=g, noise_level=g.noise_level)
        S = traj.shape[1] - 1
        sde = lps is not None
        batch = RolloutBatch(
            side="gen",
            group=group,
            out_ids=torch.arange(S).repeat(B, 1),
            out_mask=torch.full((B, S), sde, dtype=torch.bool),
            old_logp=lps.cpu() if sde else torch.zeros(B, S),
            prompts=[it.prompt for it in items],
            images=self.decode_latents(traj[:, -1]),
            extra={"prompt_ids": prompts, "traj": traj, "cfg_weight": w, "options": g, "gen_logp": s.logp},
        )
        if sde and (s.logp == "cond" or s.old_logp == "recompute" or (s.old_logp == "auto" and self.amp is not None)):
            batch.old_logp = self._gen_logp(batch, torch.arange(B)).detach().cpu()
        return batch

    def _gen_logp(self, batch: RolloutBatch, rows: torch.Tensor) -> torch.Tensor:
        """Per-step log-probs (b, S) of the recorded transitions under the current weights, step by step
        as sampled (one packed forward of the rows per step, as the rollout ran them)."""
        x = batch.extra
        g: BagelGenOptions = x["options"]
        if g.noise_level <= 0:
            raise AdapterConfigError(
                "bagel: this gen rollout was sampled by the ODE sampler (gen.options.noise_level 0) "
                "and has no log-probs; PairGRPO needs noise_level > 0",
                detail={"field": "gen.options.noise_level"},
            )
        r = rows.to(torch.long)
        traj = x["traj"][r.to(x["traj"].device)]
        packs = self._gen_packs([x["prompt_ids"][i] for i in batch.group[r].tolist()])
        w = 1.0 if x["gen_logp"] == "cond" else x["cfg_weight"]
        grid = flow.time_grid(g.num_timesteps, g.timestep_shift)
        out = []
        for k in range(len(grid) - 1):
            t, dt = float(grid[k]), float(grid[k] - grid[k + 1])
            sigma = flow.sde_sigma(grid, k, g.noise_level)
            mean = flow.sde_mean(traj[:, k], self._guided(packs, traj[:, k], t, w, g), t, dt, sigma)
            out.append(flow.step_logp(traj[:, k + 1], mean, sigma * dt**0.5))
        return torch.stack(out, 1)

    @torch.no_grad()
    def sample_images(
        self,
        prompts: list[str],
        n: int,
        *,
        cfg_weight: float,
        temperature: float,
        seed: int,
        options: dict | None = None,
    ) -> torch.Tensor:
        """``n`` images per prompt, prompt-major, uint8 (P * n, H, W, 3), by the ODE sampler (evaluation);
        row j's initial noise is seeded from (seed, j). ``temperature`` must be 1 (the flow has none)."""
        if not prompts or n < 1:
            raise BadRequest(f"sample_images needs at least one prompt and n >= 1 (got {len(prompts)} prompts, n={n})")
        if float(temperature) != 1.0:
            raise AdapterConfigError(
                f"bagel: sample_images temperature must be 1 (got {temperature}): the flow sampler has none"
            )
        g = self._gen_options(options or {})
        rows = [self._enc(p) for p in prompts for _ in range(n)]
        traj, _ = self._flow_sample(rows, self._row_seeds(seed, len(rows)), w=float(cfg_weight), g=g, noise_level=0.0)
        return self.decode_latents(traj[:, -1])

    # -- understanding: text answers from the und expert ------------------------------------------
    def _und_packs(
        self, images: list[torch.Tensor], questions: list[list[int]], answers: list[list[int]]
    ) -> list[Pack]:
        geo = self.geometry
        return [
            pack_und(
                self.tokens,
                und_image=im,
                question=q,
                answer=a,
                vit_patch=geo["vit_patch_size"],
                vit_max_per_side=geo["vit_max_num_patch_per_side"],
            )
            for im, q, a in zip(images, questions, answers)
        ]

    def _und_logits(
        self, packs: list[Pack], take: list[list[int]], vit: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Logits (float32) at the positions ``take[i]`` (indexes into pack i's ``ce_loss_indexes``);
        ``vit``: each pack's ViT inputs already computed (decoding computes them once per image)."""
        pk = concat_packs(packs)
        h = self._hidden(pk, vit=torch.cat(vit, 0) if vit is not None else None)
        idx, off = [], 0
        for p_, tk in zip(packs, take):
            idx += [p_.ce_loss_indexes[j] + off for j in tk]
            off += p_.length
        with self._autocast():
            z = self.model.model.language_model.lm_head(h[torch.tensor(idx, device=self.device)]).float()
        return list(z.split([len(tk) for tk in take]))

    def _und_decode(
        self,
        images: list[torch.Tensor],
        questions: list[list[int]],
        max_new: int,
        *,
        temperature: float = 1.0,
        seeds: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers (B, max_new) as Bagel's ``generate_text`` decodes them after ``[image, question]``:
        ``<|im_start|>`` then tokens until ``<|im_end|>`` (kept; the rest of the row is ``<|im_end|>``);
        greedy without ``seeds``, else softmax(logits / T) sampled from row j's generator ``seeds[j]``.
        Every step is one packed forward of the unfinished rows (no KV cache; each image's ViT pass runs
        once). Returns ids and the
        sampling log-probs (B, max_new)."""
        B, eos = len(questions), self.tokens.eos
        gens = [torch.Generator().manual_seed(int(s_)) for s_ in seeds] if seeds is not None else None
        out = torch.full((B, max_new), eos, dtype=torch.long)
        lps = torch.zeros(B, max_new)
        answers: list[list[int]] = [[] for _ in range(B)]
        # the image tokens come before everything decoded: their inputs are computed once per row
        first = self._und_packs(images, questions, answers)
        vit = list(self._vit_embeds(concat_packs(first)).split([len(p_.vit_token_indexes) for p_ in first]))
        live = list(range(B))
        for step in range(max_new):
            if not live:
                break
            logits = self._und_logits(
                self._und_packs([images[i] for i in live], [questions[i] for i in live], [answers[i] for i in live]),
                [[step]] * len(live),
                vit=[vit[i] for i in live],
            )
            z = torch.cat(logits, 0).cpu()
            if not bool(torch.isfinite(z).all()):
                raise NonFiniteError(
                    f"bagel und: the model loaded from {self.source_dir!r} gives NaN/inf answer-token "
                    f"logits (decode step {step}); its weights are probably not finite"
                )
            lp = torch.log_softmax(z / temperature, -1)
            if gens is None:
                tok = z.argmax(-1)
            else:
                tok = torch.stack(
                    [torch.multinomial(lp[j].exp(), 1, generator=gens[i]) for j, i in enumerate(live)]
                ).flatten()
            still = []
            for j, i in enumerate(live):
                out[i, step], lps[i, step] = tok[j], lp[j, tok[j]]
                if int(tok[j]) != eos:
                    answers[i].append(int(tok[j]))
                    still.append(i)
            live = still
        return out, lps

    def _answer_mask(self, out: torch.Tensor) -> torch.Tensor:
        """Positions up to and including the first ``<|im_end|>``."""
        is_eos = (out == self.tokens.eos).long()
        return (is_eos.cumsum(1) - is_eos) == 0

    def _uint8_vit(self, images: torch.Tensor) -> list[torch.Tensor]:
        from PIL import Image

        size, out = self.opts.vit_image_size, []
        for im in images.cpu().numpy():
            im = Image.fromarray(im).convert("RGB").resize((size, size), Image.BICUBIC)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous())
        return out

    @torch.no_grad()
    def greedy_answers(self, images: torch.Tensor, texts: list[str], *, max_new_tokens: int = 16) -> list[str]:
        """Greedy answers for uint8 images (B, H, W, 3) and questions, special tokens dropped."""
        if len(texts) != images.shape[0]:
            raise BadRequest(f"greedy answers: {images.shape[0]} images but {len(texts)} texts")
        if int(max_new_tokens) < 1:
            raise BadRequest(f"greedy answers: max_new_tokens must be >= 1, got {max_new_tokens}")
        out, _ = self._und_decode(self._uint8_vit(images), [self._enc(t) for t in texts], int(max_new_tokens))
        return self._texts(out)

    def _texts(self, out: torch.Tensor) -> list[str]:
        m = self._answer_mask(out)
        return [
            self.tok.decode([t for t, k in zip(row, mk) if k and t != self.tokens.eos], skip_special_tokens=True)
            for row, mk in zip(out.tolist(), m.tolist())
        ]

    @torch.no_grad()
    def und_rollout(self, items: list[UndItem], n: int, s: SamplingCfg) -> RolloutBatch:
        """``n`` sampled answers per item at ``und.temperature``; row j seeded from (seed, j). Old log-probs
        are the teacher-forced ones (one forward; exact ratio 1 at the first update) unless
        ``old_logp="rollout"`` keeps the decoding's."""
        self.require("und_rollout")
        BagelUndOptions.from_wire(dict(s.options or {}), where="bagel und.options")
        if not items or n < 1:
            raise BadRequest(f"und_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        group = torch.arange(len(items)).repeat_interleave(n)
        imgs = [self._image(it.image_path, self.opts.vit_image_size) for it in items]
        qs = [self._enc(it.text) for it in items]
        rows = group.tolist()
        T = float(s.temperature)
        out, lps = self._und_decode(
            [imgs[i] for i in rows],
            [qs[i] for i in rows],
            int(s.max_new_tokens),
            temperature=T,
            seeds=self._row_seeds(s.seed, len(rows)),
        )
        mask = self._answer_mask(out)
        batch = RolloutBatch(
            side="und",
            group=group,
            out_ids=out,
            out_mask=mask,
            old_logp=lps * mask,
            prompts=[it.text for it in items],
            texts=self._texts(out),
            extra={"images": imgs, "questions": qs, "temperature": T},
        )
        if s.old_logp != "rollout":
            batch.old_logp = self._und_logp(batch, torch.arange(len(rows))).detach().cpu()
        return batch

    def _und_logp(self, batch: RolloutBatch, rows: torch.Tensor) -> torch.Tensor:
        """Teacher-forced per-token log-probs (b, L) of the answers, in the SFT layout (``pack_und``)."""
        x, eos = batch.extra, self.tokens.eos
        r = rows.to(torch.long).tolist()
        out, mask = batch.out_ids[r], batch.out_mask[r]
        n_tok = mask.sum(1).tolist()
        answers = [[t for t in row[:k] if t != eos] for row, k in zip(out.tolist(), n_tok)]
        g = batch.group[r].tolist()
        packs = self._und_packs([x["images"][i] for i in g], [x["questions"][i] for i in g], answers)
        logits = self._und_logits(packs, [list(range(k)) for k in n_tok])
        res = torch.zeros(out.shape, dtype=torch.float32, device=self.device)
        for j, (z, k) in enumerate(zip(logits, n_tok)):
            if k:
                lp = torch.log_softmax(z / x["temperature"], -1)
                res[j, :k] = lp.gather(1, out[j, :k].to(self.device)[:, None])[:, 0]
        return res

    def token_logprobs(self, batch, rows, *, est_seed: int, grad: bool, ref: bool = False):
        """Exact log-probs: answer tokens teacher-forced; a flow trajectory's SDE steps (``est_seed`` unused)."""
        del est_seed
        self.require("logprobs_und" if batch.side == "und" else "logprobs_gen")
        if ref:
            raise CapabilityError("bagel: no reference model (set loss.beta 0)")
        with contextlib.nullcontext() if grad else torch.no_grad():
            logp = self._und_logp(batch, rows) if batch.side == "und" else self._gen_logp(batch, rows)
        mask = batch.out_mask[rows.to(torch.long)].to(self.device)
        return logp * mask, mask

    def describe(self) -> dict[str, Any]:
        n_train = sum(p.numel() for _, p in self._trainable)
        lc = self.model.config.text_config
        return {
            "family": self.family,
            "adapter": "bagel",
            "capabilities": sorted(self.capabilities),
            "device": str(self.device),
            "autocast": str(self.amp).replace("torch.", "") if self.amp else "off",
            "hidden_size": int(lc.hidden_size),
            "layers": int(lc.num_hidden_layers),
            "vocab_size": int(lc.vocab_size),
            "vit_image_size": self.opts.vit_image_size,
            "vae_image_size": self.opts.vae_image_size,
            "params_total": sum(p.numel() for p in self.model.parameters()),
            "params_trainable": n_train,
            "train_modules": list(self.train_modules),
            "ema": self.ema is not None,
            "gradient_checkpointing": self.gradient_checkpointing,
            "lora": self.lora.describe() if self.lora else None,
            "special_ids": {
                "bos": self.tokens.bos,
                "eos": self.tokens.eos,
                "boi": self.tokens.boi,
                "eoi": self.tokens.eoi,
            },
        }


__all__ = [
    "BagelAdapter",
    "Pack",
    "attention_mask",
    "check_bagel_dir",
    "concat_packs",
    "pack_gen",
    "pack_pair",
    "pack_und",
    "patchify",
    "shifted_timestep",
]
