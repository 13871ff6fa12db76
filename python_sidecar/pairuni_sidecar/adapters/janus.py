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

Teacher-forced recomputation runs one forward over ``[prompt ; outputs]``: the hidden state at the
last prompt position predicts output token 0, so logits are taken at positions ``P-1 .. P+L-2``
(``logits_to_keep = L + 1`` and the last one dropped).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadRequest
from .base import (
    AdapterConfigError,
    CheckpointNotFound,
    GenItem,
    LoadSpec,
    PolicyAdapter,
    RolloutBatch,
    SamplingCfg,
    SFTExample,
    UndItem,
    resolve_autocast,
    resolve_device,
)

DEFAULT_UND_TEMPLATE = "{system}<|User|>: {image}\n{question}\n\n<|Assistant|>:"
DEFAULT_GEN_TEMPLATE = "{system}<|User|>: {prompt}\n\n<|Assistant|>:"

#: named parameter groups for ``LoadSpec.train_modules`` (raw parameter-name prefixes are accepted too)
MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "language_model": ("model.language_model.", "lm_head."),
    "vision": ("model.vision_model.", "model.aligner."),
    "gen_head": ("model.generation_head.",),
    "gen_embed": ("model.generation_embeddings.", "model.generation_aligner."),
    "vqmodel": ("model.vqmodel.",),
}


class ImageReadError(BadRequest):
    """An understanding image or SFT target image that is missing or cannot be decoded."""


def _check_model_dir(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise AdapterConfigError(f"{what}: a model directory path is required")
    if not os.path.isdir(path):
        raise CheckpointNotFound(f"{what}: model directory {path!r} does not exist")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointNotFound(f"{what}: {path!r} has no config.json (not a from_pretrained directory)")
    if not any(f.endswith((".safetensors", ".bin")) for f in os.listdir(path)):
        raise CheckpointNotFound(f"{what}: {path!r} has no weight files (*.safetensors / *.bin)")


def _disable_dropout(model: torch.nn.Module) -> None:
    """RL log-prob passes must be deterministic: ratio == 1 at the first inner iteration."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _mask_through_eos(out: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True for tokens up to and including the first EOS of each row (all tokens if no EOS)."""
    is_eos = out == eos_id
    before = is_eos.long().cumsum(-1) - is_eos.long()  # number of EOS strictly before each position
    return before == 0


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """``log_softmax(logits)[ids]`` in fp32, row chunk by row chunk (vocab-wide logits are big)."""
    out = []
    for i in range(0, logits.shape[0], chunk):
        lg = logits[i:i + chunk].float()
        out.append(lg.gather(-1, ids[i:i + chunk].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, -1))
    return torch.cat(out, 0)


class JanusAdapter(PolicyAdapter):
    family = "ar"
    capabilities = frozenset({"und_rollout", "gen_rollout", "logprobs_und", "logprobs_gen", "sft", "cfg", "ref_model"})

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
        opts = dict(spec.options or {})
        self.und_template = str(opts.pop("und_template", DEFAULT_UND_TEMPLATE))
        self.gen_template = str(opts.pop("gen_template", DEFAULT_GEN_TEMPLATE))
        self.system_prompt = str(opts.pop("system_prompt", ""))
        self.detach_uncond = bool(opts.pop("detach_uncond", False))
        if opts:
            raise AdapterConfigError(f"janus: unknown adapter options {sorted(opts)}; known: und_template, "
                                     "gen_template, system_prompt, detach_uncond")
        if self.und_template.count("{image}") != 1 or "{question}" not in self.und_template:
            raise AdapterConfigError("janus: und_template must contain '{image}' once and '{question}'")
        if "{prompt}" not in self.gen_template:
            raise AdapterConfigError("janus: gen_template must contain '{prompt}'")

        self.model = self._load_model(spec.model_dir)
        try:
            self.tok = AutoTokenizer.from_pretrained(spec.model_dir)
        except Exception as e:  # noqa: BLE001 - surfaced as a typed error naming the directory
            raise CheckpointNotFound(f"model: no usable tokenizer in {spec.model_dir!r} ({type(e).__name__}: {e})") from None
        self._read_geometry(spec.model_dir)
        self._set_trainable(spec.train_modules)
        self.gradient_checkpointing = bool(spec.gradient_checkpointing)
        if self.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.ref_model = None
        if spec.ref_model_dir:
            _check_model_dir(spec.ref_model_dir, "reference model")
            self.ref_model = self._load_model(spec.ref_model_dir, dtype=self.amp or torch.float32)
            self.ref_model.requires_grad_(False)
        self.train_mode(False)

    # -- loading ---------------------------------------------------------------------------------
    def _load_model(self, path: str, dtype: torch.dtype = torch.float32):
        try:
            model = self._cls.from_pretrained(path, dtype=dtype)
        except Exception as e:  # noqa: BLE001
            raise CheckpointNotFound(f"cannot load JanusForConditionalGeneration from {path!r}: {type(e).__name__}: {e}") from None
        _disable_dropout(model)
        return model.to(self.device).eval()

    def _read_geometry(self, path: str) -> None:
        cfg = self.model.config
        vc, qc = cfg.vision_config, cfg.vq_config
        vocab = cfg.text_config.vocab_size
        tok = self.tok

        def special(name: str, value: int | None) -> int:
            if value is None or value < 0 or value >= vocab or (tok.unk_token_id is not None and value == tok.unk_token_id and name != "unk"):
                raise AdapterConfigError(f"model dir {path!r}: tokenizer has no usable {name} token (got {value}); "
                                         "see adapters/README.md for the special-token contract")
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
            raise AdapterConfigError(f"model dir {path!r}: vision_config.num_image_tokens={self.num_image_tokens} but the VQ "
                                     f"grid is {self.vq_grid}x{self.vq_grid}; they must agree")
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
                raise AdapterConfigError(f"train_modules: {m!r} is neither a group {sorted(MODULE_GROUPS)} "
                                         "nor a parameter-name prefix of this model")
        for n, p in self.model.named_parameters():
            p.requires_grad_(any(n.startswith(x) for x in prefixes))
        self.train_modules = tuple(modules)
        self._vision_trainable = any(p.requires_grad for n, p in self.model.named_parameters()
                                     if n.startswith(MODULE_GROUPS["vision"]))

    # -- small helpers ---------------------------------------------------------------------------
    def _recompute_old(self, s: SamplingCfg) -> bool:
        return s.old_logp == "recompute" or (s.old_logp == "auto" and self.amp is not None)

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _enc(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def _system(self) -> str:
        return f"{self.system_prompt}\n\n" if self.system_prompt else ""

    def und_prompt_ids(self, question: str) -> list[int]:
        pre, post = self.und_template.split("{image}")
        sys_ = self._system()
        pre = pre.replace("{system}", sys_).replace("{question}", question)
        post = post.replace("{system}", sys_).replace("{question}", question)
        return ([self.bos_id] + self._enc(pre) + [self.boi_id] + [self.img_id] * self.num_image_tokens
                + [self.eoi_id] + self._enc(post))

    def gen_prompt_ids(self, prompt: str) -> list[int]:
        text = self.gen_template.replace("{system}", self._system()).replace("{prompt}", prompt)
        return [self.bos_id] + self._enc(text) + [self.boi_id]

    def pixels(self, paths: list[str], size: int | None = None, mean=None, std=None) -> torch.Tensor:
        """Load images as (I, 3, S, S) float: pad to square (mean colour), resize, normalise."""
        from PIL import Image

        size = size or self.image_size
        mean = self.image_mean if mean is None else mean
        std = self.image_std if std is None else std
        bg = tuple(int(round(float(m) * 255)) for m in mean.flatten())
        arrs = []
        for p in paths:
            if not os.path.isfile(p):
                raise ImageReadError(f"image file {p!r} does not exist")
            try:
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    side = max(w, h)
                    canvas = Image.new("RGB", (side, side), bg)
                    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
                    canvas = canvas.resize((size, size), Image.Resampling.BICUBIC)
                    arrs.append(np.asarray(canvas, dtype=np.float32) / 255.0)
            except (OSError, ValueError) as e:
                raise ImageReadError(f"cannot decode image {p!r}: {e}") from None
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
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
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    # -- understanding ---------------------------------------------------------------------------
    @torch.no_grad()
    def und_rollout(self, items: list[UndItem], n: int, s: SamplingCfg) -> RolloutBatch:
        self.require("und_rollout")
        s.validate()
        if not items or n < 1:
            raise BadRequest(f"und_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        model = self.model
        pix = self.pixels([it.image_path for it in items])
        feats = self._image_features(model, pix)                     # (I, N, H)
        group = torch.arange(len(items)).repeat_interleave(n)
        prompts = [self.und_prompt_ids(it.text) for it in items]
        ids, pmask = _left_pad([prompts[g] for g in group.tolist()], self.pad_id)
        ids, pmask = ids.to(self.device), pmask.to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(int(s.seed))
        lm = model.model.language_model
        B = ids.shape[0]
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config.text_config)
        mask = pmask
        pos = _positions(mask)
        toks, lps = [], []
        finished = torch.zeros(B, dtype=torch.bool, device=self.device)
        with self._autocast():
            h = lm(inputs_embeds=self._und_embeds(model, ids, feats[group.to(self.device)]), attention_mask=mask,
                   position_ids=pos, past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
            for _ in range(int(s.max_new_tokens)):
                logp_all = torch.log_softmax(model.lm_head(h).float() / s.temperature, -1)
                tok = torch.multinomial(logp_all.exp(), 1, generator=gen).squeeze(-1)
                lp = logp_all.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
                tok = torch.where(finished, torch.full_like(tok, self.pad_id), tok)
                toks.append(tok)
                lps.append(torch.where(finished, torch.zeros_like(lp), lp))
                finished |= tok == self.eos_id
                if bool(finished.all()):
                    break
                mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=self.device)], 1)
                pos = pos[:, -1:] + 1
                h = lm(inputs_embeds=model.get_input_embeddings()(tok.unsqueeze(1)), attention_mask=mask,
                       position_ids=pos, past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        out = torch.stack(toks, 1)
        out_mask = _mask_through_eos(out, self.eos_id)
        texts = []
        for row, m in zip(out.tolist(), out_mask.tolist()):
            keep = [t for t, k in zip(row, m) if k and t != self.eos_id]
            texts.append(self.tok.decode(keep, skip_special_tokens=True))
        batch = RolloutBatch(
            side="und", group=group, out_ids=out, out_mask=out_mask,
            old_logp=torch.stack(lps, 1).float() * out_mask, prompts=[it.text for it in items], texts=texts,
            extra={"prompt_ids": ids, "prompt_mask": pmask, "feats": feats, "pixels": pix,
                   "temperature": float(s.temperature)},
        )
        if self._recompute_old(s):
            batch.old_logp = self.token_logprobs(batch, torch.arange(B), est_seed=0, grad=False)[0].detach()
        return batch

    def _und_logp(self, model, ids, pmask, feats, out, T: float) -> torch.Tensor:
        L = out.shape[1]
        emb = torch.cat([self._und_embeds(model, ids, feats), model.get_input_embeddings()(out)], 1)
        mask = torch.cat([pmask, torch.ones_like(out)], 1)
        with self._autocast():
            logits = model(inputs_embeds=emb, attention_mask=mask, position_ids=_positions(mask),
                           use_cache=False, logits_to_keep=L + 1).logits[:, :-1]
        return selective_log_softmax(logits.float() / T, out)

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def gen_rollout(self, items: list[GenItem], n: int, s: SamplingCfg) -> RolloutBatch:
        self.require("gen_rollout")
        s.validate()
        if not items or n < 1:
            raise BadRequest(f"gen_rollout needs at least one item and n >= 1 (got {len(items)} items, n={n})")
        model = self.model
        cfg = float(s.cfg_weight) != 1.0
        R = 2 if cfg else 1
        group = torch.arange(len(items)).repeat_interleave(n)
        cond = [self.gen_prompt_ids(it.prompt) for it in items]
        rows: list[list[int]] = []
        for g in group.tolist():
            rows.append(cond[g])
            if cfg:
                rows.append([self.bos_id] + [self.pad_id] * (len(cond[g]) - 2) + [self.boi_id])
        ids, pmask = _left_pad(rows, self.pad_id)
        ids, pmask = ids.to(self.device), pmask.to(self.device)
        B, N, w, T = len(group), self.num_image_tokens, float(s.cfg_weight), float(s.temperature)
        gen = torch.Generator(device=self.device).manual_seed(int(s.seed))
        lm, head = model.model.language_model, model.model.generation_head
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config.text_config)
        mask, pos = pmask, _positions(pmask)
        toks, lps = [], []
        with self._autocast():
            h = lm(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=mask, position_ids=pos,
                   past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
            for t in range(N):
                lg = head(h).float()
                z = lg[1::2] + w * (lg[0::2] - lg[1::2]) if cfg else lg
                logp_all = torch.log_softmax(z / T, -1)
                tok = torch.multinomial(logp_all.exp(), 1, generator=gen).squeeze(-1)
                toks.append(tok)
                lps.append(logp_all.gather(-1, tok.unsqueeze(-1)).squeeze(-1))
                if t == N - 1:
                    break
                mask = torch.cat([mask, torch.ones((B * R, 1), dtype=mask.dtype, device=self.device)], 1)
                pos = pos[:, -1:] + 1
                e = model.prepare_embeddings_for_image_generation(tok.repeat_interleave(R, 0)).unsqueeze(1)
                h = lm(inputs_embeds=e, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True).last_hidden_state[:, -1]
        out = torch.stack(toks, 1)
        batch = RolloutBatch(
            side="gen", group=group, out_ids=out, out_mask=torch.ones_like(out, dtype=torch.bool),
            old_logp=torch.stack(lps, 1).float(), prompts=[it.prompt for it in items],
            images=self.decode_images(out),
            extra={"prompt_ids": ids.view(B, R, -1), "prompt_mask": pmask.view(B, R, -1), "cfg_weight": w,
                   "temperature": T, "gen_logp": s.gen_logp},
        )
        if s.gen_logp == "cond" or self._recompute_old(s):
            batch.old_logp = self.token_logprobs(batch, torch.arange(B), est_seed=0, grad=False)[0].detach()
        return batch

    @torch.no_grad()
    def decode_images(self, codes: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """VQ codes (B, N) -> uint8 images (B, H, W, 3) on the CPU."""
        outs = []
        for i in range(0, codes.shape[0], chunk):
            with self._autocast():
                x = self.model.decode_image_tokens(codes[i:i + chunk].to(self.device)).float()
            outs.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
        return torch.cat(outs, 0)

    def _gen_logp(self, model, ids, pmask, codes, *, w: float, T: float, mode: str, grad: bool) -> torch.Tensor:
        """ids/pmask (b, R, P); codes (b, N). Guided (``cfg``) or conditional (``cond``) image log-probs."""
        b, R, P = ids.shape
        lm, head = model.model.language_model, model.model.generation_head

        def branch(rows_ids, rows_mask, rows_codes):
            emb = torch.cat([model.get_input_embeddings()(rows_ids),
                             model.prepare_embeddings_for_image_generation(rows_codes)], 1)
            mask = torch.cat([rows_mask, torch.ones_like(rows_codes)], 1)
            with self._autocast():
                hs = lm(inputs_embeds=emb, attention_mask=mask, position_ids=_positions(mask),
                        use_cache=False).last_hidden_state
                return head(hs[:, P - 1:-1]).float()

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
    def token_logprobs(self, batch: RolloutBatch, rows: torch.Tensor, *, est_seed: int, grad: bool,
                       ref: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        del est_seed  # autoregressive: exact teacher-forced log-probs, no estimator randomness
        self.require(f"logprobs_{batch.side}")
        if ref and self.ref_model is None:
            raise AdapterConfigError("reference log-probs requested but no reference model is loaded (ref_model_dir)")
        model = self.ref_model if ref else self.model
        rows = rows.to(torch.long)
        out = batch.out_ids[rows].to(self.device)
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx:
            x = batch.extra
            if batch.side == "und":
                grp = batch.group[rows].to(self.device)
                if self._vision_trainable or ref:
                    feats = self._image_features(model, x["pixels"][grp])
                else:
                    feats = x["feats"][grp]
                logp = self._und_logp(model, x["prompt_ids"][rows.to(self.device)], x["prompt_mask"][rows.to(self.device)],
                                      feats, out, x["temperature"])
            else:
                r = rows.to(self.device)
                logp = self._gen_logp(model, x["prompt_ids"][r], x["prompt_mask"][r], out, w=x["cfg_weight"],
                                      T=x["temperature"], mode=x["gen_logp"], grad=grad)
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
                out[i, :len(t)] = torch.tensor(t)
                tmask[i, :len(t)] = True
            feats = self._image_features(model, self.pixels([e.image_path for e in und]))
            if not self._vision_trainable:
                feats = feats.detach()
            logp = self._und_logp(model, ids.to(self.device), pmask.to(self.device), feats, out.to(self.device), 1.0)
            tmask = tmask.to(self.device)
            res["und"] = -(logp * tmask).sum() / tmask.sum()
        if gen:
            with torch.no_grad():
                pix = self.pixels([e.image_path for e in gen], size=self.vq_image_size,
                                  mean=torch.full((1, 3, 1, 1), 0.5), std=torch.full((1, 3, 1, 1), 0.5))
                codes = model.model.vqmodel.encode(pix).image_tokens.reshape(len(gen), -1)
            ids, pmask = _left_pad([self.gen_prompt_ids(e.text) for e in gen], self.pad_id)
            logp = self._gen_logp(model, ids.to(self.device).unsqueeze(1), pmask.to(self.device).unsqueeze(1), codes,
                                  w=1.0, T=1.0, mode="cond", grad=True)
            res["gen"] = -logp.mean()
        return res

    # -- persistence -----------------------------------------------------------------------------
    def save_pretrained(self, path: str) -> None:
        self.model.save_pretrained(path)
        self.tok.save_pretrained(path)
        # Sidecar files that describe how the model was trained travel with every checkpoint.
        for extra in ("preprocessor_config.json", "processor_config.json", "pairuni_model.json"):
            src = os.path.join(self.source_dir, extra)
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(path, extra))

    def describe(self) -> dict[str, Any]:
        n_train = sum(p.numel() for _, p in self.trainable_parameters())
        return {
            "family": self.family, "adapter": "janus", "capabilities": sorted(self.capabilities),
            "device": str(self.device), "autocast": str(self.amp).replace("torch.", "") if self.amp else "off",
            "image_size": self.image_size, "num_image_tokens": self.num_image_tokens,
            "vq_image_size": self.vq_image_size, "codebook": self.codebook,
            "vocab_size": int(self.model.config.text_config.vocab_size),
            "special_ids": {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id, "boi": self.boi_id,
                            "eoi": self.eoi_id, "image": self.img_id},
            "params_total": sum(p.numel() for p in self.model.parameters()), "params_trainable": n_train,
            "train_modules": list(self.train_modules), "gradient_checkpointing": self.gradient_checkpointing,
            "ref_model": self.ref_model is not None,
        }
