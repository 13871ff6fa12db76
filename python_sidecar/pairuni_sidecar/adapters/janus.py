"""Janus / Janus-Pro adapter on transformers' ``JanusForConditionalGeneration`` (transformers >= 5.18).

Model directory contract: see ``adapters/README.md``. In short: ``from_pretrained(dir)`` loads the
model, ``AutoTokenizer.from_pretrained(dir)`` the tokenizer (pad/bos/eos set, ``<begin_of_image>`` and
``<end_of_image>`` known), image size and the number of image tokens come from ``config.vision_config``
(never the 576 hard-coded in ``JanusProcessor``), pixel mean/std from ``preprocessor_config.json``
(``image_mean``/``image_std``) or 0.5/0.5.

Rollouts are our own batched sampling loops with a KV cache, temperature-scaled full softmax (no
hidden top-k/top-p), so the recorded ``old_logp`` is exactly the behaviour distribution:

- und: left-padded ``[BOS] system/user text, <begin_of_image> IMG*N <end_of_image>, question,
  assistant tag`` -> K answers per item; tokens up to and including the first EOS are scored.
- gen: per trajectory a conditional row and (CFG) an unconditional row whose text is replaced by pad;
  ``z = u + w (c - u)``; the image head's full softmax of ``z / T``. ``gen_logp="cfg"`` (default) makes
  the training log-prob the same guided distribution; ``"cond"`` scores the conditional branch only
  (T2I-R1 parity) and then records old log-probs with a no-grad conditional forward.

Both loops run on the static-cache engine (``pairuni_sidecar/rollout/engine.py``: batched prefill, a
compilable one-token step, the same draws as the loops below) unless ``rollout_engine="reference"``
selects the dynamic-cache loops kept here as the reference its tests compare against.

Evaluation (``greedy_answers``, ``sample_images``) runs through the same two decoding loops
(``_und_decode``, ``_gen_decode``) as the rollouts; it only batches differently: prompts are grouped
by token length, so rows need no padding and positions match training exactly.

Teacher-forced recomputation runs one forward over ``[prompt ; outputs]``: the hidden state at the
last prompt position predicts output token 0, so logits are taken at positions ``P-1 .. P+L-2``
(``logits_to_keep = L + 1`` and the last one dropped).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ..contract.generated import JanusGenOptions, JanusLoadOptions, JanusUndOptions
from ..errors import BadRequest, NonFiniteError
from ..rollout.engine import StaticDecoder, cfg_mix
from .base import (
    ANY_VALUE,
    GENERIC_FIELDS,
    AdapterConfigError,
    CheckpointNotFound,
    GenItem,
    ImageReadError,
    LoadSpec,
    PolicyAdapter,
    RolloutBatch,
    SamplingCfg,
    SFTExample,
    UndItem,
    disable_dropout,
    resolve_autocast,
    resolve_device,
    store_frozen,
)
from .lora import LoRA, lora_base_is_reference, select_targets, within_blocks


#: named parameter groups for ``LoadSpec.train_modules`` (raw parameter-name prefixes are accepted too)
MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "language_model": ("model.language_model.", "lm_head."),
    "vision": ("model.vision_model.", "model.aligner."),
    "gen_head": ("model.generation_head.",),
    "gen_embed": ("model.generation_embeddings.", "model.generation_aligner."),
    "vqmodel": ("model.vqmodel.",),
}


#: decode steps between checks for a non-finite distribution in the image sampler (each check syncs)
_GEN_CHECK_EVERY = 32

#: System prompts of an unset ``und_system_prompt`` / ``gen_system_prompt``: Janus' VLChatProcessor.system_prompt
#: for understanding (janus/models/processing_vlm.py:78-82, = transformers' DEFAULT_SYSTEM_PROMPT), none for
#: generation (generation_inference.py:49). A model's config.json may pin its own (``pairuni_system_prompts``).
UPSTREAM_SYSTEM_PROMPTS = {
    "und": "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language.",
    "gen": "",
}


def _check_model_dir(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise AdapterConfigError(f"{what}: a model directory path is required")
    if not os.path.isdir(path):
        raise CheckpointNotFound(f"{what}: model directory {path!r} does not exist")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointNotFound(f"{what}: {path!r} has no config.json (not a from_pretrained directory)")
    if not any(f.endswith((".safetensors", ".bin")) for f in os.listdir(path)):
        raise CheckpointNotFound(f"{what}: {path!r} has no weight files (*.safetensors / *.bin)")


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _mask_through_eos(out: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True for tokens up to and including the first EOS of each row (all tokens if no EOS)."""
    is_eos = out == eos_id
    before = is_eos.long().cumsum(-1) - is_eos.long()  # number of EOS strictly before each position
    return before == 0


def _length_buckets(seqs: list[list[int]]) -> list[list[int]]:
    """Indices of ``seqs`` grouped by length (shortest first), each group in input order."""
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        by_len[len(s)].append(i)
    return [by_len[k] for k in sorted(by_len)]


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """``log_softmax(logits)[ids]`` in fp32, row chunk by row chunk (vocab-wide logits are big)."""
    out = []
    for i in range(0, logits.shape[0], chunk):
        lg = logits[i : i + chunk].float()
        out.append(lg.gather(-1, ids[i : i + chunk].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, -1))
    return torch.cat(out, 0)


class JanusAdapter(PolicyAdapter):
    family = "ar"
    capabilities = frozenset({"und_rollout", "gen_rollout", "logprobs_und", "logprobs_gen", "sft", "cfg", "ref_model"})
    name = "janus"
    # Every generic field; log-probs are exact, so any est_seeds give the same (unseeded) estimate.
    honours = {f"{side}.{f}": ANY_VALUE for side, fields in GENERIC_FIELDS.items() for f in fields}

    def __init__(self, spec: LoadSpec) -> None:
        try:
            from transformers import AutoTokenizer, JanusForConditionalGeneration
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise AdapterConfigError(
                f"the janus adapter needs transformers>=5.18 with JanusForConditionalGeneration ({e}); "
                "pip install 'pairuni-sidecar[janus]'"
            ) from None
        hf_logging.disable_progress_bar()  # the sidecar's stderr is a log, not a terminal
        self._cls = JanusForConditionalGeneration
        self.spec = spec
        _check_model_dir(spec.model_dir, "model")
        self.source_dir = os.path.abspath(spec.model_dir)
        self.device = resolve_device(spec.device)
        self.amp = resolve_autocast(spec.autocast, self.device)
        self._set_options(spec.options)

        self.model = self._load_model(spec.model_dir)
        try:
            self.tok = AutoTokenizer.from_pretrained(spec.model_dir)
        except Exception as e:  # noqa: BLE001 - surfaced as a typed error naming the directory
            raise CheckpointNotFound(
                f"model: no usable tokenizer in {spec.model_dir!r} ({type(e).__name__}: {e})"
            ) from None
        self._read_geometry(spec.model_dir)
        self._set_trainable(spec.train_modules)
        self._add_lora()
        store_frozen(self.model, self.amp)
        self.gradient_checkpointing = bool(spec.gradient_checkpointing)
        if self.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.ref_model = None
        self.ref_is_base = bool(spec.ref_model_dir) and lora_base_is_reference(self.lora, spec)
        if spec.ref_model_dir and not self.ref_is_base:
            _check_model_dir(spec.ref_model_dir, "reference model")
            self.ref_model = self._load_model(spec.ref_model_dir, dtype=self.amp or torch.float32)
            self.ref_model.requires_grad_(False)
        self.train_mode(False)

    @classmethod
    def from_model(cls, model, tok, *, options: dict[str, Any] | None = None) -> "JanusAdapter":
        """Wrap an in-memory ``JanusForConditionalGeneration`` + tokenizer (e.g. mid-pretraining) for
        inference: prompt ids, rollouts, ``greedy_answers``, ``sample_images``. Nothing of the model is
        changed (no dropout zeroing, no ``requires_grad`` changes); fp32 on the model's device, pixels
        normalised with 0.5/0.5, no reference model."""
        self = cls.__new__(cls)
        self.spec = None
        self.source_dir = None
        self.device = next(model.parameters()).device
        self.amp = None
        self._set_options(options)
        self.model, self.tok = model, tok
        self._read_geometry("<in-memory model>")
        self.train_modules = ()
        self.lora = None
        self._vision_trainable = any(
            p.requires_grad for n, p in model.named_parameters() if n.startswith(MODULE_GROUPS["vision"])
        )
        self.gradient_checkpointing = False
        self.ref_model = None
        return self

    # -- loading ---------------------------------------------------------------------------------
    def _set_options(self, options: dict[str, Any] | None) -> None:
        o = JanusLoadOptions.from_wire(dict(options or {}), where="janus model.options")
        self.opts = o
        self.und_template, self.gen_template = o.und_template, o.gen_template
        self.system_prompts = {"und": o.und_system_prompt, "gen": o.gen_system_prompt}
        self.detach_uncond = o.detach_uncond
        self.rollout_engine = o.rollout_engine
        self.rollout_compile = o.rollout_compile == "on" or (o.rollout_compile == "auto" and self.device.type == "cuda")
        self._decoders: dict[tuple[str, bool], StaticDecoder] = {}
        if self.und_template.count("{image}") != 1 or "{question}" not in self.und_template:
            raise AdapterConfigError("janus: und_template must contain '{image}' once and '{question}'")
        if "{prompt}" not in self.gen_template:
            raise AdapterConfigError("janus: gen_template must contain '{prompt}'")

    def _load_model(self, path: str, dtype: torch.dtype = torch.float32):
        try:
            model = self._cls.from_pretrained(path, dtype=dtype)
        except Exception as e:  # noqa: BLE001
            raise CheckpointNotFound(
                f"cannot load JanusForConditionalGeneration from {path!r}: {type(e).__name__}: {e}"
            ) from None
        disable_dropout(model)
        return model.to(self.device).eval()

    def _read_geometry(self, path: str) -> None:
        cfg = self.model.config
        vc, qc = cfg.vision_config, cfg.vq_config
        vocab = cfg.text_config.vocab_size
        tok = self.tok

        def special(name: str, value: int | None) -> int:
            if (
                value is None
                or value < 0
                or value >= vocab
                or (tok.unk_token_id is not None and value == tok.unk_token_id and name != "unk")
            ):
                raise AdapterConfigError(
                    f"model dir {path!r}: tokenizer has no usable {name} token (got {value}); "
                    "see adapters/README.md for the special-token contract"
                )
            return int(value)

        self.pad_id = special("pad", tok.pad_token_id)
        self.bos_id = special("bos", tok.bos_token_id)
        self.eos_id = special("eos", tok.eos_token_id)
        self.boi_id = special("<begin_of_image>", tok.convert_tokens_to_ids("<begin_of_image>"))
        self.eoi_id = special("<end_of_image>", tok.convert_tokens_to_ids("<end_of_image>"))
        self.img_id = special("image_token_id (config)", cfg.image_token_id)
        size = vc.image_size if isinstance(vc.image_size, int) else int(vc.image_size[0])
        self.image_size = int(size)
        self.num_image_tokens = int(vc.num_image_tokens)
        self.codebook = int(qc.num_embeddings)
        self.vq_grid = int(qc.num_patches)
        if self.vq_grid * self.vq_grid != self.num_image_tokens:
            raise AdapterConfigError(
                f"model dir {path!r}: vision_config.num_image_tokens={self.num_image_tokens} but the VQ "
                f"grid is {self.vq_grid}x{self.vq_grid}; they must agree"
            )
        self.vq_image_size = self.vq_grid * 2 ** (len(qc.channel_multiplier) - 1)
        mean, std = [0.5] * 3, [0.5] * 3
        pp = os.path.join(path, "preprocessor_config.json")
        if os.path.isfile(pp):
            with open(pp) as f:
                d = json.load(f)
            mean = list(d.get("image_mean", mean))
            std = list(d.get("image_std", std))
        self.image_mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def _set_trainable(self, modules: tuple[str, ...] | list[str]) -> None:
        if not modules:
            raise AdapterConfigError("train_modules is empty: nothing would train")
        prefixes: list[str] = []
        names = [n for n, _ in self.model.named_parameters()]
        for m in modules:
            if m in MODULE_GROUPS:
                prefixes.extend(MODULE_GROUPS[m])
            elif any(n.startswith(m) for n in names):
                prefixes.append(m)
            else:
                raise AdapterConfigError(
                    f"train_modules: {m!r} is neither a group {sorted(MODULE_GROUPS)} "
                    "nor a parameter-name prefix of this model"
                )
        for n, p in self.model.named_parameters():
            p.requires_grad_(any(n.startswith(x) for x in prefixes))
        self.train_modules = tuple(modules)
        self._vision_trainable = any(
            p.requires_grad for n, p in self.model.named_parameters() if n.startswith(MODULE_GROUPS["vision"])
        )

    def _add_lora(self) -> None:
        """With ``lora_rank`` > 0: LoRA factors (``adapters/lora.py``) on the selected modules' Linear layers
        that ``lora_targets`` names (default: the LLM decoder layers' attention and MLP projections); they
        alone train, every base weight is frozen."""
        self.lora = None
        o = self.opts
        if o.lora_rank == 0:
            return
        selected = {n for n, p in self.model.named_parameters() if p.requires_grad}
        targets = select_targets(
            self.model,
            who="janus",
            selected=selected,
            targets=list(o.lora_targets),
            default=within_blocks(r"language_model\.layers"),
            default_what="q/k/v/o and gate/up/down projections of the LLM's decoder layers",
        )
        self.model.requires_grad_(False)
        self.lora = LoRA(targets, rank=o.lora_rank, alpha=o.lora_alpha, device=self.device)
        # image features need a graph only when a vision module carries factors
        self._vision_trainable = any(n.startswith(MODULE_GROUPS["vision"]) for n in self.lora)

    # -- small helpers ---------------------------------------------------------------------------
    def _recompute_old(self, s: SamplingCfg) -> bool:
        return s.old_logp == "recompute" or (s.old_logp == "auto" and self.amp is not None)

    def _enc(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def _system(self, side: str) -> str:
        sp = self.system_prompts[side]
        if sp is None:  # unset: what the model's config pins (the tiny models: none), else upstream's
            sp = (getattr(self.model.config, "pairuni_system_prompts", None) or UPSTREAM_SYSTEM_PROMPTS)[side]
        return f"{sp}\n\n" if sp else ""  # the DeepSeek conversation format: system + sep "\n\n"

    def und_prompt_ids(self, question: str) -> list[int]:
        pre, post = self.und_template.split("{image}")
        sys_ = self._system("und")
        pre = pre.replace("{system}", sys_).replace("{question}", question)
        post = post.replace("{system}", sys_).replace("{question}", question)
        return (
            [self.bos_id]
            + self._enc(pre)
            + [self.boi_id]
            + [self.img_id] * self.num_image_tokens
            + [self.eoi_id]
            + self._enc(post)
        )

    def gen_prompt_ids(self, prompt: str) -> list[int]:
        text = self.gen_template.replace("{system}", self._system("gen")).replace("{prompt}", prompt)
        return [self.bos_id] + self._enc(text) + [self.boi_id]

    def pixels(self, paths: list[str], size: int | None = None, mean=None, std=None) -> torch.Tensor:
        """Load images as (I, 3, S, S) float: pad to square (mean colour), resize, normalise."""
        from PIL import Image

        arrs = []
        for p in paths:
            if not os.path.isfile(p):
                raise ImageReadError(f"image file {p!r} does not exist")
            try:
                with Image.open(p) as im:
                    arrs.append(self._square(im.convert("RGB"), size, mean))
            except (OSError, ValueError) as e:
                raise ImageReadError(f"cannot decode image {p!r}: {e}") from None
        return self._normalize(np.stack(arrs), mean, std)

    def pixels_from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """In-memory uint8 images (B, H, W, 3) -> (B, 3, S, S) float, exactly as ``pixels`` would load
        the same images from PNG files."""
        from PIL import Image

        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise BadRequest(f"images must be uint8 (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        return self._normalize(
            np.stack([self._square(Image.fromarray(a), None, None) for a in images.cpu().numpy()]), None, None
        )

    def _square(self, im, size: int | None, mean) -> np.ndarray:
        """An RGB PIL image padded to a square with the mean colour and resized: uint8 (S, S, 3)."""
        from PIL import Image

        size = size or self.image_size
        mean = self.image_mean if mean is None else mean
        bg = tuple(int(round(float(m) * 255)) for m in mean.flatten())
        w, h = im.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), bg)
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        return np.asarray(canvas.resize((size, size), Image.Resampling.BICUBIC))

    def _normalize(self, arrs: np.ndarray, mean, std) -> torch.Tensor:
        mean = self.image_mean if mean is None else mean
        std = self.image_std if std is None else std
        x = torch.from_numpy(arrs.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        return ((x - mean) / std).to(self.device)

    def _image_features(self, model, pix: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return model.model.get_image_features(pix.to(self.device)).pooler_output.float()

    def _und_embeds(self, model, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        e = model.get_input_embeddings()(ids)
        m = (ids == self.img_id).unsqueeze(-1)
        return e.masked_scatter(m, feats.to(e.dtype).reshape(-1, e.shape[-1]))

    def train_mode(self, on: bool) -> None:
        # Dropout is zeroed at load, so train() only switches gradient checkpointing on.
        self.model.train(bool(on) and self.gradient_checkpointing)

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        own = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return own + (self.lora.named_parameters() if self.lora else [])

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The LoRA factors (trainable parameters outside the module tree), if any."""
        return self.lora.state() if self.lora else {}

    def _non_finite(self, side: str, bad: torch.Tensor, first_step: int) -> NonFiniteError:
        """The error for decoding rows whose next-token distribution was NaN/inf: it names the model."""
        rows = bad.nonzero().flatten().tolist()
        # a resumed policy's weights come from its checkpoint, not from the base model directory
        where = getattr(self, "loaded_from", None) or self.source_dir or "<in-memory model>"
        what = "answer" if side == "und" else "image"
        return NonFiniteError(
            f"janus {side}: the model loaded from {where!r} gives NaN/inf {what}-token probabilities "
            f"(rows {rows[:8]}{' ...' if len(rows) > 8 else ''}, from decode step {first_step}); its weights "
            "are probably not finite (a corrupt or diverged checkpoint)",
            detail={"model": where, "side": side, "rows": rows, "step": first_step},
        )

    # -- understanding ---------------------------------------------------------------------------
    def _decoder(self, side: str, compiled: bool) -> StaticDecoder:
        """The static-cache engine for one side: the LM with the answer head (``und``) or the image head
        and generation embeddings (``gen``). Rollouts keep one batch geometry for a whole run, so their
        compiled step is traced once; evaluation batches vary (length buckets, last chunks), so evaluation
        runs the eager step rather than recompiling for each geometry."""
        compiled = compiled and self.rollout_compile
        if (side, compiled) not in self._decoders:
            m = self.model
            if side == "und":
                head, embed = m.lm_head, m.get_input_embeddings()
            else:
                head, embed = m.model.generation_head, m.prepare_embeddings_for_image_generation
            self._decoders[side, compiled] = StaticDecoder(
                m.model.language_model, m.config.text_config, head=head, embed_next=embed, compile=compiled
            )
        return self._decoders[side, compiled]

    def _und_decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        feats: torch.Tensor,
        steps: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        rollout: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The Janus text decoder (contract: ``_und_decode_reference``) on the configured rollout engine
        (``rollout=False``: an evaluation batch, never the compiled step)."""
        if self.rollout_engine == "reference":
            return self._und_decode_reference(ids, mask, feats, steps, temperature=temperature, generator=generator)
        with self._autocast():
            emb = self._und_embeds(self.model, ids, feats)
        d = self._decoder("und", rollout).run(
            emb,
            mask,
            steps,
            temperature=temperature,
            generator=generator,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            autocast=self._autocast,
            amp_dtype=self.amp,
        )
        if bool(d.bad.any()):
            raise self._non_finite("und", d.bad, int(d.first_bad.min()))
        return d.tokens, (d.logp if generator is not None else None)

    def _und_decode_reference(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        feats: torch.Tensor,
        steps: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The Janus text decoder: answers to prompt ids (B, P) whose image placeholders take ``feats``.

        ``mask`` is the left-padding mask, or None for rows of one length (no padding: positions are
        the defaults). With a ``generator`` each token is drawn from the full softmax of
        ``logits / temperature`` and its log-prob is returned; without one decoding is greedy (argmax
        of the logits) and the log-probs are None. Tokens after a row's first EOS are pad; decoding
        stops early once every row has produced an EOS. Returns (tokens (B, L), log-probs (B, L)).
        A row whose distribution (logits when greedy) is not finite raises NonFiniteError naming the model.
        """
        from transformers import DynamicCache

        model = self.model
        lm = model.model.language_model
        B = ids.shape[0]
        cache = DynamicCache(config=model.config.text_config)
        pos = None if mask is None else _positions(mask)
        toks, lps = [], []
        finished = torch.zeros(B, dtype=torch.bool, device=self.device)
        bad = torch.zeros(B, dtype=torch.bool, device=self.device)
        first_bad = torch.full((B,), int(steps), dtype=torch.long, device=self.device)
        with self._autocast():
            h = lm(
                inputs_embeds=self._und_embeds(model, ids, feats),
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state[:, -1]
            for t in range(int(steps)):
                logits = model.lm_head(h).float()
                if generator is None:
                    ok = torch.isfinite(logits).all(-1)
                else:
                    z = logits / temperature
                    probs = torch.softmax(z, -1)
                    ok = torch.isfinite(probs).all(-1)
                new_bad = ~ok & ~finished & ~bad
                first_bad = torch.where(new_bad, torch.full_like(first_bad, t), first_bad)
                bad |= new_bad
                if generator is None:
                    tok = logits.argmax(-1)
                else:
                    # multinomial refuses NaN (on CUDA by a device-side assert): sample such rows
                    # uniformly, then fail below with an error that names the model.
                    probs = torch.where(ok.unsqueeze(-1), probs, torch.ones_like(probs))
                    tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                    lp = torch.log_softmax(z, -1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
                    lps.append(torch.where(finished, torch.zeros_like(lp), lp))
                tok = torch.where(finished, torch.full_like(tok, self.pad_id), tok)
                toks.append(tok)
                finished |= tok == self.eos_id
                if bool((finished | bad).all()):  # the loop syncs here anyway; no extra check per step
                    break
                if mask is not None:
                    mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=self.device)], 1)
                    pos = pos[:, -1:] + 1
                h = lm(
                    inputs_embeds=model.get_input_embeddings()(tok.unsqueeze(1)),
                    attention_mask=mask,
                    position_ids=pos,
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state[:, -1]
        if bool(bad.any()):
            raise self._non_finite("und", bad, int(first_bad.min()))
        return torch.stack(toks, 1), (torch.stack(lps, 1).float() if generator is not None else None)

    def _answer_texts(self, out: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Decoded answers (tokens before the first EOS, special tokens dropped) and the scored mask."""
        out_mask = _mask_through_eos(out, self.eos_id)
        texts = []
        for row, m in zip(out.tolist(), out_mask.tolist()):
            keep = [t for t, k in zip(row, m) if k and t != self.eos_id]
            texts.append(self.tok.decode(keep, skip_special_tokens=True))
        return texts, out_mask

    @torch.no_grad()
    def und_rollout(self, items: list[UndItem], n: int, s: SamplingCfg) -> RolloutBatch:
        self.require("und_rollout")
        JanusUndOptions.from_wire(s.options, where="janus und.options")  # none yet: any name is unknown
        if not items or n < 1:
            raise BadRequest(f"und_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        model = self.model
        pix = self.pixels([it.image_path for it in items])
        feats = self._image_features(model, pix)  # (I, N, H)
        group = torch.arange(len(items)).repeat_interleave(n)
        prompts = [self.und_prompt_ids(it.text) for it in items]
        ids, pmask = _left_pad([prompts[g] for g in group.tolist()], self.pad_id)
        ids, pmask = ids.to(self.device), pmask.to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(int(s.seed))
        out, lps = self._und_decode(
            ids, pmask, feats[group.to(self.device)], s.max_new_tokens, temperature=s.temperature, generator=gen
        )
        texts, out_mask = self._answer_texts(out)
        B = ids.shape[0]
        batch = RolloutBatch(
            side="und",
            group=group,
            out_ids=out,
            out_mask=out_mask,
            old_logp=lps * out_mask,
            prompts=[it.text for it in items],
            texts=texts,
            extra={
                "prompt_ids": ids,
                "prompt_mask": pmask,
                "feats": feats,
                "pixels": pix,
                "temperature": float(s.temperature),
            },
        )
        if self._recompute_old(s):
            batch.old_logp = self.token_logprobs(batch, torch.arange(B), est_seed=0, grad=False)[0].detach()
        return batch

    def greedy_answers(
        self, images: torch.Tensor, texts: list[str], *, max_new_tokens: int = 16, max_rows: int = 128
    ) -> list[str]:
        """Greedy answers for uint8 images (B, H, W, 3) and user texts (the template's ``{question}``):
        ``greedy_tokens`` decoded, special tokens dropped."""
        return [
            self.tok.decode(t, skip_special_tokens=True)
            for t in self.greedy_tokens(images, texts, max_new_tokens=max_new_tokens, max_rows=max_rows)
        ]

    @torch.no_grad()
    def greedy_tokens(
        self, images: torch.Tensor, texts: list[str], *, max_new_tokens: int = 16, max_rows: int = 128
    ) -> list[list[int]]:
        """Greedy answer token ids per item, up to (not including) the first EOS.

        Prompts are batched only with prompts of the same token length (at most ``max_rows`` rows), so
        rows need no padding and positions match training exactly.
        """
        if len(texts) != images.shape[0]:
            raise BadRequest(f"greedy answers: {images.shape[0]} images but {len(texts)} texts")
        if int(max_new_tokens) < 1:
            raise BadRequest(f"greedy answers: max_new_tokens must be >= 1, got {max_new_tokens}")
        ids = [self.und_prompt_ids(t) for t in texts]
        answers: list[list[int]] = [[] for _ in ids]
        for members in _length_buckets(ids):
            for s in range(0, len(members), max_rows):
                chunk = members[s : s + max_rows]
                x = torch.tensor([ids[i] for i in chunk], device=self.device)
                feats = self._image_features(self.model, self.pixels_from_uint8(images[chunk]))
                out, _ = self._und_decode(x, None, feats, max_new_tokens, rollout=False)
                keep = _mask_through_eos(out, self.eos_id)
                for j, i in enumerate(chunk):
                    answers[i] = [t for t, k in zip(out[j].tolist(), keep[j].tolist()) if k and t != self.eos_id]
        return answers

    def _und_logp(self, model, ids, pmask, feats, out, T: float) -> torch.Tensor:
        L = out.shape[1]
        emb = torch.cat([self._und_embeds(model, ids, feats), model.get_input_embeddings()(out)], 1)
        mask = torch.cat([pmask, torch.ones_like(out)], 1)
        with self._autocast():
            logits = model(
                inputs_embeds=emb,
                attention_mask=mask,
                position_ids=_positions(mask),
                use_cache=False,
                logits_to_keep=L + 1,
            ).logits[:, :-1]
        return selective_log_softmax(logits.float() / T, out)

    # -- generation ------------------------------------------------------------------------------
    def _gen_rows(self, cond: list[list[int]], cfg: bool) -> list[list[int]]:
        """Per trajectory its conditional row and, with CFG, the unconditional row right after it
        (BOS and BOI kept, the text between them replaced by pads)."""
        rows: list[list[int]] = []
        for c in cond:
            rows.append(c)
            if cfg:
                rows.append([c[0]] + [self.pad_id] * (len(c) - 2) + [c[-1]])
        return rows

    def _gen_decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        w: float,
        T: float,
        cfg: bool,
        generator: torch.Generator,
        logp: bool,
        rollout: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The Janus image sampler (contract: ``_gen_decode_reference``) on the configured rollout engine
        (``rollout=False``: an evaluation batch, never the compiled step)."""
        if self.rollout_engine == "reference":
            return self._gen_decode_reference(ids, mask, w=w, T=T, cfg=cfg, generator=generator, logp=logp)
        d = self._decoder("gen", rollout).run(
            self.model.get_input_embeddings()(ids),
            mask,
            self.num_image_tokens,
            rows_per_sample=2 if cfg else 1,
            cfg_weight=w,
            temperature=T,
            generator=generator,
            check_every=_GEN_CHECK_EVERY,
            autocast=self._autocast,
            amp_dtype=self.amp,
        )
        if bool(d.bad.any()):
            raise self._non_finite("gen", d.bad, int(d.first_bad.min()))
        return d.tokens, (d.logp if logp else None)

    def _gen_decode_reference(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        w: float,
        T: float,
        cfg: bool,
        generator: torch.Generator,
        logp: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The Janus image sampler: VQ codes (B, N) for the rows of ``_gen_rows`` (B * R, P), R = 2 with CFG.

        Each step draws from the full softmax of ``z / T`` over the generation head, ``z = u + w (c - u)``
        with CFG (rows c0, u0, c1, u1, ...), else the conditional logits; with ``logp`` also returns the
        drawn codes' log-probs under that distribution. ``mask`` is the left-padding mask, or None for
        rows of one length (no padding: positions are the defaults). A non-finite distribution raises
        NonFiniteError naming the model (checked every ``_GEN_CHECK_EVERY`` steps and at the end).
        """
        from transformers import DynamicCache

        model = self.model
        lm, head = model.model.language_model, model.model.generation_head
        R = 2 if cfg else 1
        BR, N = ids.shape[0], self.num_image_tokens
        cache = DynamicCache(config=model.config.text_config)
        pos = None if mask is None else _positions(mask)
        toks, lps = [], []
        bad = torch.zeros(BR // R, dtype=torch.bool, device=self.device)
        first_bad = torch.full_like(bad, N, dtype=torch.long)
        with self._autocast():
            h = lm(
                inputs_embeds=model.get_input_embeddings()(ids),
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state[:, -1]
            for t in range(N):
                lg = head(h).float()
                z = (cfg_mix(lg, w) if cfg else lg) / T
                probs = torch.softmax(z, -1)
                ok = torch.isfinite(probs).all(-1)
                first_bad = torch.where(~ok & ~bad, torch.full_like(first_bad, t), first_bad)
                bad |= ~ok
                # multinomial refuses NaN (on CUDA by a device-side assert): sample such rows uniformly,
                # then fail with an error that names the model.
                probs = torch.where(ok.unsqueeze(-1), probs, torch.ones_like(probs))
                tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                toks.append(tok)
                if logp:
                    lps.append(torch.log_softmax(z, -1).gather(-1, tok.unsqueeze(-1)).squeeze(-1))
                if t == N - 1 or ((t + 1) % _GEN_CHECK_EVERY == 0 and bool(bad.any())):
                    break
                if mask is not None:
                    mask = torch.cat([mask, torch.ones((BR, 1), dtype=mask.dtype, device=self.device)], 1)
                    pos = pos[:, -1:] + 1
                e = model.prepare_embeddings_for_image_generation(tok.repeat_interleave(R, 0)).unsqueeze(1)
                h = lm(
                    inputs_embeds=e, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
                ).last_hidden_state[:, -1]
        if bool(bad.any()):
            raise self._non_finite("gen", bad, int(first_bad.min()))
        return torch.stack(toks, 1), (torch.stack(lps, 1).float() if logp else None)

    @torch.no_grad()
    def gen_rollout(self, items: list[GenItem], n: int, s: SamplingCfg) -> RolloutBatch:
        self.require("gen_rollout")
        JanusGenOptions.from_wire(s.options, where="janus gen.options")
        if not items or n < 1:
            raise BadRequest(f"gen_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        cfg = float(s.cfg_weight) != 1.0
        R = 2 if cfg else 1
        group = torch.arange(len(items)).repeat_interleave(n)
        cond = [self.gen_prompt_ids(it.prompt) for it in items]
        ids, pmask = _left_pad(self._gen_rows([cond[g] for g in group.tolist()], cfg), self.pad_id)
        ids, pmask = ids.to(self.device), pmask.to(self.device)
        B, w, T = len(group), float(s.cfg_weight), float(s.temperature)
        gen = torch.Generator(device=self.device).manual_seed(int(s.seed))
        out, lps = self._gen_decode(ids, pmask, w=w, T=T, cfg=cfg, generator=gen, logp=True)
        batch = RolloutBatch(
            side="gen",
            group=group,
            out_ids=out,
            out_mask=torch.ones_like(out, dtype=torch.bool),
            old_logp=lps,
            prompts=[it.prompt for it in items],
            images=self.decode_images(out),
            extra={
                "prompt_ids": ids.view(B, R, -1),
                "prompt_mask": pmask.view(B, R, -1),
                "cfg_weight": w,
                "temperature": T,
                "gen_logp": s.logp,
            },
        )
        if s.logp == "cond" or self._recompute_old(s):
            batch.old_logp = self.token_logprobs(batch, torch.arange(B), est_seed=0, grad=False)[0].detach()
        return batch

    @torch.no_grad()
    def sample_images(
        self,
        prompts: list[str],
        n: int,
        *,
        cfg_weight: float,
        temperature: float,
        seed: int,
        max_rows: int = 128,
        decode_chunk: int = 256,
    ) -> torch.Tensor:
        """``n`` images per prompt, prompt-major, uint8 (P * n, H, W, 3), reproducible from ``seed``:
        ``sample_codes`` decoded ``decode_chunk`` codes per decoder call (256, as the ShapesWorld
        evaluation always decoded: the VQ decoder's convolutions round differently at other batch
        sizes, e.g. chunks of 8 move a few pixels by 1)."""
        codes = self.sample_codes(
            prompts, n, cfg_weight=cfg_weight, temperature=temperature, seed=seed, max_rows=max_rows
        )
        return self.decode_images(codes, chunk=decode_chunk)

    @torch.no_grad()
    def sample_codes(
        self,
        prompts: list[str],
        n: int,
        *,
        cfg_weight: float,
        temperature: float,
        seed: int,
        max_rows: int = 128,
        return_logp: bool = False,
    ):
        """``n`` VQ code sequences per prompt, prompt-major (P * n, N) int64 on the CPU, plus their
        log-probs under the sampling distribution (P * n, N) if ``return_logp``.

        The rollout sampler (``_gen_decode``) on prompts batched only with prompts of the same token
        length (at most ``max_rows`` rows, CFG rows included), so rows need no padding and positions
        match training exactly; one generator runs through the batches, shortest prompts first.
        """
        if not prompts or n < 1:
            raise BadRequest(f"sample_codes needs at least one prompt and n >= 1 (got {len(prompts)} prompts, n={n})")
        if not (float(temperature) > 0 and np.isfinite(float(temperature))) or not np.isfinite(float(cfg_weight)):
            raise BadRequest(
                f"sample_codes: temperature must be finite and > 0 and cfg_weight finite "
                f"(got {temperature}, {cfg_weight})"
            )
        cfg = float(cfg_weight) != 1.0
        ids = [self.gen_prompt_ids(p) for p in prompts]
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        codes = torch.zeros(len(prompts) * n, self.num_image_tokens, dtype=torch.long)
        logp = torch.zeros(len(prompts) * n, self.num_image_tokens)
        per_chunk = max(1, max_rows // ((2 if cfg else 1) * n))
        for members in _length_buckets(ids):
            for s in range(0, len(members), per_chunk):
                chunk = members[s : s + per_chunk]
                rows = self._gen_rows([ids[i] for i in chunk for _ in range(n)], cfg)
                out, lp = self._gen_decode(
                    torch.tensor(rows, device=self.device),
                    None,
                    w=float(cfg_weight),
                    T=float(temperature),
                    cfg=cfg,
                    generator=gen,
                    logp=return_logp,
                    rollout=False,
                )
                for j, i in enumerate(chunk):
                    codes[i * n : (i + 1) * n] = out[j * n : (j + 1) * n].cpu()
                    if return_logp:
                        logp[i * n : (i + 1) * n] = lp[j * n : (j + 1) * n].cpu()
        return (codes, logp) if return_logp else codes

    @torch.no_grad()
    def decode_images(self, codes: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """VQ codes (B, N) -> uint8 images (B, H, W, 3) on the CPU."""
        outs = []
        for i in range(0, codes.shape[0], chunk):
            with self._autocast():
                x = self.model.decode_image_tokens(codes[i : i + chunk].to(self.device)).float()
            outs.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
        return torch.cat(outs, 0)

    def _gen_logp(self, model, ids, pmask, codes, *, w: float, T: float, mode: str, grad: bool) -> torch.Tensor:
        """ids/pmask (b, R, P); codes (b, N). Guided (``cfg``) or conditional (``cond``) image log-probs."""
        b, R, P = ids.shape
        lm, head = model.model.language_model, model.model.generation_head

        def branch(rows_ids, rows_mask, rows_codes):
            emb = torch.cat(
                [model.get_input_embeddings()(rows_ids), model.prepare_embeddings_for_image_generation(rows_codes)], 1
            )
            mask = torch.cat([rows_mask, torch.ones_like(rows_codes)], 1)
            with self._autocast():
                hs = lm(
                    inputs_embeds=emb, attention_mask=mask, position_ids=_positions(mask), use_cache=False
                ).last_hidden_state
                return head(hs[:, P - 1 : -1]).float()

        if mode == "cond" or R == 1:
            z = branch(ids[:, 0], pmask[:, 0], codes)
        elif self.detach_uncond and grad:
            c = branch(ids[:, 0], pmask[:, 0], codes)
            with torch.no_grad():
                u = branch(ids[:, 1], pmask[:, 1], codes)
            z = u + w * (c - u)
        else:
            lg = branch(ids.reshape(b * R, P), pmask.reshape(b * R, P), codes.repeat_interleave(R, 0))
            c, u = lg[0::2], lg[1::2]
            z = u + w * (c - u)
        return selective_log_softmax(z / T, codes)

    # -- scoring ---------------------------------------------------------------------------------
    def token_logprobs(
        self, batch: RolloutBatch, rows: torch.Tensor, *, est_seed: int, grad: bool, ref: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        del est_seed  # autoregressive: exact teacher-forced log-probs, no estimator randomness
        self.require(f"logprobs_{batch.side}")
        if ref and self.ref_model is None and not self.ref_is_base:
            raise AdapterConfigError("reference log-probs requested but no reference model is loaded (ref_model_dir)")
        model = self.ref_model if ref and self.ref_model is not None else self.model
        rows = rows.to(torch.long)
        out = batch.out_ids[rows].to(self.device)
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx, self.lora.disabled() if ref and self.ref_is_base else contextlib.nullcontext():
            x = batch.extra
            if batch.side == "und":
                grp = batch.group[rows].to(self.device)
                if self._vision_trainable or ref:
                    feats = self._image_features(model, x["pixels"][grp])
                else:
                    feats = x["feats"][grp]
                logp = self._und_logp(
                    model,
                    x["prompt_ids"][rows.to(self.device)],
                    x["prompt_mask"][rows.to(self.device)],
                    feats,
                    out,
                    x["temperature"],
                )
            else:
                r = rows.to(self.device)
                logp = self._gen_logp(
                    model,
                    x["prompt_ids"][r],
                    x["prompt_mask"][r],
                    out,
                    w=x["cfg_weight"],
                    T=x["temperature"],
                    mode=x["gen_logp"],
                    grad=grad,
                )
        mask = batch.out_mask[rows].to(self.device)
        return logp * mask, mask

    def sft_loss(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        self.require("sft")
        if not examples:
            raise BadRequest("sft_loss needs at least one example")
        model, res = self.model, {}
        und = [e for e in examples if e.side == "und"]
        gen = [e for e in examples if e.side == "gen"]
        bad = [e.side for e in examples if e.side not in ("und", "gen")]
        if bad:
            raise BadRequest(f"sft example side must be 'und' or 'gen', got {bad[0]!r}")
        if und:
            ids, pmask = _left_pad([self.und_prompt_ids(e.text) for e in und], self.pad_id)
            tgt = [self._enc(e.target) + [self.eos_id] for e in und]
            L = max(len(t) for t in tgt)
            out = torch.full((len(und), L), self.pad_id, dtype=torch.long)
            tmask = torch.zeros((len(und), L), dtype=torch.bool)
            for i, t in enumerate(tgt):
                out[i, : len(t)] = torch.tensor(t)
                tmask[i, : len(t)] = True
            feats = self._image_features(model, self.pixels([e.image_path for e in und]))
            if not self._vision_trainable:
                feats = feats.detach()
            logp = self._und_logp(model, ids.to(self.device), pmask.to(self.device), feats, out.to(self.device), 1.0)
            tmask = tmask.to(self.device)
            res["und"] = -(logp * tmask).sum() / tmask.sum()
        if gen:
            with torch.no_grad(), self._autocast():  # the frozen VQ may be stored in bf16
                pix = self.pixels(
                    [e.image_path for e in gen],
                    size=self.vq_image_size,
                    mean=torch.full((1, 3, 1, 1), 0.5),
                    std=torch.full((1, 3, 1, 1), 0.5),
                )
                codes = model.model.vqmodel.encode(pix).image_tokens.reshape(len(gen), -1)
            ids, pmask = _left_pad([self.gen_prompt_ids(e.text) for e in gen], self.pad_id)
            logp = self._gen_logp(
                model,
                ids.to(self.device).unsqueeze(1),
                pmask.to(self.device).unsqueeze(1),
                codes,
                w=1.0,
                T=1.0,
                mode="cond",
                grad=True,
            )
            res["gen"] = -logp.mean()
        return res

    # -- scale-out -------------------------------------------------------------------------------
    def shard(self) -> None:
        """FSDP2 over every submodule this adapter calls directly (``dist.shard``; world > 1 only):
        the decoder layers, the language model, its token embedding, the vision tower and aligner, the
        generation embedding/aligner/head, the VQ model (``decode``/``encode`` are called directly)
        and ``lm_head``, then the root. The frozen reference model is sharded the same way
        (``Policy.ref_logps`` runs the same number of passes on every rank)."""
        from .. import dist

        for m in (self.model, self.ref_model):
            if m is None:
                continue
            inner = m.model
            lm = inner.language_model
            mods = [
                *lm.layers,
                lm.embed_tokens,
                lm,
                inner.vision_model,
                inner.aligner,
                inner.generation_embeddings,
                inner.generation_aligner,
                inner.generation_head,
                inner.vqmodel,
                m.lm_head,
            ]
            dist.shard(
                mods,
                m,
                forward_methods=[(inner.vqmodel, "decode"), (inner.vqmodel, "encode")],
                offload=self.spec is not None and self.spec.cpu_offload,
            )  # from_model: no spec

    def gathered(self):
        """Full weights for a rollout (one all-gather, none inside the decode loop)."""
        from .. import dist

        return dist.gathered(self.model)

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, path: str, state_dict: dict | None = None, extra_state: dict | None = None) -> None:
        if self.lora:  # a plain model for from_pretrained: W + (alpha/r) B A
            state_dict = self.lora.merged(state_dict if state_dict is not None else self.model.state_dict())
        self.model.save_pretrained(path, state_dict=state_dict)
        self.tok.save_pretrained(path)
        # Sidecar files that describe how the model was trained travel with every checkpoint.
        for extra in ("preprocessor_config.json", "processor_config.json", "pairuni_model.json"):
            src = os.path.join(self.source_dir, extra) if self.source_dir else ""
            if src and os.path.isfile(src):
                shutil.copyfile(src, os.path.join(path, extra))

    def describe(self) -> dict[str, Any]:
        n_train = sum(p.numel() for _, p in self.trainable_parameters())
        return {
            "family": self.family,
            "adapter": "janus",
            "capabilities": sorted(self.capabilities),
            "device": str(self.device),
            "autocast": str(self.amp).replace("torch.", "") if self.amp else "off",
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "vq_image_size": self.vq_image_size,
            "codebook": self.codebook,
            "vocab_size": int(self.model.config.text_config.vocab_size),
            "special_ids": {
                "pad": self.pad_id,
                "bos": self.bos_id,
                "eos": self.eos_id,
                "boi": self.boi_id,
                "eoi": self.eoi_id,
                "image": self.img_id,
            },
            "params_total": sum(p.numel() for p in self.model.parameters()),
            "params_trainable": n_train,
            "train_modules": list(self.train_modules),
            "gradient_checkpointing": self.gradient_checkpointing,
            "ref_model": "lora-base" if self.ref_is_base else self.ref_model is not None,
            "lora": self.lora.describe() if self.lora else None,
        }
