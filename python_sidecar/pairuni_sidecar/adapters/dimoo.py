"""Lumina-DiMOO adapter (masked diffusion): PairGRPO on a discrete-diffusion unified model.

Two model sources behind one surface:

- the project's tiny model (``config.json`` with ``model_type: pairuni_tiny_mdm``, see
  ``diffusion/tiny_model.py``), used by tests, examples and the demo;
- a real Lumina-DiMOO checkpoint (``config.json`` + ``*.safetensors`` + ``vqvae/``), whose model code
  comes from the user's Lumina-DiMOO checkout (``model.options.code_dir`` or ``PAIRUNI_DIMOO_CODE``):
  no package ships it. ``from_pretrained`` breaks under transformers 5, so the model is built from
  ``LLaDAConfig(**config.json)`` and the safetensors loaded with ``load_state_dict`` (strict; missing
  or unexpected keys are named). The VQ tokenizer is ``diffusers.VQModel`` from ``vqvae/``; the text
  tokenizer is the checkpoint's.

Sampling is ours (``diffusion/samplers.py``): text by low-confidence block remasking (``und.options.
steps``, default 2), images by MaskGIT (``gen.options.steps``, default 35) with guidance
``u + w (c - u)``, ``w = gen.cfgWeight``. Log-probs for the update are the one-step mean-field
estimate (``diffusion/estimator.py``) under the masks of ``est_seed``; the behaviour log-probs are
recorded at rollout time for every seed of ``sampling.est_seeds``. Whether guidance enters the
image log-prob pass is ``gen.logp``: ``cfg`` (the config's default) scores the guided distribution
the sampler drew from, ``cond`` the conditional branch alone (half the forwards). Dropout is zeroed
at load: the ratio is exactly 1 before the first update.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
from typing import Any

import torch

from ..contract.generated import DimooGenOptions, DimooLoadOptions, DimooUndOptions
from ..diffusion.estimator import estimator_seeds, masked_inputs, one_step_logprobs, trajectory_logprobs
from ..diffusion.layout import TokenLayout, dimoo_layout, gen_region, right_pad, und_sequence
from ..diffusion.samplers import row_seed, sample_image, sample_text
from ..diffusion.tiny_model import MODEL_TYPE, PaletteCodec, TinyMDM, TinyMDMConfig, save_tiny_mdm
from ..dist import repeated_blocks
from ..errors import BadRequest
from ..registry import resolve
from .base import (
    ANY_VALUE,
    AdapterConfigError,
    CheckpointNotFound,
    GenItem,
    LoadSpec,
    PolicyAdapter,
    RolloutBatch,
    SamplingCfg,
    SFTExample,
    UndItem,
    checkpoint_blocks,
    disable_dropout,
    resolve_autocast,
    resolve_device,
    store_frozen,
)
from .lora import LoRA, lora_base_is_reference, select_targets, within_blocks

CODE_ENV = "PAIRUNI_DIMOO_CODE"
#: Lumina-DiMOO's task system prompts (upstream config.py:40-41, PROMPT_TEMPLATES), the defaults of
#: ``und_system_prompt`` / ``gen_system_prompt`` for a real checkpoint. The tiny models were trained with none.
UPSTREAM_SYSTEM_PROMPTS = {
    "und": "You are a multimodal model that can process both text and images. Answer the following question "
    "based on the provided images. Analyze each image and combine relevant details to answer.",
    "gen": "Generate an image according to the text prompt.",
}
#: Share of SFT generation prompts replaced by ``<uncondition>`` so CFG has an unconditional model
#: (upstream train/train.py:98-100).
SFT_UNCOND_PROB = 0.1
UPSTREAM_FILES = ("model/__init__.py", "model/configuration_llada.py", "model/modeling_xllmx_dimoo.py")


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"


class DimooCodeError(AdapterConfigError):
    """The Lumina-DiMOO checkout is missing, incomplete, or does not provide the classes the loader needs."""


class IncompatibleCheckpoint(AdapterConfigError):
    """The checkpoint's weights do not fit the model built from its config (missing/unexpected keys, shapes)."""


# -- the real model's loader ----------------------------------------------------------------------


def _import_upstream(code_dir: str):
    """Import ``model.configuration_llada`` / ``model.modeling_xllmx_dimoo`` from a checkout under a
    private package name (its modules import each other relatively), so two checkouts never clash."""
    if not code_dir:
        raise DimooCodeError(
            f"dimoo: no Lumina-DiMOO code: pass model.options.code_dir or set {CODE_ENV} "
            "to a checkout of github.com/Alpha-VLLM/Lumina-DiMOO (the model code is on no package registry)"
        )
    if not os.path.isdir(code_dir):
        raise DimooCodeError(f"dimoo: code_dir {code_dir!r} does not exist (model.options.code_dir / {CODE_ENV})")
    missing = [f for f in UPSTREAM_FILES if not os.path.isfile(os.path.join(code_dir, f))]
    if missing:
        raise DimooCodeError(
            f"dimoo: {code_dir!r} is not a Lumina-DiMOO checkout: missing {missing}",
            detail={"code_dir": code_dir, "missing": missing},
        )
    pkg = f"_pairuni_dimoo_{abs(hash(os.path.abspath(code_dir)))}"
    if pkg not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            pkg,
            os.path.join(code_dir, "model", "__init__.py"),
            submodule_search_locations=[os.path.join(code_dir, "model")],
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 - named below
            sys.modules.pop(pkg, None)
            raise DimooCodeError(f"dimoo: importing {code_dir}/model failed: {type(e).__name__}: {e}") from None
    try:
        cfg_mod = importlib.import_module(f"{pkg}.configuration_llada")
        mdl_mod = importlib.import_module(f"{pkg}.modeling_xllmx_dimoo")
    except Exception as e:  # noqa: BLE001
        raise DimooCodeError(
            f"dimoo: importing the model modules of {code_dir!r} failed: {type(e).__name__}: {e}"
        ) from None
    for mod, name in ((cfg_mod, "LLaDAConfig"), (mdl_mod, "LLaDAForMultiModalGeneration")):
        if not hasattr(mod, name):
            raise DimooCodeError(f"dimoo: {mod.__file__} defines no {name} (an incompatible checkout)")
    return cfg_mod.LLaDAConfig, mdl_mod.LLaDAForMultiModalGeneration


def _weight_files(ckpt: str) -> list[str]:
    idx = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.isfile(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    missing = [f for f in files if not os.path.isfile(os.path.join(ckpt, f))]
    if not files or missing:
        raise CheckpointNotFound(
            f"dimoo: checkpoint {ckpt!r} has no model weights"
            f"{' (missing ' + str(missing) + ')' if missing else ' (*.safetensors)'}"
        )
    return [os.path.join(ckpt, f) for f in files]


def load_upstream_model(code_dir: str, ckpt: str, dtype: torch.dtype = torch.float32):
    """``LLaDAForMultiModalGeneration`` built from ``config.json`` with its weights, dropout zeroed."""
    from safetensors.torch import load_file

    LLaDAConfig, Model = _import_upstream(code_dir)
    with open(os.path.join(ckpt, "config.json")) as f:
        raw = json.load(f)
    for k in [k for k in raw if "dropout" in k and isinstance(raw[k], (int, float))]:
        raw[k] = 0.0  # log-prob passes must be deterministic
    try:
        model = Model(LLaDAConfig(**raw))
    except Exception as e:  # noqa: BLE001
        raise IncompatibleCheckpoint(
            f"dimoo: building LLaDAForMultiModalGeneration from {ckpt}/config.json with the "
            f"code in {code_dir!r} failed: {type(e).__name__}: {e}"
        ) from None
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(ckpt):
        state.update(load_file(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise IncompatibleCheckpoint(
            f"dimoo: the weights in {ckpt!r} do not fit the model of {code_dir!r}: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shape {shapes[:8]} (use the checkout the checkpoint was made with)",
            detail={"missing": missing[:64], "unexpected": unexpected[:64], "shape": shapes[:64]},
        )
    model.load_state_dict(state, strict=True)
    disable_dropout(model)
    return model.to(dtype)


class _UpstreamLogits:
    """``logits_at`` over upstream's ``forward(input_ids, infer=True)``, which pads each row itself: rows of
    one real length run together, unpadded."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, ids: torch.Tensor, keep: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        lens = keep.sum(-1).tolist()
        out = [None] * ids.shape[0]
        for n in sorted(set(lens)):
            rows = [i for i, x in enumerate(lens) if x == n]
            lg = self.model(input_ids=ids[rows, :n], infer=True).logits
            p = pos[rows]
            g = lg.gather(1, p.unsqueeze(-1).expand(-1, -1, lg.shape[-1]))
            for j, i in enumerate(rows):
                out[i] = g[j]
        return torch.stack(out, 0)


class _VQCodec:
    """DiMOO's image tokenizer: ``diffusers.VQModel`` (aMUSEd: 16x downsampling), pixels in [0, 1]
    (upstream clips decoded images to [0, 1]; the encoder's input range is not verified on real weights)."""

    def __init__(self, vq, size: int) -> None:
        self.vq, self.size = vq, size
        self.stride = 2 ** (len(vq.config.block_out_channels) - 1)
        if size % self.stride:
            raise AdapterConfigError(
                f"dimoo: image_size {size} is not a multiple of the VQ's downsampling {self.stride}"
            )
        self.h = self.w = size // self.stride

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size, self.size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        dev = next(self.vq.parameters()).device
        x = images.permute(0, 3, 1, 2).float().div(255).to(dev)
        h = self.vq.encode(x).latents
        _, _, info = self.vq.quantize(h)
        return info[2].reshape(images.shape[0], -1).cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        vq = self.vq
        dev = next(vq.parameters()).device
        # VQModel.decode(force_not_quantize=True, shape=...) as upstream calls it, without relying on the
        # config's lookup_from_codebook flag: codebook rows -> post-quant conv -> decoder.
        shape = (codes.shape[0], self.h, self.w, int(vq.config.vq_embed_dim or vq.config.latent_channels))
        quant = vq.quantize.get_codebook_entry(codes.reshape(-1).to(dev), shape)
        x = vq.decoder(vq.post_quant_conv(quant), quant if vq.config.norm_type == "spatial" else None)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


class _Text:
    """Encode/decode text with either a ``tokenizers.Tokenizer`` (tiny) or an HF tokenizer (real).

    Upstream tokenizes every prompt and SFT answer with the tokenizer's default call (special tokens as
    the tokenizer adds them: inference/inference_t2i.py:97, train/train.py:74). Prompts are built from
    pieces (the image or ``<uncondition>`` goes between them), so ``wrap`` adds around the pieces what
    the default call adds around a text: ``wrap(encode(a) + encode(b)) == default_call(a + b)``."""

    def __init__(self, tok, special_ids: set[int], n_text: int | None) -> None:
        self.tok, self.special, self.n_text = tok, special_ids, n_text
        self.prefix, self.suffix = self._added_around("a")

    def _ids(self, text: str, special: bool) -> list[int]:
        if hasattr(self.tok, "encode") and hasattr(self.tok, "get_vocab_size"):
            return list(self.tok.encode(text, add_special_tokens=special).ids)
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

    def _added_around(self, probe: str) -> tuple[list[int], list[int]]:
        full, plain = self._ids(probe, True), self._ids(probe, False)
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i], full[i + len(plain) :]
        raise AdapterConfigError(
            f"dimoo: the tokenizer's default call changes a text's own ids ({probe!r}: {full} "
            f"with special tokens, {plain} without); prompts could not be built from pieces"
        )

    def encode(self, text: str) -> list[int]:
        return self._ids(text, False)

    def wrap(self, ids: list[int]) -> list[int]:
        return self.prefix + list(ids) + self.suffix

    def decode(self, ids: list[int]) -> str:
        keep = [i for i in ids if i not in self.special and (self.n_text is None or i < self.n_text)]
        return self.tok.decode(keep, skip_special_tokens=True)


# -- the adapter ----------------------------------------------------------------------------------


class DimooAdapter(PolicyAdapter):
    family = "mdm"
    capabilities = frozenset({"und_rollout", "gen_rollout", "logprobs_und", "logprobs_gen", "sft", "cfg", "ref_model"})
    seeded_logprobs = True
    name = "dimoo"
    # Old log-probs are always the estimator's, recomputed after sampling per est_seed (the sampler's own
    # unmasking probabilities are not the estimator's): old_logp "rollout" is refused.
    honours = {
        "und.temperature": ANY_VALUE,
        "und.max_new_tokens": ANY_VALUE,
        "und.old_logp": ("auto", "recompute"),
        "und.est_seeds": ANY_VALUE,
        "gen.temperature": ANY_VALUE,
        "gen.cfg_weight": ANY_VALUE,
        "gen.logp": ANY_VALUE,
        "gen.old_logp": ("auto", "recompute"),
        "gen.est_seeds": ANY_VALUE,
    }

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.opts = DimooLoadOptions.from_wire(dict(spec.options or {}), where="dimoo model.options")
        for name, t, keys in (
            ("und_template", self.opts.und_template, ("{image}", "{question}")),
            ("gen_template", self.opts.gen_template, ("{prompt}",)),
        ):
            if any(t.count(k) != 1 for k in keys):
                raise AdapterConfigError(f"dimoo: {name} must contain each of {list(keys)} exactly once (got {t!r})")
        self.device = resolve_device(spec.device)
        self.amp = resolve_autocast(spec.autocast, self.device)
        self.source_dir = os.path.abspath(spec.model_dir)
        self.config = self._read_config(spec.model_dir)
        self.tiny = self.config.get("model_type") == MODEL_TYPE
        own = {"und": "", "gen": ""} if self.tiny else UPSTREAM_SYSTEM_PROMPTS
        self.system = {
            "und": own["und"] if self.opts.und_system_prompt is None else self.opts.und_system_prompt,
            "gen": own["gen"] if self.opts.gen_system_prompt is None else self.opts.gen_system_prompt,
        }
        self.model = self._load(spec.model_dir)
        if not spec.train_modules:
            raise AdapterConfigError("train_modules is empty: nothing would train")
        self._set_trainable(spec.train_modules)
        self._add_lora()
        store_frozen(self.model, self.amp)
        self.gradient_checkpointing = bool(spec.gradient_checkpointing)
        if self.gradient_checkpointing:
            checkpoint_blocks(repeated_blocks(self.model))
        self.ref_model = None
        self.ref_is_base = bool(spec.ref_model_dir) and lora_base_is_reference(self.lora, spec)
        if spec.ref_model_dir and not self.ref_is_base:
            self._read_config(spec.ref_model_dir)
            self.ref_model = self._load(spec.ref_model_dir, text_too=False)
            self.ref_model.requires_grad_(False)
            store_frozen(self.ref_model, self.amp)
        self.model.eval()

    # -- loading ---------------------------------------------------------------------------------
    @staticmethod
    def _read_config(path: str) -> dict:
        if not os.path.isdir(path):
            raise CheckpointNotFound(f"dimoo: model directory {path!r} does not exist")
        cp = os.path.join(path, "config.json")
        if not os.path.isfile(cp):
            raise CheckpointNotFound(f"dimoo: {path!r} has no config.json")
        with open(cp) as f:
            return json.load(f)

    def _load(self, path: str, text_too: bool = True):
        if self.tiny:
            return self._load_tiny(path, text_too)
        return self._load_real(path, text_too)

    def _load_tiny(self, path: str, text_too: bool):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        c = self.config
        fields = TinyMDMConfig.__dataclass_fields__
        model = TinyMDM(TinyMDMConfig(**{k: c[k] for k in fields if k in c}))
        wp = os.path.join(path, "model.safetensors")
        if not os.path.isfile(wp):
            raise CheckpointNotFound(f"dimoo: tiny model {path!r} has no model.safetensors")
        try:
            model.load_state_dict(load_file(wp), strict=True)
        except RuntimeError as e:
            raise IncompatibleCheckpoint(f"dimoo: {wp} does not fit its config.json: {e}") from None
        disable_dropout(model)
        if text_too:
            self.layout = TokenLayout(**c["layout"])
            self.layout.check(path)
            tp = os.path.join(path, "tokenizer.json")
            if not os.path.isfile(tp):
                raise CheckpointNotFound(f"dimoo: tiny model {path!r} has no tokenizer.json")
            tok = Tokenizer.from_file(tp)
            self.text = _Text(tok, set(self.layout.specials), tok.get_vocab_size())
            if c.get("codec", "palette") == "palette":
                self.codec = PaletteCodec(tuple(c["grid"]), int(c["cell"]), self.layout.codebook)
            else:  # a registered codec plug-in (ShapesWorld's "shapes" registers itself)
                self.codec = resolve("codec", c["codec"])(c)
            if getattr(self.codec, "codebook", self.layout.codebook) != self.layout.codebook:
                raise IncompatibleCheckpoint(
                    f"dimoo: {path} has {self.layout.codebook} image codes; its codec "
                    f"{c.get('codec')!r} has {self.codec.codebook}"
                )
            if self.opts.image_size and self.opts.image_size != self.codec.image_size[0]:
                raise AdapterConfigError(
                    f"dimoo: the tiny model draws {self.codec.image_size[0]} px images; "
                    f"model.options.image_size={self.opts.image_size} (use 0)"
                )
        return model.to(self.device)

    def _load_real(self, path: str, text_too: bool):
        code_dir = self.opts.code_dir or os.environ.get(CODE_ENV, "")
        _weight_files(path)
        if text_too:
            vqdir = os.path.join(path, "vqvae")
            if not os.path.isfile(os.path.join(vqdir, "config.json")):
                raise CheckpointNotFound(
                    f"dimoo: checkpoint {path!r} has no vqvae/config.json (the VQ image tokenizer)"
                )
        model = load_upstream_model(code_dir, path).to(self.device)
        if text_too:
            try:
                from diffusers import VQModel
            except ImportError as e:
                raise AdapterConfigError(
                    f"dimoo: the VQ tokenizer needs diffusers ({e}); pip install 'pairuni-sidecar[dimoo]'"
                ) from None
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
            except Exception as e:  # noqa: BLE001
                raise CheckpointNotFound(
                    f"dimoo: no usable text tokenizer in {path!r} ({type(e).__name__}: {e})"
                ) from None
            try:
                vq = VQModel.from_pretrained(path, subfolder="vqvae").to(self.device).eval()
            except Exception as e:  # noqa: BLE001
                raise CheckpointNotFound(
                    f"dimoo: cannot load diffusers VQModel from {path}/vqvae: {type(e).__name__}: {e}"
                ) from None
            vocab = int(self.config.get("vocab_size") or self.config.get("embedding_size") or 0)
            self.layout = dimoo_layout(vocab)
            self.layout.check(path)
            self.text = _Text(tok, set(self.layout.specials), len(tok))
            self.codec = _VQCodec(vq, self.opts.image_size or 512)
        return model

    def _set_trainable(self, modules) -> None:
        """Groups: ``language_model`` is the whole transformer; ``vision`` names nothing (images enter as
        VQ codes through the shared embedding: there is no vision encoder, and the VQ stays frozen);
        anything else must be a parameter-name prefix."""
        names = [n for n, _ in self.model.named_parameters()]
        prefixes: list[str] = []
        for m in modules:
            if m == "language_model":
                prefixes.append("")
            elif m != "vision":
                if not any(n.startswith(m) for n in names):
                    raise AdapterConfigError(
                        f"train_modules: {m!r} is neither a group (language_model, vision) nor a "
                        "parameter-name prefix of this model"
                    )
                prefixes.append(m)
        if not prefixes:
            raise AdapterConfigError(
                f"train_modules {list(modules)} select no parameter of the dimoo model (use 'language_model')"
            )
        for n, p in self.model.named_parameters():
            p.requires_grad_(n.startswith(tuple(prefixes)))
        self.train_modules = tuple(modules)

    def _add_lora(self) -> None:
        """With ``lora_rank`` > 0: LoRA factors (``adapters/lora.py``) on the selected modules' Linear layers
        that ``lora_targets`` names (default: every Linear inside the transformer blocks, i.e. the attention
        and MLP projections: upstream's ``blocks.N.{q,k,v}_proj/attn_out/ff_proj/up_proj/ff_out``, the tiny
        model's ``blocks.N.{qkv,out,ff.0,ff.2}``); they alone train, every base weight is frozen."""
        self.lora = None
        o = self.opts
        if o.lora_rank == 0:
            return
        selected = {n for n, p in self.model.named_parameters() if p.requires_grad}
        targets = select_targets(
            self.model,
            who="dimoo",
            selected=selected,
            targets=list(o.lora_targets),
            default=within_blocks("blocks|block_groups"),
            default_what="the Linear layers inside the transformer blocks",
        )
        self.model.requires_grad_(False)
        self.lora = LoRA(targets, rank=o.lora_rank, alpha=o.lora_alpha, device=self.device)

    # -- helpers ---------------------------------------------------------------------------------
    def _logits_fn(self, model, lora_off: bool = False):
        """Logits at ``pos``; ``lora_off``: of the base model alone (the KL reference of a LoRA policy)."""
        base = model if self.tiny else _UpstreamLogits(model)

        def fn(ids, keep, pos):
            with self._autocast(), self.lora.disabled() if lora_off else contextlib.nullcontext():
                return base(ids.to(self.device), keep.to(self.device), pos.to(self.device)).float()

        return fn

    @property
    def grid(self) -> tuple[int, int]:
        return self.codec.h, self.codec.w

    def _fill(self, template: str, **kw: str) -> str:
        for k, v in kw.items():
            template = template.replace("{" + k + "}", v)
        return template

    def _split(self, template: str, at: str, **kw: str) -> tuple[list[int], list[int]]:
        pre, post = template.split("{" + at + "}")
        return self.text.encode(self._fill(pre, **kw)), self.text.encode(self._fill(post, **kw))

    def _check_fits(self, seqs: list[list[int]], starts: list[int], slots: int, answer: str) -> None:
        """A tiny model's learned positions end at ``max_len``: refuse a longer row with the numbers that fix it
        (the sampler's own error named neither the prompt's share nor a setting that would make it fit)."""
        limit = self.config.get("max_len") if self.tiny else None
        longest = max(range(len(seqs)), key=lambda r: len(seqs[r]))
        if limit is None or len(seqs[longest]) <= limit:
            return
        prompt = starts[longest]  # tokens before the first answer slot (image, template, question, BOA)
        room = limit - prompt - 1  # the EOA after the answer slots
        fix = (
            f"set {answer} to at most {room}"
            if room >= 1
            else f"shorten the question (und.instruction) by at least {_tokens(prompt + 2 - limit)}"
        )
        raise AdapterConfigError(
            f"dimoo und: the prompt takes {prompt} tokens and the answer {slots + 1} ({slots} slots for {answer} "
            f"and an end token), {len(seqs[longest])} in all, over the tiny model's limit of {limit} positions (max_len in its "
            f"config.json): {fix}"
        )

    def _und_rows(self, codes: torch.Tensor, texts: list[str], slots: int, answer: str = "und.maxNewTokens"):
        lay, (h, w) = self.layout, self.grid
        seqs, starts = [], []
        for c, t in zip(codes, texts):
            pre, post = self._split(self.opts.und_template, "image", system=self.system["und"], question=t)
            # The tokenizer's BOS before the prompt and EOS (if any) after it: the image stays at the
            # template's place, inside the prompt (upstream's input_ids[:-1] + image + input_ids[-1:]).
            s, start = und_sequence(self.text.prefix + pre, post + self.text.suffix, c, h, w, slots, lay)
            seqs.append(s)
            starts.append(start)
        self._check_fits(seqs, starts, slots, answer)
        ids, keep = right_pad(seqs, lay.pad)
        slot_pos = torch.tensor(starts).unsqueeze(1) + torch.arange(slots)
        maskable = keep.clone()
        for r, st in enumerate(starts):
            maskable[r, st - 1 :] = False  # BOA, the answer slots and EOA are not prompt
        return ids, keep, slot_pos, maskable

    def _gen_rows(self, prompts: list[str]):
        lay, (h, w) = self.layout, self.grid
        region, offs = gen_region(h, w, lay)
        seqs, slots, plen = [], [], []
        for p in prompts:
            pre, post = self._split(self.opts.gen_template, "prompt", system=self.system["gen"], prompt=p)
            pid = self.text.wrap(pre + self.text.encode(p) + post)
            seqs.append(pid + region)
            slots.append([len(pid) + o for o in offs])
            plen.append(len(pid))
        limit = self.config.get("max_len") if self.tiny else None
        if limit is not None and len(region) + max(plen) > limit:
            raise AdapterConfigError(
                f"dimoo gen: the prompt takes {max(plen)} tokens and the image {len(region)}, over the tiny model's "
                f"limit of {limit} positions (max_len in its config.json): shorten the generation prompt by at "
                f"least {_tokens(len(region) + max(plen) - limit)}"
            )
        ids, keep = right_pad(seqs, lay.pad)
        maskable = torch.zeros_like(keep)
        for r, n in enumerate(plen):
            maskable[r, :n] = True
        pre, post = self._split(self.opts.gen_template, "prompt", system=self.system["gen"], prompt="")
        u = self.text.wrap(pre + [lay.uncond] + post)
        uids = torch.tensor([u + region] * len(prompts), dtype=torch.long)
        ukeep = torch.ones_like(uids, dtype=torch.bool)
        uslots = (len(u) + torch.tensor(offs)).unsqueeze(0).expand(len(prompts), -1).contiguous()
        return ids, keep, torch.tensor(slots), maskable, (uids, ukeep, uslots)

    def _load_images(self, paths: list[str]) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        H, W = self.codec.image_size
        out = []
        for p in paths:
            if not os.path.isfile(p):
                raise BadRequest(f"dimoo: image file {p!r} does not exist")
            try:
                with Image.open(p) as im:
                    out.append(np.asarray(im.convert("RGB").resize((W, H), Image.Resampling.BICUBIC)))
            except (OSError, ValueError) as e:
                raise BadRequest(f"dimoo: cannot decode image {p!r}: {e}") from None
        return torch.from_numpy(np.stack(out))

    def _answer(self, out: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Decoded answers (up to the first EOS/EOA) and the scored mask (through that token)."""
        lay = self.layout
        stop = (out == lay.eos) | (out == lay.eoa)
        before = stop.long().cumsum(-1) - stop.long()
        mask = before == 0
        texts = [self.text.decode([t for t, k in zip(r, m) if k]) for r, m in zip(out.tolist(), mask.tolist())]
        return texts, mask

    def _text_uncond(self, ids, maskable, w):
        if w == 1.0:
            return None
        u = ids.clone()
        u[maskable] = self.layout.mask
        return u

    # -- rollouts --------------------------------------------------------------------------------
    @torch.no_grad()
    def und_rollout(self, items: list[UndItem], n: int, s: SamplingCfg) -> RolloutBatch:
        self.require("und_rollout")
        o = DimooUndOptions.from_wire(s.options, where="dimoo und.options")
        if not items or n < 1:
            raise BadRequest(f"und_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        group = torch.arange(len(items)).repeat_interleave(n)
        codes = self.codec.encode(self._load_images([it.image_path for it in items]))
        L = int(s.max_new_tokens)
        ids, keep, slots, maskable = self._und_rows(codes[group], [items[g].text for g in group.tolist()], L)
        w, T = float(o.cfg_weight), float(s.temperature)
        un = self._text_uncond(ids, maskable, w)
        fn = self._logits_fn(self.model)
        seeds = [row_seed(s.seed, r) for r in range(len(group))]
        try:
            x, commit, _ = sample_text(
                fn,
                ids,
                keep,
                slots,
                steps=o.steps,
                block_length=o.block_length,
                temperature=T,
                support=self.layout.text_support(),
                seeds=seeds,
                mask_id=self.layout.mask,
                cfg_weight=w,
                uncond=None if un is None else (un, keep, slots),
                record=True,
            )
        except ValueError as e:
            raise AdapterConfigError(f"dimoo und: {e} (und.options.steps / block_length, und.maxNewTokens)") from None
        out = x.gather(1, slots)
        texts, mask = self._answer(out)
        batch = RolloutBatch(
            side="und",
            group=group,
            out_ids=out,
            out_mask=mask,
            old_logp=torch.zeros(out.shape),
            prompts=[it.text for it in items],
            texts=texts,
            extra={
                "ids": x,
                "keep": keep,
                "slots": slots,
                "maskable": maskable,
                "w": w,
                "T": T,
                "commit": commit.cpu(),
                "steps": o.steps,
            },
        )
        self._record_old(batch, s.est_seeds)
        return batch

    @torch.no_grad()
    def gen_rollout(self, items: list[GenItem], n: int, s: SamplingCfg) -> RolloutBatch:
        self.require("gen_rollout")
        o = DimooGenOptions.from_wire(s.options, where="dimoo gen.options")
        if not items or n < 1:
            raise BadRequest(f"gen_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        group = torch.arange(len(items)).repeat_interleave(n)
        w, T = float(s.cfg_weight), float(s.temperature)
        codes, rows, commit = self._sample_codes(
            [items[g].prompt for g in group.tolist()],
            steps=o.steps,
            w=w,
            T=T,
            seeds=[row_seed(s.seed, r) for r in range(len(group))],
            record=True,
        )
        ids, keep, slots, maskable, (uids, ukeep, uslots) = rows
        lay = self.layout
        batch = RolloutBatch(
            side="gen",
            group=group,
            out_ids=codes,
            out_mask=torch.ones_like(codes, dtype=torch.bool),
            old_logp=torch.zeros(codes.shape),
            prompts=[it.prompt for it in items],
            images=self.codec.decode(codes),
            extra={
                "ids": ids.scatter(1, slots, codes + lay.code_base),
                "keep": keep,
                "slots": slots,
                "maskable": maskable,
                "uncond": (uids.scatter(1, uslots, codes + lay.code_base), ukeep, uslots),
                "w": w if s.logp == "cfg" else 1.0,
                "T": T,
                "commit": commit,
                "steps": o.steps,
            },
        )
        self._record_old(batch, s.est_seeds)
        return batch

    def _sample_codes(
        self, prompts: list[str], *, steps: int, w: float, T: float, seeds: list[int], record: bool = False
    ):
        rows = self._gen_rows(prompts)
        ids, keep, slots, _, un = rows
        codes, commit, _ = sample_image(
            self._logits_fn(self.model),
            ids,
            keep,
            slots,
            steps=steps,
            temperature=T,
            lay=self.layout,
            seeds=seeds,
            cfg_weight=w,
            uncond=un if w != 1.0 else None,
            record=True,
        )
        return (codes.cpu(), rows, commit.cpu()) if record else (codes.cpu(), rows)

    def _record_old(self, batch: RolloutBatch, est_seeds) -> None:
        seeds = [int(x) for x in (est_seeds or [0])]
        rows = torch.arange(batch.size)
        for i, e in enumerate(seeds):
            if i and self.opts.estimator == "trajectory":  # no mask randomness: one pass serves every seed
                batch.old_logp_by_seed[e] = batch.old_logp_by_seed[seeds[0]]
                continue
            batch.old_logp_by_seed[e] = self.token_logprobs(batch, rows, est_seed=e, grad=False)[0].detach().cpu()
        batch.old_logp = batch.old_logp_by_seed[seeds[0]]

    # -- scoring ---------------------------------------------------------------------------------
    def token_logprobs(
        self, batch: RolloutBatch, rows: torch.Tensor, *, est_seed: int, grad: bool, ref: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.require(f"logprobs_{batch.side}")
        if ref and self.ref_model is None and not self.ref_is_base:
            raise AdapterConfigError("reference log-probs requested but no reference model is loaded (ref_model_dir)")
        rows = rows.to(torch.long)
        x, lay = batch.extra, self.layout
        seeds = estimator_seeds(est_seed, rows)
        ids, keep, slots, maskable = x["ids"][rows], x["keep"][rows], x["slots"][rows], x["maskable"][rows]
        inp = masked_inputs(ids, keep, slots, maskable, seeds, self.opts.p_mask_prompt, lay.mask)
        fn = self._logits_fn(
            self.ref_model if ref and self.ref_model is not None else self.model, lora_off=ref and self.ref_is_base
        )
        out = batch.out_ids[rows]
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        if self.opts.estimator == "trajectory":
            with ctx:
                logp = self._trajectory(fn, batch, rows, ids, keep, slots, maskable, out.to(self.device))
            mask = batch.out_mask[rows].to(self.device)
            return logp * mask, mask
        with ctx:
            if batch.side == "und":
                un = self._text_uncond(inp, maskable, x["w"])
                logp = one_step_logprobs(
                    fn,
                    inp,
                    keep,
                    slots,
                    out.to(self.device),
                    temperature=x["T"],
                    support=lay.text_support(),
                    cfg_weight=x["w"],
                    uncond=None if un is None else (un, keep, slots),
                )
            else:
                uids, ukeep, uslots = (t[rows] for t in x["uncond"])
                uinp = uids.scatter(1, uslots, torch.full_like(uslots, lay.mask))
                logp = one_step_logprobs(
                    fn,
                    inp,
                    keep,
                    slots,
                    out.to(self.device),
                    temperature=x["T"],
                    support=slice(lay.code_base, lay.code_end),
                    cfg_weight=x["w"],
                    uncond=(uinp, ukeep, uslots),
                )
        mask = batch.out_mask[rows].to(self.device)
        return logp * mask, mask

    def _trajectory(self, fn, batch, rows, ids, keep, slots, maskable, out):
        x, lay = batch.extra, self.layout
        commit = x["commit"][rows].to(self.device)
        if batch.side == "und":
            un = self._text_uncond(ids, maskable, x["w"])
            return trajectory_logprobs(
                fn,
                ids,
                keep,
                slots,
                out,
                out,
                commit,
                steps=x["steps"],
                mask_id=lay.mask,
                temperature=x["T"],
                support=lay.text_support(),
                cfg_weight=x["w"],
                uncond=None if un is None else (un, keep, slots),
            )
        uids, ukeep, uslots = (t[rows] for t in x["uncond"])
        return trajectory_logprobs(
            fn,
            ids,
            keep,
            slots,
            out + lay.code_base,
            out,
            commit,
            steps=x["steps"],
            mask_id=lay.mask,
            temperature=x["T"],
            support=slice(lay.code_base, lay.code_end),
            cfg_weight=x["w"],
            uncond=(uids, ukeep, uslots),
        )

    def sft_loss(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        """Masked-token CE (DiMOO's SFT): per example a ratio cos(pi r / 2), r ~ U(0, 1), of the answer
        slots / image codes is masked and only those are scored; plain mean over masked tokens. Targets as
        upstream's (train/train.py:85-100): the answer tokenized by the default call with ``</answer>``,
        padded with the pad id; ``SFT_UNCOND_PROB`` of the generation prompts become ``<uncondition>``."""
        self.require("sft")
        if not examples:
            raise BadRequest("sft_loss needs at least one example")
        bad = [e.side for e in examples if e.side not in ("und", "gen")]
        if bad:
            raise BadRequest(f"sft example side must be 'und' or 'gen', got {bad[0]!r}")
        lay, fn, res = self.layout, self._logits_fn(self.model), {}
        und = [e for e in examples if e.side == "und"]
        gen = [e for e in examples if e.side == "gen"]
        if und:
            tgt = self._sft_answers([e.target for e in und])
            L = tgt.shape[1]
            codes = self.codec.encode(self._load_images([e.image_path for e in und]))
            ids, keep, slots, _ = self._und_rows(codes, [e.text for e in und], L, answer="the longest SFT answer")
            res["und"] = self._masked_ce(fn, ids, keep, slots, tgt, lay.text_support())
        if gen:
            codes = self.codec.encode(self._load_images([e.image_path for e in gen]))
            ids, keep, slots, _ = self._sft_gen_rows([e.text for e in gen])
            res["gen"] = self._masked_ce(fn, ids, keep, slots, codes, slice(lay.code_base, lay.code_end))
        return res

    def _sft_answers(self, answers: list[str]) -> torch.Tensor:
        """(B, L) answer targets: ``default_call(answer + "</answer>")`` then pad ids up to the longest."""
        lay = self.layout
        tgt = [self.text.wrap(self.text.encode(a) + [lay.eoa]) for a in answers]
        L = max(len(t) for t in tgt)
        return torch.tensor([t + [lay.pad] * (L - len(t)) for t in tgt])

    def _sft_gen_rows(self, prompts: list[str]):
        """Generation SFT rows with each prompt replaced by the unconditional one with probability
        ``SFT_UNCOND_PROB`` (torch's generator); returns ids, keep, code slots and the dropped rows."""
        lay = self.layout
        ids, keep, slots, _, (uids, ukeep, uslots) = self._gen_rows(prompts)
        drop = torch.rand(len(prompts)) < SFT_UNCOND_PROB
        if drop.any():  # the rows differ in length: right-pad both to one width
            width = max(ids.shape[1], uids.shape[1])

            def pad(t, v):
                return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)

            d = drop.unsqueeze(1)
            ids = torch.where(d, pad(uids, lay.pad), pad(ids, lay.pad))
            keep = torch.where(d, pad(ukeep, False), pad(keep, False))
            slots = torch.where(d, uslots, slots)
        return ids, keep, slots, drop

    def _masked_ce(self, fn, ids, keep, slots, targets, support) -> torch.Tensor:
        lay = self.layout
        B, L = slots.shape
        ratio = torch.cos(math.pi / 2 * torch.rand(B, 1))
        m = torch.rand(B, L) < ratio
        m[torch.arange(B), torch.randint(0, L, (B,))] = True  # at least one scored token per example
        tok = targets + (lay.code_base if isinstance(support, slice) else 0)
        x = ids.scatter(1, slots, torch.where(m, torch.full_like(tok, lay.mask), tok))
        logp = one_step_logprobs(fn, x, keep, slots, targets.to(self.device), temperature=1.0, support=support)
        m = m.to(self.device)
        return -(logp * m).sum() / m.sum()

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy_answers(
        self, images: torch.Tensor, texts: list[str], *, max_new_tokens: int = 16, steps: int | None = None
    ) -> list[str]:
        """Deterministic answers: the text sampler at temperature 0 (argmax proposals, highest
        confidence committed first), ``steps`` = max_new_tokens unless given (one token per step)."""
        if len(texts) != images.shape[0]:
            raise BadRequest(f"greedy answers: {images.shape[0]} images but {len(texts)} texts")
        ids, keep, slots, _ = self._und_rows(self.codec.encode(images), texts, int(max_new_tokens))
        x = sample_text(
            self._logits_fn(self.model),
            ids,
            keep,
            slots,
            steps=int(steps or max_new_tokens),
            block_length=0,
            temperature=0.0,
            support=self.layout.text_support(),
            seeds=[0] * len(texts),
            mask_id=self.layout.mask,
        )
        return self._answer(x.gather(1, slots))[0]

    @torch.no_grad()
    def sample_images(
        self, prompts: list[str], n: int, *, cfg_weight: float, temperature: float, seed: int, steps: int = 35
    ) -> torch.Tensor:
        if not prompts or n < 1:
            raise BadRequest(f"sample_images needs at least one prompt and n >= 1 (got {len(prompts)}, n={n})")
        all_p = [p for p in prompts for _ in range(n)]
        codes, _ = self._sample_codes(
            all_p,
            steps=steps,
            w=float(cfg_weight),
            T=float(temperature),
            seeds=[row_seed(seed, r) for r in range(len(all_p))],
        )
        return self.codec.decode(codes)

    # -- parameters and persistence --------------------------------------------------------------
    def train_mode(self, on: bool) -> None:
        self.model.eval()  # dropout is zeroed at load; there is nothing train() would switch on

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        own = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return own + (self.lora.named_parameters() if self.lora else [])

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The LoRA factors (trainable parameters outside the module tree), if any."""
        return self.lora.state() if self.lora else {}

    # -- scale-out -------------------------------------------------------------------------------
    def shard(self) -> None:
        """FSDP2 over each transformer block, then the root (``dist.shard``; world > 1 only): the adapter
        calls nothing but the model's forward (the VQ codec is outside it, frozen). The reference model
        is sharded the same way; ``Policy.ref_logps`` runs the same number of passes on every rank.
        The estimator's masks come from (est_seed, row) of each rank's own batches, so they do not
        depend on the world size."""
        from .. import dist

        for m in (self.model, self.ref_model):
            if m is not None:
                dist.shard(dist.repeated_blocks(m), m, offload=self.spec.cpu_offload)

    def save_pretrained(self, path: str, state_dict: dict | None = None, extra_state: dict | None = None) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        sd = state_dict if state_dict is not None else self.model.state_dict()
        if self.lora:  # a plain model for the loader: W + (alpha/r) B A
            sd = self.lora.merged(sd)
        if self.tiny:
            # Write straight into ``path`` (the caller's checkpoint writer makes it atomic).
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in sd.items()}, os.path.join(path, "model.safetensors")
            )
            for f in ("config.json", "tokenizer.json", "pairuni_model.json"):
                if not os.path.isfile(os.path.join(self.source_dir, f)):
                    continue
                shutil.copyfile(os.path.join(self.source_dir, f), os.path.join(path, f))
            return
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, os.path.join(path, "model.safetensors"))
        for f in os.listdir(self.source_dir):
            src = os.path.join(self.source_dir, f)
            if f == "vqvae":
                shutil.copytree(src, os.path.join(path, f), dirs_exist_ok=True)
            elif os.path.isfile(src) and not f.endswith(".safetensors") and f != "model.safetensors.index.json":
                shutil.copyfile(src, os.path.join(path, f))

    def describe(self) -> dict[str, Any]:
        lay = self.layout
        return {
            "family": self.family,
            "adapter": "dimoo",
            "capabilities": sorted(self.capabilities),
            "device": str(self.device),
            "autocast": str(self.amp).replace("torch.", "") if self.amp else "off",
            "source": "tiny" if self.tiny else "lumina-dimoo",
            "grid": list(self.grid),
            "image_size": list(self.codec.image_size),
            "codebook": lay.codebook,
            "vocab_size": lay.vocab_size,
            "special_ids": {
                k: getattr(lay, k)
                for k in ("mask", "newline", "boa", "eoa", "boi", "eoi", "uncond", "pad", "eos", "code_base")
            },
            "p_mask_prompt": self.opts.p_mask_prompt,
            "params_total": sum(p.numel() for p in self.model.parameters()),
            "params_trainable": sum(p.numel() for _, p in self.trainable_parameters()),
            "ref_model": "lora-base" if self.ref_is_base else self.ref_model is not None,
            "lora": self.lora.describe() if self.lora else None,
            "gradient_checkpointing": self.gradient_checkpointing,
        }


__all__ = ["DimooAdapter", "DimooCodeError", "IncompatibleCheckpoint", "load_upstream_model", "save_tiny_mdm"]
