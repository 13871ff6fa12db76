"""Pretraining the tiny ShapesWorld Janus from scratch on CPU: (a) VQ tokenizer, (b) joint SFT.

Reproducible from ``seed`` (model init, data, batch order, CFG dropout all derive from it; run
with one torch thread for bit-identical results), interruptible and resumable: a training state
is written atomically every ``ckpt_every`` steps to ``work`` and picked up on the next run with
the same arguments. The finished model directory is written atomically to ``out``, and the
work directory is removed.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..fsutil import atomic_file
from .formats import PromptFormat
from .heldout import RULES as HELDOUT_RULES, reserved_scene
from .model import TinySizes, adapter_options, build_config, save_model_dir, special_ids, to_pixels
from .render import render
from .scenes import COLOR_NAMES, Obj, make_item
from .sft import gen_loss, tokenize_items, und_loss
from .tokenizer import build_tokenizer, to_hf
from .vocab import GRID, SHAPES
from .vq import encode_codes, renorm_codebook, scene_codes, vq_loss

STATE_FILE = "state.pt"


@dataclass
class PretrainConfig:
    seed: int = 0
    n_items: int = 12000  # pretraining pool (its own split: never in the demo's U/G sets)
    vq_steps: int = 3000
    vq_batch: int = 16
    vq_lr: float = 3e-3
    vq_dense_fraction: float = 0.5  # extra crowded boards: more object patches per decoder step
    sft_steps: int = 500  # calibrated: und ~50%, gen reward ~0.45 on held-out (far from solved)
    und_batch: int = 32
    gen_batch: int = 32
    sft_lr: float = 2e-3
    und_weight: float = 2.0  # the answer is a few tokens vs 16 image codes per example
    gen_weight: float = 1.0
    p_uncond: float = 0.1
    # Description targets name each object's cell (``sft.describe``): the only dense signal that
    # needs *where* an object is; without it position questions sat at chance (issue 15).
    describe_cells: bool = True
    # (c) shape curriculum, understanding only: single-object questions alone, then every MCQ type.
    # Joint SFT leaves every shape-bound category at chance (the mixture of question types keeps the
    # LM from learning to name a shape it does see; docs/notes.md, issue 15); this order unlocks it.
    shape_steps: int = 100
    mix_steps: int = 900  # held-out position 0.16 after 150 (und only), 0.40 after 900 (issue 15)
    mix_gen_weight: float = 1.0  # the mix phase also trains generation (0: und only; gen reward fell 0.35 -> 0.26)
    curriculum_lr: float = 1e-3
    warmup: int = 50
    ckpt_every: int = 100
    eval_n: int = 300
    eval_samples: int = 2
    cfg_weight: float = 3.0
    eval_every: int = 0  # >0: log a quick held-out eval every this many SFT steps (calibration)
    sizes: dict = field(default_factory=lambda: asdict(TinySizes()))


def _lr(base: float, step: int, total: int | None, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base`` (constant when ``total`` is None)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if total is None:
        return base
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _dense_scene(rng: np.random.Generator) -> list[Obj]:
    """A crowded board for the VQ tokenizer; objects in held-out states (``heldout.reserved_scene``) are
    left out, so evaluation scenes stay unseen by every pretraining stage."""
    objs = [
        Obj(SHAPES[rng.integers(len(SHAPES))], COLOR_NAMES[rng.integers(len(COLOR_NAMES))], r, c)
        for r in range(GRID)
        for c in range(GRID)
        if rng.random() < 0.5
    ]
    return [o for o in objs if not reserved_scene([o])]


@torch.no_grad()
def vq_recon_reward(model, seed: int, n: int) -> dict:
    """Shapes reward of images decoded from the *true* codes of held-out scenes: the ceiling that
    the VQ decoder puts on generation reward."""
    from .reward import ShapesScorer

    items = [make_item(seed, "g_eval", i) for i in range(n)]
    codes = torch.stack([scene_codes(it.objects) for it in items])
    from .model import to_uint8

    images = to_uint8(model.decode_image_tokens(codes))
    graded, binary = ShapesScorer().score_both(images, [it.prompt for it in items])
    return {"graded": round(float(graded.mean()), 4), "binary": round(float(binary.mean()), 4), "n": n}


# Settings that do not change the weights up to a given step (the SFT learning rate is constant
# after warm-up): a saved state may be resumed with other values, e.g. to train a calibrated model
# further. Everything else must match exactly.
_RESUMABLE_ACROSS = ("sft_steps", "ckpt_every", "eval_n", "eval_samples", "eval_every", "cfg_weight")


def _weights_key(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _RESUMABLE_ACROSS}


def _save_state(work: Path, state: dict) -> None:
    with atomic_file(work / STATE_FILE) as tmp:
        torch.save(state, tmp)


def batch_indices(seed: int, stage: int, step: int, n: int, size: int) -> list[int]:
    """Batch indices as a pure function of (seed, stage, step): resuming replays the same order."""
    return np.random.default_rng([seed, stage, step]).integers(0, n, size).tolist()


def pretrain(
    out: str | os.PathLike,
    cfg: PretrainConfig = PretrainConfig(),
    fmt: PromptFormat = PromptFormat(),
    work: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
    check: Callable[[], None] | None = None,
) -> dict:
    from transformers import JanusForConditionalGeneration

    from ..adapters.janus import JanusAdapter
    from .evaluate import evaluate_adapter

    torch.set_num_threads(1)  # shared CPU, and bit-reproducibility across runs
    out = Path(out)
    work = Path(work) if work is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    tok = to_hf(build_tokenizer(fmt))
    vocab = -(-len(tok) // 16) * 16  # round up: room for user tokens, tidy matrix shapes
    torch.manual_seed(cfg.seed)
    model = JanusForConditionalGeneration(build_config(vocab, TinySizes(**cfg.sizes), special_ids(tok)))
    pad = tok.pad_token_id
    # The policy adapter over the in-memory model: the SFT prompt ids and the held-out evaluation
    # come from it, exactly as rollouts and evaluation of the saved directory will see them.
    adapter = JanusAdapter.from_model(model, tok, options=adapter_options(fmt))

    items = [make_item(cfg.seed, "pretrain", i) for i in range(cfg.n_items)]
    images = torch.from_numpy(np.stack([render(it.objects) for it in items]))
    drng = np.random.default_rng([cfg.seed, 41])
    vq_scenes = [(_dense_scene(drng) if drng.random() < cfg.vq_dense_fraction else it.objects) for it in items]
    vq_images = torch.from_numpy(np.stack([render(s) for s in vq_scenes]))
    vq_codes = torch.stack([scene_codes(s) for s in vq_scenes])

    state = None
    if (work / STATE_FILE).exists():
        state = torch.load(work / STATE_FILE, weights_only=False)
        if _weights_key(state["cfg"]) != _weights_key(asdict(cfg)) or state["fmt"] != fmt.to_json():
            raise ValueError(f"{work / STATE_FILE} was written with other settings; delete {work} to start over")
        if state["stage"] == "curriculum" and state["cfg"]["sft_steps"] != cfg.sft_steps:
            raise ValueError(
                f"{work / STATE_FILE} finished SFT at sft_steps={state['cfg']['sft_steps']}, not {cfg.sft_steps}; "
                f"delete {work} to start over"
            )
        if state["stage"] == "sft" and state["step"] > cfg.sft_steps:
            raise ValueError(
                f"{work / STATE_FILE} is at SFT step {state['step']}, past sft_steps={cfg.sft_steps}; "
                f"delete {work} to start over"
            )
        model.load_state_dict(state["model"])
        log(f"resuming at stage {state['stage']} step {state['step']}")
    total = cfg.vq_steps + cfg.sft_steps + cfg.shape_steps + cfg.mix_steps
    vq = model.model.vqmodel

    # (a) VQ tokenizer ---------------------------------------------------------------------
    stage, step = (state["stage"], state["step"]) if state else ("vq", 0)
    if stage == "vq":
        vq.train()
        renorm_codebook(vq)
        opt = torch.optim.Adam(vq.parameters(), lr=cfg.vq_lr)
        if state and state.get("opt"):
            opt.load_state_dict(state["opt"])
        while step < cfg.vq_steps:
            if check:
                check()
            for g in opt.param_groups:
                g["lr"] = _lr(cfg.vq_lr, step, cfg.vq_steps, cfg.warmup)
            idx = batch_indices(cfg.seed, 1, step, cfg.n_items, cfg.vq_batch)
            loss, info = vq_loss(vq, to_pixels(vq_images[idx]), vq_codes[idx])
            loss_v = float(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            renorm_codebook(vq)
            step += 1
            if step % 50 == 0 or step == cfg.vq_steps:
                msg = (
                    f"vq {step}/{cfg.vq_steps} loss {loss_v:.4f} mse {info['mse']:.4f} "
                    f"code_acc {info['code_acc']:.3f} [{time.monotonic() - t0:.0f}s]"
                )
                log(msg)
                if progress:
                    progress(step, total, msg)
            if step % cfg.ckpt_every == 0 or step == cfg.vq_steps:
                nxt = ("sft", 0) if step == cfg.vq_steps else ("vq", step)
                _save_state(
                    work,
                    {
                        "stage": nxt[0],
                        "step": nxt[1],
                        "model": model.state_dict(),
                        "opt": None if nxt[0] == "sft" else opt.state_dict(),
                        "cfg": asdict(cfg),
                        "fmt": fmt.to_json(),
                    },
                )
        stage, step, state = "sft", 0, None
    vq.eval()
    for p in vq.parameters():
        p.requires_grad_(False)
    vq_fidelity = vq_recon_reward(model, cfg.seed, min(cfg.eval_n, 300))
    log(f"vq fidelity on held-out scenes (decode(true codes) -> shapes reward): {vq_fidelity}")

    # (b) joint SFT ---------------------------------------------------------------------------
    codes = encode_codes(vq, to_pixels(images))
    data = tokenize_items(adapter, fmt, items, images, codes, cells=cfg.describe_cells)
    params = [p for n, p in model.named_parameters() if not n.startswith("model.vqmodel.")]
    opt = torch.optim.AdamW(params, lr=cfg.sft_lr, weight_decay=0.01, betas=(0.9, 0.98))
    if state and state.get("opt"):
        opt.load_state_dict(state["opt"])
    model.train()
    vq.eval()
    while stage == "sft" and step < cfg.sft_steps:
        if check:
            check()
        for g in opt.param_groups:
            # Constant after warm-up: the model after N steps does not depend on sft_steps, so the
            # SFT length (how far from perfect the shipped model is) can be tuned without retraining.
            g["lr"] = _lr(cfg.sft_lr, step, None, cfg.warmup)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        lu, au = und_loss(model, data, batch_indices(cfg.seed, 2, step, len(data.und_ids), cfg.und_batch), pad)
        lg, ag = gen_loss(
            model, data, batch_indices(cfg.seed, 3, step, cfg.n_items, cfg.gen_batch), pad, cfg.p_uncond, gen
        )
        loss = cfg.und_weight * lu + cfg.gen_weight * lg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0 or step == cfg.sft_steps:
            msg = (
                f"sft {step}/{cfg.sft_steps} und {float(lu.detach()):.3f} (tok acc {au:.2f}) gen {float(lg.detach()):.3f} "
                f"(code acc {ag:.2f}) [{time.monotonic() - t0:.0f}s]"
            )
            log(msg)
            if progress:
                progress(cfg.vq_steps + step, total, msg)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.sft_steps:
            model.eval()
            m = evaluate_adapter(adapter, fmt, seed=cfg.seed, n=120, samples=1, cfg_weight=cfg.cfg_weight)
            model.train()
            log(
                f"  quick eval @ sft {step}: und {m['und_accuracy']} {m['und_accuracy_by_category']} "
                f"gen {m['gen_reward']} (binary {m['gen_binary']}) {m['gen_reward_by_category']}"
            )
        if step % cfg.ckpt_every == 0 or step == cfg.sft_steps:
            _save_state(
                work,
                {
                    "stage": "sft",
                    "step": step,
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "cfg": asdict(cfg),
                    "fmt": fmt.to_json(),
                },
            )

    # (c) shape curriculum -------------------------------------------------------------------------
    if stage == "sft":
        stage, step = "curriculum", 0
    single = [i for i, it in enumerate(items) if it.category == "single_object"]
    mcqs = list(range(len(items)))  # und_ids[:N] are the MCQs, und_ids[N:] the descriptions
    n_cur = cfg.shape_steps + cfg.mix_steps
    while step < n_cur:
        if check:
            check()
        for g in opt.param_groups:
            g["lr"] = cfg.curriculum_lr
        pool = single if step < cfg.shape_steps else mcqs
        lu, au = und_loss(
            model, data, [pool[j] for j in batch_indices(cfg.seed, 4, step, len(pool), cfg.und_batch)], pad
        )
        loss = lu
        if step >= cfg.shape_steps and cfg.mix_gen_weight:
            # Generation keeps training in the mix phase: understanding alone drifts the shared LM
            # away from what the generation head reads (held-out gen reward 0.38 -> 0.32 over 400 steps).
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 500_000 + step)
            lg, _ = gen_loss(
                model, data, batch_indices(cfg.seed, 5, step, cfg.n_items, cfg.gen_batch), pad, cfg.p_uncond, gen
            )
            loss = lu + cfg.mix_gen_weight * lg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0 or step == n_cur:
            phase = "shape" if step <= cfg.shape_steps else "mix"
            msg = f"curriculum ({phase}) {step}/{n_cur} und {float(lu.detach()):.3f} (tok acc {au:.2f}) [{time.monotonic() - t0:.0f}s]"
            log(msg)
            if progress:
                progress(cfg.vq_steps + cfg.sft_steps + step, total, msg)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < n_cur:
            model.eval()
            m = evaluate_adapter(adapter, fmt, seed=cfg.seed, n=120, n_und=300, samples=1, cfg_weight=cfg.cfg_weight)
            model.train()
            log(
                f"  quick eval @ curriculum {step}: und {m['und_accuracy']} {m['und_accuracy_by_category']} "
                f"gen {m['gen_reward']} (binary {m['gen_binary']})"
            )
        if step % cfg.ckpt_every == 0 or step == n_cur:
            _save_state(
                work,
                {
                    "stage": "curriculum",
                    "step": step,
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "cfg": asdict(cfg),
                    "fmt": fmt.to_json(),
                },
            )

    # held-out "before" numbers, saved with the model --------------------------------------------
    model.eval()
    metrics = evaluate_adapter(
        adapter, fmt, seed=cfg.seed, n=cfg.eval_n, samples=cfg.eval_samples, cfg_weight=cfg.cfg_weight
    )
    train_s = round(time.monotonic() - t0, 1)
    log(
        f"held-out: und acc {metrics['und_accuracy']} gen reward {metrics['gen_reward']} "
        f"(binary {metrics['gen_binary']}) [{train_s}s]"
    )
    extra = {
        "pretrain": {
            "config": asdict(cfg),
            "seconds": train_s,
            "torch": torch.__version__,
            "vq_fidelity": vq_fidelity,
            "heldout_rules": HELDOUT_RULES,
            "heldout_data_seed": cfg.seed,
            "heldout": metrics,
        }
    }
    save_model_dir(model, tok, fmt, out, extra)
    shutil.rmtree(work, ignore_errors=True)
    return {"out": str(out), "seconds": train_s, "metrics": metrics}
