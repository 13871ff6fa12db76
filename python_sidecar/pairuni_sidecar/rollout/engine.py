"""Batched autoregressive rollouts on a static KV cache, with a one-token decode step that can be compiled.

The family adapter supplies three callables (its glue): the language model (a transformers decoder that
takes ``inputs_embeds``/``attention_mask``/``position_ids``/``past_key_values``), ``head(h) -> logits``
for the side being sampled and ``embed_next(ids (n,)) -> (n, H)``, the input embeddings of sampled
tokens. The engine then runs, for B samples of R rows each (R = 2: interleaved conditional and
unconditional CFG rows c0, u0, c1, u1, ...):

1. one prefill of all B * R rows (left-padded; positions from the padding mask) into a ``StaticCache``
   sized ``P + steps`` for exactly this batch;
2. ``steps`` decode steps of a fixed shape: embed the previous token, one LM forward at the next cache
   slot, the head, CFG mixing ``u + w (c - u)``, temperature, and the draw. Everything in a step stays on
   the device: sampled tokens, log-probs, EOS and non-finite bookkeeping are tensors written into
   preallocated buffers, and the host only looks at them every ``check_every`` steps (to stop early
   when every row has finished, or to fail on a non-finite distribution);
3. with ``compile=True`` the step is ``torch.compile(mode="reduce-overhead")``: on CUDA one graph
   replay per token (CUDA graphs), shapes never change within a rollout.

Sampling draws exactly as ``torch.multinomial(probs, 1, generator=g)`` does for one sample: PyTorch
draws Exp(1) noise ``q`` shaped like ``probs`` from ``g`` and takes ``argmax(probs / q)`` (the
exponential race, an exact draw from ``probs``). Doing the same here, outside the compiled graph (a
``torch.Generator`` cannot be traced), keeps the random stream of the reference loop: same seed, same
draws, and the token equals the reference's whenever the probabilities are equal. The recorded
log-prob is ``log_softmax(z)[tok]`` of the very ``z`` the draw used, so old log-probs are those of the
behaviour distribution.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch


def cfg_mix(logits: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance over interleaved rows c0, u0, c1, u1, ...: ``u + w (c - u)`` per pair."""
    c, u = logits[0::2], logits[1::2]
    return u + w * (c - u)


def exp_race_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The Exp(1) noise ``torch.multinomial(like, 1, generator=generator)`` would draw (same shape, dtype, stream)."""
    return torch.empty_like(like).exponential_(generator=generator)


def draw(z: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from ``softmax(z)`` (fp32 logits already divided by the temperature).

    Returns ``(tok, logp, ok)``: ``logp = log_softmax(z)[tok]`` and ``ok`` False for rows whose
    distribution is not finite (those draw uniformly, so the caller can fail naming the model). With
    ``noise=None`` decoding is greedy (argmax of ``z``), ``ok`` checks ``z`` itself.
    """
    if noise is None:
        ok = torch.isfinite(z).all(-1)
        tok = z.argmax(-1)
    else:
        probs = torch.softmax(z, -1)
        ok = torch.isfinite(probs).all(-1)
        probs = torch.where(ok.unsqueeze(-1), probs, torch.ones_like(probs))
        tok = (probs / noise).argmax(-1)
    logp = torch.log_softmax(z, -1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    return tok, logp, ok


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, L) int64; pad after a row's first EOS
    logp: torch.Tensor  # (B, L) float32; 0 after a row's first EOS
    bad: torch.Tensor  # (B,) bool: the row's distribution was not finite at some step
    first_bad: torch.Tensor  # (B,) int64: the first such step (``steps`` if none)


class StaticDecoder:
    """One family side's decoder: ``lm`` + ``head`` + ``embed_next``, reused across rollouts.

    The cache is kept between calls of the same geometry (rows, and prompt + steps rounded up to
    ``length_bucket``) and reset in place, so a compiled step is traced once per geometry and its CUDA
    graph replays on the same buffers. It stays allocated between rollouts (the price of not
    recompiling): rows x slots x layers x 2 x hidden values in the KV dtype.
    """

    def __init__(
        self,
        lm: torch.nn.Module,
        text_config,
        *,
        head: Callable[[torch.Tensor], torch.Tensor],
        embed_next: Callable[[torch.Tensor], torch.Tensor],
        compile: bool = False,
        compile_options: dict | None = None,
        length_bucket: int = 64,
    ) -> None:
        self.lm, self.text_config = lm, text_config
        self.length_bucket = int(length_bucket)
        self.head, self.embed_next = head, embed_next
        self.compile = bool(compile)
        self._cache = None
        self._cache_key: tuple | None = None
        opts = {"mode": "reduce-overhead", "dynamic": False, **(compile_options or {})}
        self._step_fn = torch.compile(self._step, **opts) if compile else self._step

    def _static_cache(self, rows: int, length: int, device: torch.device):
        from transformers import StaticCache

        key = (rows, length, device)
        if self._cache_key != key:
            self._cache = StaticCache(config=self.text_config, max_cache_len=length)
            self._cache_key = key
        else:
            self._cache.reset()
        return self._cache

    def _step(
        self,
        tok: torch.Tensor,
        noise: torch.Tensor | None,
        pos: torch.Tensor,
        mask: torch.Tensor,
        cache,
        R: int,
        w: float,
        T: float,
        dtype: torch.dtype,
    ):
        # Next-token inputs in the prompt embeddings' dtype: under autocast an embedding that ends in a
        # Linear (Janus' generation aligner) comes out bf16, and the static cache keeps one dtype (the
        # prefill's); the teacher-forced training forward also embeds outside autocast.
        e = self.embed_next(tok.repeat_interleave(R, 0) if R > 1 else tok).to(dtype).unsqueeze(1)
        h = self.lm(
            inputs_embeds=e, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
        ).last_hidden_state[:, -1]
        return draw(self._logits(h, R, w, T, noise is None), noise)

    def _logits(self, h: torch.Tensor, R: int, w: float, T: float, greedy: bool) -> torch.Tensor:
        """The distribution's fp32 logits, computed exactly as the reference loops do."""
        lg = self.head(h).float()
        z = cfg_mix(lg, w) if R == 2 else lg
        return z if greedy else z / T

    @torch.no_grad()
    def run(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor | None,
        steps: int,
        *,
        rows_per_sample: int = 1,
        cfg_weight: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        eos_id: int | None = None,
        pad_id: int = 0,
        check_every: int = 32,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        amp_dtype: torch.dtype | None = None,
    ) -> Decoded:
        """Decode ``steps`` tokens for prompt embeddings (B * R, P, H) with left-padding ``mask`` (or None).

        ``generator`` None decodes greedily. With ``eos_id`` a row is finished after its first EOS
        (later tokens pad, log-probs 0) and decoding stops at the first check after every row finished
        or failed; the result is trimmed to the step at which that happened, as a loop checking every
        step would have stopped. ``amp_dtype`` is the ``autocast`` dtype, if any: the embeddings are cast
        to it, because a static cache holds keys and values in one dtype and fp32 embeddings under
        autocast give fp32 keys (rotary promotes) but bf16 values.
        """
        if amp_dtype is not None:
            embeds = embeds.to(amp_dtype)
        R, (BR, P, _) = int(rows_per_sample), embeds.shape
        if R not in (1, 2) or BR % R:
            raise ValueError(f"rows_per_sample must be 1 or 2 and divide the {BR} rows, got {R}")
        B, steps, dev = BR // R, int(steps), embeds.device
        w, T = float(cfg_weight), float(temperature)
        pmask = torch.ones((BR, P), dtype=torch.long, device=dev) if mask is None else mask.to(torch.long)
        # The cache length is rounded up to a multiple of ``length_bucket`` so that batches whose longest
        # prompt differs (every RL step) reuse one cache and one compiled graph; the slots past P + steps
        # are never written. One mask for the whole rollout: the prompt's padding, then every later slot
        # visible (the causal part hides slots not yet written), so each step sees the same shapes.
        S = -(-(P + steps) // self.length_bucket) * self.length_bucket
        full = torch.cat([pmask, torch.ones((BR, S - P), dtype=torch.long, device=dev)], 1)
        cache = self._static_cache(BR, S, dev)
        tokens = torch.full((B, steps), pad_id, dtype=torch.long, device=dev)
        logp = torch.zeros((B, steps), dtype=torch.float32, device=dev)
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
        bad = torch.zeros(B, dtype=torch.bool, device=dev)
        first_bad = torch.full((B,), steps, dtype=torch.long, device=dev)
        all_done = torch.zeros(steps, dtype=torch.bool, device=dev)
        pad = torch.full((B,), pad_id, dtype=torch.long, device=dev)
        with autocast():
            pos = (pmask.cumsum(-1) - 1).clamp(min=0)
            h = self.lm(
                inputs_embeds=embeds,
                attention_mask=full[:, :P],
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state[:, -1]
            pos = pos[:, -1:].clone()
            z = self._logits(h, R, w, T, generator is None)
            noise = None if generator is None else exp_race_noise(z, generator)
            tok, lp, ok = draw(z, noise)
            prev = tok
            for t in range(steps):
                if t > 0:
                    pos += 1
                    if generator is not None:
                        noise = exp_race_noise(noise, generator)
                    if self.compile:
                        torch.compiler.cudagraph_mark_step_begin()
                    tok, lp, ok = self._step_fn(prev, noise, pos, full, cache, R, w, T, embeds.dtype)
                new_bad = ~ok & ~finished & ~bad
                first_bad = torch.where(new_bad, torch.full_like(first_bad, t), first_bad)
                bad |= new_bad
                tok = torch.where(finished, pad, tok)
                tokens[:, t] = tok
                logp[:, t] = torch.where(finished, torch.zeros_like(lp), lp)
                if eos_id is not None:
                    finished |= tok == eos_id
                all_done[t] = (finished | bad).all()
                prev = tok  # a new tensor (where), not the compiled step's output buffer the next replay overwrites
                # The only host syncs: every check_every steps, stop as the reference loops would (image
                # rows: on a non-finite distribution; text rows: once every row finished or failed).
                if t == steps - 1:
                    break
                if (t + 1) % check_every == 0 and bool(all_done[t] if eos_id is not None else bad.any()):
                    break
        done = all_done.nonzero()
        L = int(done[0]) + 1 if eos_id is not None and done.numel() else t + 1
        return Decoded(tokens[:, :L], logp[:, :L], bad, first_bad)
