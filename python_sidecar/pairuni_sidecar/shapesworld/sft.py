"""Supervised fine-tuning of the shared LLM on both tasks (pretraining stage b).

Understanding: image + MCQ -> ``answer_template`` + EOS, loss on the answer tokens only.
Generation: prompt -> VQ codes, loss on the codes through the generation head; the prompt is
replaced by pads with probability ``p_uncond`` (Janus-style), which teaches the unconditional
branch that classifier-free guidance needs. Both losses update the same language model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .formats import PromptFormat
from .model import to_pixels
from .vocab import COUNT_WORDS


@dataclass
class SFTData:
    """Pre-tokenised pretraining items: everything a batch needs, as tensors/lists."""

    images: torch.Tensor  # (N, H, W, 3) uint8
    codes: torch.Tensor  # (N, T) int64 VQ codes of the images
    und_ids: list[list[int]]  # prompt + answer + EOS: N MCQs, then N descriptions
    und_answer_len: list[int]  # tokens at the end of und_ids that carry the loss
    gen_ids: list[list[int]]  # BOS + prompt + BOI

    def und_image(self, i: int) -> int:
        return i % len(self.gen_ids)


def describe(objects, cells: bool = True) -> str:
    """Every object of a scene in reading order with its cell (row, column as 1-based count words),
    e.g. "red square one two , blue circle three one"; ``cells=False``: "red square , blue circle".

    The cells are what makes the vision tower keep *where* a patch is: without them nothing in
    pretraining needs it (reading order is the image-token order the LM already sees), a linear
    probe on the trained image features read an object's row/column at chance, and position
    questions stayed at chance (issue 15). Count words keep the tokenizer's vocabulary unchanged.
    """
    ordered = sorted(objects, key=lambda o: (o.row, o.col))
    if cells:
        return " , ".join(f"{o.color} {o.shape} {COUNT_WORDS[o.row + 1]} {COUNT_WORDS[o.col + 1]}" for o in ordered)
    return " , ".join(f"{o.color} {o.shape}" for o in ordered)


def tokenize_items(
    prompts, fmt: PromptFormat, items, images: torch.Tensor, codes: torch.Tensor, cells: bool = True
) -> SFTData:
    """MCQ examples, then one description example per item: a dense signal about every object
    that teaches the from-scratch vision tower to see (MCQ answers alone left it unused).

    ``prompts`` is the policy adapter of the model (``JanusAdapter.from_model(model, tok,
    options=model.adapter_options(fmt))``): prompt ids are the adapter's ``und_prompt_ids`` /
    ``gen_prompt_ids``, so the model trains on exactly the prompts that rollouts and evaluation feed it.
    """
    tok = prompts.tok
    eos = tok.eos_token_id
    und_ids, und_len, gen_ids = [], [], []
    desc_ids, desc_len = [], []
    caption = prompts.und_prompt_ids(fmt.caption_request)
    for it in items:
        d = tok(describe(it.objects, cells), add_special_tokens=False).input_ids + [eos]
        desc_ids.append(caption + d)
        desc_len.append(len(d))
        p = prompts.und_prompt_ids(fmt.und_user_text(it.question, it.choices))
        choice = it.choices["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(it.answer)]
        a = tok(fmt.answer(it.answer, choice), add_special_tokens=False).input_ids + [eos]
        und_ids.append(p + a)
        und_len.append(len(a))
        gen_ids.append(prompts.gen_prompt_ids(it.prompt))
    return SFTData(images, codes, und_ids + desc_ids, und_len + desc_len, gen_ids)


def und_loss(model, data: SFTData, idx: list[int], pad: int) -> tuple[torch.Tensor, float]:
    """Answer-token cross-entropy and token accuracy for a right-padded batch."""
    seqs = [data.und_ids[i] for i in idx]
    L = max(map(len, seqs))
    ids = torch.full((len(idx), L), pad, dtype=torch.long)
    attn = torch.zeros((len(idx), L), dtype=torch.long)
    target = torch.zeros((len(idx), L), dtype=torch.bool)
    for r, (s, i) in enumerate(zip(seqs, idx)):
        ids[r, : len(s)] = torch.tensor(s)
        attn[r, : len(s)] = 1
        target[r, len(s) - data.und_answer_len[i] : len(s)] = True
    pix = to_pixels(data.images[[data.und_image(i) for i in idx]])
    h = model.model(input_ids=ids, pixel_values=pix, attention_mask=attn).last_hidden_state
    sel = target[:, 1:]  # position t predicts token t+1
    logits = model.lm_head(h[:, :-1][sel]).float()
    gold = ids[:, 1:][sel]
    return F.cross_entropy(logits, gold), float((logits.argmax(-1) == gold).float().mean())


def gen_logits(model, prompts: list[list[int]], codes: torch.Tensor, pad: int) -> torch.Tensor:
    """Teacher-forced generation-head logits (B, T, V) for prompt ids (BOS..BOI) + codes (B, T).

    Prompts are left-padded (masked out) and positions restart at 0 on each row's first real
    token, so every row sees exactly what the unpadded evaluation sampler sees.
    """
    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    attn = torch.zeros((len(prompts), P + codes.shape[1]), dtype=torch.long)
    for r, s in enumerate(prompts):
        ids[r, P - len(s) :] = torch.tensor(s)
        attn[r, P - len(s) :] = 1
    emb = torch.cat([model.get_input_embeddings()(ids), model.prepare_embeddings_for_image_generation(codes)], 1)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    h = model.model.language_model(inputs_embeds=emb, attention_mask=attn, position_ids=pos).last_hidden_state
    return model.model.generation_head(h[:, P - 1 : -1]).float()  # BOI..code_{T-1} predict code_1..code_T


def gen_loss(
    model, data: SFTData, idx: list[int], pad: int, p_uncond: float, gen: torch.Generator
) -> tuple[torch.Tensor, float]:
    """Image-code cross-entropy; with probability ``p_uncond`` a row's prompt becomes pads."""
    seqs = [list(data.gen_ids[i]) for i in idx]
    drop = torch.rand(len(idx), generator=gen) < p_uncond
    for r in range(len(seqs)):
        if drop[r]:
            seqs[r][1:-1] = [pad] * (len(seqs[r]) - 2)  # keep BOS and BOI, as the CFG uncond row
    codes = data.codes[idx]
    logits = gen_logits(model, seqs, codes, pad)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))
    return loss, float((logits.argmax(-1) == codes).float().mean())
