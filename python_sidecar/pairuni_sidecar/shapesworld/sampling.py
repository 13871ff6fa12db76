"""Minimal inference for the tiny Janus: CFG image sampling and greedy MCQ answering.

Image sampling follows the DeepSeek reference loop (janus-rl.md §1): rows interleave cond/uncond
(the uncond row keeps BOS and BOI and pads the prompt), each step samples from the full softmax of
``u + w (c - u)`` over the generation head. Prompts are batched only with prompts of the same
token length, so rows never need padding and positions match training exactly.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from .formats import PromptFormat
from .model import NUM_IMAGE_TOKENS, special_ids, to_pixels, to_uint8


def _buckets(lengths: list[int]) -> dict[int, list[int]]:
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        by_len[n].append(i)
    return by_len


def gen_prompt_ids(tok, fmt: PromptFormat, prompt: str) -> list[int]:
    """BOS + rendered generation prompt + BOI (the position that predicts the first image code)."""
    return tok(fmt.gen_prompt(prompt)).input_ids + [tok.convert_tokens_to_ids(tok.boi_token)]


@torch.no_grad()
def sample_images(
    model, tok, fmt: PromptFormat, prompts: list[str], n: int = 1, cfg_weight: float = 3.0,
    temperature: float = 1.0, generator: torch.Generator | None = None, max_rows: int = 128,
    return_logp: bool = False,
):
    """``n`` images per prompt, prompt-major: (codes (P*n, N) int64, images (P*n, H, W, 3) uint8),
    plus the sampled codes' log-probs under the guided distribution (P*n, N) if ``return_logp``."""
    pad = special_ids(tok)["pad"]
    ids = [gen_prompt_ids(tok, fmt, p) for p in prompts]
    codes = torch.zeros(len(prompts) * n, NUM_IMAGE_TOKENS, dtype=torch.long)
    logp = torch.zeros(len(prompts) * n, NUM_IMAGE_TOKENS)
    lm = model.model.language_model
    per_chunk = max(1, max_rows // (2 * n))
    for _, members in sorted(_buckets([len(x) for x in ids]).items()):
        for s in range(0, len(members), per_chunk):
            chunk = members[s:s + per_chunk]
            cond = torch.tensor([ids[i] for i in chunk]).repeat_interleave(n, 0)
            uncond = cond.clone()
            uncond[:, 1:-1] = pad
            rows = torch.stack([cond, uncond], 1).flatten(0, 1)  # c0,u0,c1,u1,...
            out = lm(inputs_embeds=model.get_input_embeddings()(rows), use_cache=True)
            past, h = out.past_key_values, out.last_hidden_state[:, -1]
            picked, lps = [], []
            for _ in range(NUM_IMAGE_TOKENS):
                logits = model.model.generation_head(h).float()
                c, u = logits[0::2], logits[1::2]
                probs = torch.softmax((u + cfg_weight * (c - u)) / temperature, -1)
                tok_ = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                picked.append(tok_)
                lps.append(probs.gather(1, tok_[:, None]).squeeze(1).log())
                emb = model.prepare_embeddings_for_image_generation(tok_.repeat_interleave(2))[:, None]
                out = lm(inputs_embeds=emb, past_key_values=past, use_cache=True)
                past, h = out.past_key_values, out.last_hidden_state[:, -1]
            block, lp = torch.stack(picked, 1), torch.stack(lps, 1)
            for j, i in enumerate(chunk):
                codes[i * n:(i + 1) * n] = block[j * n:(j + 1) * n]
                logp[i * n:(i + 1) * n] = lp[j * n:(j + 1) * n]
    images = torch.cat([to_uint8(model.decode_image_tokens(codes[i:i + 256])) for i in range(0, len(codes), 256)])
    return (codes, images, logp) if return_logp else (codes, images)


def image_placeholder(tok) -> str:
    return tok.boi_token + tok.image_token * NUM_IMAGE_TOKENS + tok.eoi_token


def und_prompt_ids(tok, fmt: PromptFormat, question: str, choices) -> list[int]:
    return tok(fmt.und_prompt(question, choices, image_placeholder(tok))).input_ids


@torch.no_grad()
def answer_mcq(
    model, tok, fmt: PromptFormat, images: torch.Tensor, questions: list[str], choices: list[list[str]],
    max_new_tokens: int = 16, max_rows: int = 128,
) -> list[str]:
    """Greedy answers (decoded text, special tokens dropped) for uint8 images (B, H, W, 3)."""
    eos = tok.eos_token_id
    ids = [und_prompt_ids(tok, fmt, q, c) for q, c in zip(questions, choices)]
    texts = [""] * len(ids)
    for _, members in sorted(_buckets([len(x) for x in ids]).items()):
        for s in range(0, len(members), max_rows):
            chunk = members[s:s + max_rows]
            x = torch.tensor([ids[i] for i in chunk])
            out = model(input_ids=x, pixel_values=to_pixels(images[chunk]), use_cache=True, logits_to_keep=1)
            done = torch.zeros(len(chunk), dtype=torch.bool)
            gen = []
            for _ in range(max_new_tokens):
                nxt = out.logits[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                gen.append(nxt)
                done |= nxt == eos
                if bool(done.all()):
                    break
                out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
            g = torch.stack(gen, 1)
            for j, i in enumerate(chunk):
                row = g[j].tolist()
                row = row[:row.index(eos)] if eos in row else row
                texts[i] = tok.decode(row, skip_special_tokens=True)
    return texts
