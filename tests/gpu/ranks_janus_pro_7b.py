"""N ranks of FSDP2 PairGRPO at Janus-Pro-7B dimensions: memory per rank and step time.

    torchrun --nproc-per-node 8 tests/gpu/ranks_janus_pro_7b.py --out ranks_7b.json    # GPUs: 7B dims, bf16 params / fp32 reduce
    torchrun --nproc-per-node 2 tests/gpu/ranks_janus_pro_7b.py --tiny                 # CPU smoke test of this script (gloo)

Random weights (no download): the model is built on the meta device, sharded with the adapter's
``shard()`` hook (``dist.shard``: every directly-called submodule, then the root), materialised shard
by shard on each rank's device and initialised N(0, 0.02). Dimensions follow Janus-Pro-7B's config
(LLM 30 layers, hidden 4096, 32 heads, MLP 11008, vocab 102400; SigLIP-L/16 at 384 px -> 576 image
tokens; VQ 16384 codes), read from configs, not from a downloaded checkpoint. Each rank rolls out
``--prompts`` x ``--k`` images under ``gathered()`` (one all-gather) and runs ``--steps`` PairGRPO updates
on them (gen side, language model trained). Rank 0 prints one JSON line: rollout s, update s/step, peak
memory per rank (GPU: max_memory_allocated; CPU: ru_maxrss) next to ``pairuni plan``'s figure for the same
configuration (preset Janus-Pro-7B, or the tiny config; the same ranks, K, micro-batch, checkpointing
and precision), so a GPU run checks the planner: ``plan_total_gib`` is the plan's per-rank peak and
``peak_over_plan`` measured / planned per rank. The load follows the project's memory discipline: on
CUDA frozen weights are stored in bf16 and compute runs under bf16 autocast over fp32 masters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python_sidecar"))

from pairuni_sidecar import dist  # noqa: E402


def janus_pro_7b_config(tiny: bool):
    from transformers import JanusConfig

    from pairuni_sidecar.adapters.tiny import tiny_janus_config

    if tiny:
        return tiny_janus_config()
    return JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=102400,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=30,
            num_attention_heads=32,
            num_key_value_heads=32,
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
            projection_dim=4096,
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
            projection_dim=4096,
            image_token_embed_dim=4096,
            num_hidden_layers=2,
        ),
        image_token_id=3,
        tie_word_embeddings=False,
    )


def peak_bytes(dev: torch.device) -> int:
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def plan_figure(a, ranks: int, batch, adapter) -> dict:
    """``pairuni plan`` for what this run does: the update trains the language model on the gen side only,
    ``batch.size`` images of ``num_image_tokens`` codes per rank, in micro-batches of ``a.micro_batch``."""
    import tempfile

    from pairuni_sidecar.contract.generated import PlanRequest
    from pairuni_sidecar.plan.memory import plan

    gpu = torch.cuda.is_available()
    common = dict(
        family="janus",
        ranks=ranks,
        k=a.k,
        micro_batch=a.micro_batch,
        checkpointing=gpu,
        precision="bf16-mixed" if gpu else "fp32",
        text_tokens=int(batch.extra["prompt_ids"].shape[-1]),
        image_tokens=adapter.num_image_tokens,
        gpu_gib=torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else 80,
    )
    if not a.tiny:
        return plan(PlanRequest(preset="Janus-Pro-7B", **common))
    with tempfile.TemporaryDirectory() as d:  # the planner reads a model directory's config.json only
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(janus_pro_7b_config(True).to_json_string())
        return plan(PlanRequest(model_dir=d, **common))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--prompts", type=int, default=1, help="prompts per rank")
    ap.add_argument("--k", type=int, default=4, help="images per prompt")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    from transformers import JanusForConditionalGeneration

    from pairuni_sidecar.adapters import GenItem
    from pairuni_sidecar.adapters.janus import JanusAdapter
    from pairuni_sidecar.adapters.tiny import tiny_tokenizer
    from pairuni_sidecar.contract import GenSampling
    from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput

    w = dist.init_world(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("meta"):
        model = JanusForConditionalGeneration(janus_pro_7b_config(a.tiny))
    adapter = JanusAdapter.from_model(model, tiny_tokenizer())
    adapter._set_trainable(("language_model",))
    if w.device.type == "cuda":  # the load spec's discipline (autocast "auto"), as JanusAdapter.__init__ applies it
        from pairuni_sidecar.adapters.base import store_frozen

        adapter.amp = torch.bfloat16
        store_frozen(model, adapter.amp)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        adapter.gradient_checkpointing = True
    if w.distributed:
        adapter.shard()  # FSDP2 over the meta model: each rank materialises only its shards below
    model.to_empty(device=w.device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
        for name, b in model.named_buffers():  # meta buffers come back uninitialised
            if name.endswith("position_ids"):
                b.copy_(torch.arange(b.shape[-1], device=b.device).expand_as(b))
            elif b.is_floating_point():
                b.zero_()
        for m in model.modules():  # rotary tables are buffers computed at init: recompute them
            if hasattr(m, "inv_freq") and hasattr(m, "rope_init_fn"):
                inv, _ = m.rope_init_fn(m.config, w.device)
                m.inv_freq.copy_(inv)
    adapter.device = w.device
    if w.distributed:
        dist.init_root(model)
    adapter.sharded = True  # Policy builds its optimizer over these shards and does not shard again
    policy = Policy(adapter, OptimCfg(lr=1e-6, micro_batch=a.micro_batch))
    build_s = time.perf_counter() - t0

    items = [GenItem(f"a photo of object {w.rank * a.prompts + i}") for i in range(a.prompts)]
    sync = (lambda: torch.cuda.synchronize()) if w.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    with adapter.gathered():
        batch = adapter.gen_rollout(items, a.k, GenSampling(cfg_weight=5.0, seed=w.rank))
    sync()
    rollout_s = time.perf_counter() - t0
    adv = torch.randn(batch.size)
    times = []
    for step in range(a.steps):
        sync()
        t0 = time.perf_counter()
        policy.update([SideInput(batch, adv)], LossCfg(), est_seed=step)
        sync()
        times.append(time.perf_counter() - t0)
    peaks = [torch.tensor(float(peak_bytes(w.device)))]
    if w.distributed:
        import torch.distributed as tdist

        out = [torch.zeros(1) for _ in range(w.size)]
        tdist.all_gather(out, peaks[0].reshape(1))
        peaks = out
    planned = plan_figure(a, w.size, batch, adapter)
    if w.rank == 0:
        res = {
            "check": "ranks_janus_pro_7b",
            "tiny": a.tiny,
            "world": w.size,
            "device": str(w.device),
            "params": int(sum(p.numel() for p in model.parameters())),
            "images_per_rank": batch.size,
            "image_tokens": adapter.num_image_tokens,
            "build_s": round(build_s, 2),
            "rollout_s": round(rollout_s, 3),
            "update_s_per_step": [round(t, 3) for t in times],
            "peak_mem_gib_per_rank": [round(float(p) / 2**30, 3) for p in peaks],
            "plan": planned,
            "plan_total_gib": round(planned["bytes"]["total"] / 2**30, 3),
            "peak_over_plan": [round(float(p) / planned["bytes"]["total"], 3) for p in peaks],
            "torch": torch.__version__,
        }
        line = json.dumps(res)
        if a.out:
            with open(a.out, "w") as f:
                f.write(line + "\n")
        print(line, flush=True)
    dist.barrier()
    dist.exit_process(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
