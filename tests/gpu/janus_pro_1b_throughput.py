"""Rollout and update throughput of a random-init Janus-Pro-1B-sized model through the real adapter.

    python tests/gpu/janus_pro_1b_throughput.py                 # GPU: real 1B dims, bf16 autocast, fp32 master weights
    python tests/gpu/janus_pro_1b_throughput.py --tiny          # CPU smoke test of this script (tiny dims)

The model is built with random weights (no download), saved with ``save_pretrained`` and loaded back
through ``JanusAdapter`` (``from_pretrained``), exactly like a real checkpoint. Dimensions follow
deepseek-community/Janus-Pro-1B's config (LLM 24 layers, hidden 2048, 16 heads, MLP 5632, vocab
102400; SigLIP-L/16 at 384 px -> 576 image tokens; VQ 16384 codes) - an approximation: the 1B
layout was read from configs, not from a downloaded checkpoint.

Prints one JSON line: gen rollout (images/s, image tokens/s), und rollout (tokens/s), PairGRPO update
(s/step, trained tokens/s), peak GPU memory, and log-prob parity of the sampled vs recomputed paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import torch


def janus_pro_1b_config(tiny: bool):
    from transformers import JanusConfig

    from pairuni_sidecar.adapters.tiny import tiny_janus_config

    if tiny:
        return tiny_janus_config()
    return JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=102400,
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            max_position_embeddings=16384,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            rms_norm_eps=1e-6,
        ),
        vision_config=dict(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=384,
            patch_size=16,
            mlp_ratio=4.0,
            projection_dim=2048,
            depth=2,
            num_image_tokens=576,
        ),
        vq_config=dict(
            embed_dim=8,
            num_embeddings=16384,
            latent_channels=256,
            base_channels=128,
            channel_multiplier=[1, 1, 2, 2, 4],
            num_res_blocks=2,
            projection_dim=2048,
            image_token_embed_dim=2048,
            num_hidden_layers=2,
        ),
        image_token_id=3,
        tie_word_embeddings=False,
    )


def build(model_dir: str, tiny: bool, device: str) -> None:
    from transformers import JanusForConditionalGeneration

    from pairuni_sidecar.adapters.tiny import tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        model = JanusForConditionalGeneration(janus_pro_1b_config(tiny))
    model.to(torch.bfloat16 if not tiny else torch.float32).save_pretrained(model_dir)  # bf16 on disk, like the hub
    tiny_tokenizer().save_pretrained(model_dir)
    del model


def emit(res: dict, out: str | None) -> None:
    """The result as one JSON line: printed last (the runner keeps the tail), and written to --out if given."""
    line = json.dumps(res)
    if out:
        with open(out, "w") as f:
            f.write(line + "\n")
    print(line)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny dims (CPU smoke test of the script)")
    ap.add_argument("--k", type=int, default=8, help="rollouts per item (paper: 8 for 1B)")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--und-tokens", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    device = (
        "cuda" if (a.device == "auto" and torch.cuda.is_available()) else ("cpu" if a.device == "auto" else a.device)
    )
    if not a.tiny and device != "cuda":
        raise SystemExit("real Janus-Pro-1B dims need a GPU; use --tiny for a CPU smoke test")

    from PIL import Image

    from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter
    from pairuni_sidecar.contract import GenSampling, UndSampling
    from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput

    work = tempfile.mkdtemp(prefix="janus1b-")
    res: dict = {"device": device, "tiny": a.tiny, "k": a.k, "prompts": a.prompts}
    try:
        t0 = time.perf_counter()
        build(os.path.join(work, "model"), a.tiny, device)
        res["build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ad = load_adapter("janus", LoadSpec(path=os.path.join(work, "model"), device=device, autocast="auto"))
        pol = Policy(ad, OptimCfg(lr=1e-6))
        res["load_s"] = time.perf_counter() - t0
        res["params_total"] = ad.describe()["params_total"]
        res["params_trainable"] = ad.describe()["params_trainable"]
        img = os.path.join(work, "img.png")
        Image.new("RGB", (ad.image_size, ad.image_size), (120, 30, 200)).save(img)
        dev = ad.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        gens, unds = (
            [GenItem(f"a photo of object {i}") for i in range(a.prompts)],
            [UndItem(img, f"Question {i}? A. x B. y") for i in range(a.prompts)],
        )
        ad.gen_rollout(gens[:1], 1, GenSampling(seed=0))  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        gb = ad.gen_rollout(gens, a.k, GenSampling(seed=1, cfg_weight=5.0))
        sync(dev)
        dt = time.perf_counter() - t0
        res["gen_rollout_s"] = dt
        res["gen_images_per_s"] = gb.size / dt
        res["gen_tokens_per_s"] = gb.num_tokens / dt
        t0 = time.perf_counter()
        ub = ad.und_rollout(unds, a.k, UndSampling(seed=2, max_new_tokens=a.und_tokens))
        sync(dev)
        dt = time.perf_counter() - t0
        res["und_rollout_s"] = dt
        res["und_tokens"] = ub.num_tokens
        res["und_tokens_per_s"] = ub.num_tokens / dt
        for name, b in (("und", ub), ("gen", gb)):
            lp, m = ad.token_logprobs(b, torch.arange(min(b.size, a.micro_batch)), est_seed=0, grad=False)
            res[f"{name}_logp_max_abs_diff"] = float((lp - b.old_logp[: lp.shape[0]].to(lp.device)).abs().max())
        adv_u = torch.randn(ub.size)
        adv_g = torch.randn(gb.size)
        times = []
        for _ in range(2):
            sync(dev)
            t0 = time.perf_counter()
            m = pol.update([SideInput(ub, adv_u), SideInput(gb, adv_g)], LossCfg(), micro_batch=a.micro_batch)
            sync(dev)
            times.append(time.perf_counter() - t0)
        res["update_s"] = times[-1]
        res["update_first_s"] = times[0]
        res["update_tokens_per_s"] = m["update_tokens"] / times[-1]
        res["grad_norm"] = m["grad_norm"]
        if dev.type == "cuda":
            res["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            res["gpu"] = torch.cuda.get_device_name(0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
