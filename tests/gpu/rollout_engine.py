"""Image-rollout speed of the static-cache engine against the reference loop, at Janus-Pro-1B and -7B dims.

    python tests/gpu/rollout_engine.py --out rollout_engine.json            # GPU: 1B and 7B, 16 and 64 images
    python tests/gpu/rollout_engine.py --models 1b --images 16               # a subset
    python tests/gpu/rollout_engine.py --tiny                                # CPU smoke test of this script

Random-init ``JanusForConditionalGeneration`` built on the device in bf16 (weights as a bf16 checkpoint
holds them; no autocast, no fp32 master copy; ``--weights fp32-autocast`` measures the adapter's
training setup instead: fp32 master weights under bf16 autocast, which casts weights every step), wrapped with ``JanusAdapter.from_model`` twice:
``rollout_engine=static`` with ``rollout_compile=on`` (CUDA graphs) and ``rollout_engine=reference``.
Each configuration samples ``images`` images (``images / k`` prompts of ragged lengths, k = 8, CFG w = 5,
so 2 x images LM rows) through the adapter's decoder (``_gen_decode``, what ``gen_rollout`` runs before
the VQ decode, which is timed once apart). Per engine: images/s, image tokens/s, decode-step ms
(``(rollout - prefill) / steps``, the prefill timed alone on the same rows) and, for the engine, the
warm-up (compile + CUDA-graph capture) and the host syncs of one rollout (``torch.cuda`` sync debug
mode: the engine should only sync every 32 steps).

The bound: one decode step streams every weight it uses once (LM layers, final norm, generation head,
generation embedding + aligner; the embedding table and vision/VQ towers are not read) plus the KV
cache written so far. ``bound_ms = bytes / bandwidth`` with the bandwidth measured here (a large
device-to-device copy, read + write bytes) and the weight-only bound beside it. Dimensions follow
deepseek-community/Janus-Pro-1B and -7B configs (read from configs, not from checkpoints).
Prints one JSON line (also written to ``--out``, rewritten after each model so a partial run keeps
what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python_sidecar"))

DIMS = {  # LLM (hidden, layers, heads, MLP); SigLIP-L/16 384 px and the 16384-code VQ for both
    "1b": dict(hidden=2048, layers=24, heads=16, mlp=5632),
    "7b": dict(hidden=4096, layers=30, heads=32, mlp=11008),
}


def janus_config(model: str):
    from transformers import JanusConfig

    from pairuni_sidecar.adapters.tiny import tiny_janus_config

    if model == "tiny":
        return tiny_janus_config(image_size=64, patch_size=4)  # 256 image tokens
    d = DIMS[model]
    return JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=102400,
            hidden_size=d["hidden"],
            intermediate_size=d["mlp"],
            num_hidden_layers=d["layers"],
            num_attention_heads=d["heads"],
            num_key_value_heads=d["heads"],
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
            projection_dim=d["hidden"],
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
            projection_dim=d["hidden"],
            image_token_embed_dim=d["hidden"],
            num_hidden_layers=2,
        ),
        image_token_id=3,
        tie_word_embeddings=False,
    )


def emit(res: dict, out: str | None) -> None:
    """The record as one JSON line: printed, and written atomically to ``out`` if given."""
    line = json.dumps(res)
    if out:
        tmp = f"{out}.tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, out)
    print(line, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measured_bandwidth(dev: torch.device) -> float | None:
    """Bytes/s of a 4 GiB device-to-device copy (2 GiB read + 2 GiB written), best of 5."""
    if dev.type != "cuda":
        return None
    src = torch.empty(2**30, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(6):
        sync(dev)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * 2**31 / best


def step_bytes(model, rows: int, mean_len: float) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) one decode step must read, in bf16 (2 bytes a value, also with
    ``--weights fp32-autocast``: the bound is what bf16 weights would allow)."""
    m = model.model
    used = [
        m.language_model.layers,
        m.language_model.norm,
        m.generation_head,
        m.generation_embeddings,
        m.generation_aligner,
    ]
    w = sum(2 * p.numel() for mod in used for p in mod.parameters())
    tc = model.config.text_config
    kv_per_token = 2 * tc.num_hidden_layers * tc.num_key_value_heads * (tc.hidden_size // tc.num_attention_heads)
    return w, int(2 * kv_per_token * rows * mean_len)


def host_syncs(fn) -> int | None:
    """Synchronizing CUDA calls made by ``fn()`` (torch's sync debug mode, as warnings)."""
    if not torch.cuda.is_available():
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def run_model(name: str, a, dev: torch.device, res: dict) -> None:
    from transformers import JanusForConditionalGeneration

    from pairuni_sidecar.adapters.janus import JanusAdapter, _left_pad
    from pairuni_sidecar.adapters.tiny import tiny_tokenizer

    dtype = torch.float32 if name == "tiny" or a.weights == "fp32-autocast" else torch.bfloat16
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(dev):
        model = JanusForConditionalGeneration(janus_config(name)).to(dtype).eval()
    model.requires_grad_(False)
    sync(dev)
    rec: dict = {
        "build_s": round(time.perf_counter() - t0, 2),
        "dtype": str(dtype).replace("torch.", ""),
        "params_total": sum(p.numel() for p in model.parameters()),
    }
    tok = tiny_tokenizer()
    compile_ = "on" if dev.type == "cuda" else "off"
    paths = {
        "engine": JanusAdapter.from_model(
            model, tok, options={"rollout_engine": "static", "rollout_compile": compile_}
        ),
        "reference": JanusAdapter.from_model(model, tok, options={"rollout_engine": "reference"}),
    }
    if a.weights == "fp32-autocast" and dev.type == "cuda":
        for p in paths.values():  # the adapter's training configuration: fp32 master weights, bf16 autocast
            p.amp = torch.bfloat16
    ad = paths["engine"]
    N, w = ad.num_image_tokens, 5.0
    rec["image_tokens"] = N
    for n_img in a.images:
        k = min(a.k, n_img)
        prompts = [f"a photo of object {i}" + " with details" * (i % 3) for i in range(max(1, n_img // k))]
        cond = [ad.gen_prompt_ids(p) for p in prompts for _ in range(k)]
        ids, mask = _left_pad(ad._gen_rows(cond, True), ad.pad_id)
        ids, mask = ids.to(dev), mask.to(dev)
        rows, n_img = ids.shape[0], len(cond)
        wb, kvb = step_bytes(model, rows, ids.shape[1] + N / 2)
        r: dict = {"images": n_img, "rows": rows, "prompt_len": ids.shape[1], "weight_bytes": wb, "kv_bytes_mean": kvb}
        with torch.no_grad():
            lm = model.model.language_model
            for i in range(2):
                sync(dev)
                t0 = time.perf_counter()
                lm(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=mask, use_cache=True)
                sync(dev)
            r["prefill_s"] = time.perf_counter() - t0

        def rollout(path: str, seed: int):
            g = torch.Generator(device=dev).manual_seed(seed)
            return paths[path]._gen_decode(ids, mask, w=w, T=1.0, cfg=True, generator=g, logp=True)

        sync(dev)
        t0 = time.perf_counter()
        rollout("engine", 0)  # compile + CUDA-graph capture for this batch shape
        sync(dev)
        r["engine_warmup_s"] = round(time.perf_counter() - t0, 2)
        codes = {}
        for path in ("engine", "reference"):
            best = float("inf")
            for rep in range(a.repeats):
                sync(dev)
                t0 = time.perf_counter()
                codes[path], _ = rollout(path, 1)
                sync(dev)
                best = min(best, time.perf_counter() - t0)
            r[f"{path}_s"] = round(best, 4)
            r[f"{path}_images_per_s"] = round(n_img / best, 3)
            r[f"{path}_tokens_per_s"] = round(n_img * N / best, 1)
            r[f"{path}_step_ms"] = round(1e3 * (best - r["prefill_s"]) / N, 3)
        r["prefill_s"] = round(r["prefill_s"], 4)
        r["speedup_images_per_s"] = round(r["engine_images_per_s"] / r["reference_images_per_s"], 2)
        r["codes_equal_frac"] = round(float((codes["engine"] == codes["reference"]).float().mean()), 4)
        r["engine_host_syncs"] = host_syncs(lambda: rollout("engine", 2))
        bw = res.get("bandwidth_bytes_per_s")
        if bw:
            r["bound_weights_ms"] = round(1e3 * wb / bw, 3)
            r["bound_ms"] = round(1e3 * (wb + kvb) / bw, 3)
            r["engine_step_over_bound"] = round(r["engine_step_ms"] / r["bound_ms"], 2)
        t0 = time.perf_counter()
        ad.decode_images(codes["engine"][: min(16, n_img)].cpu(), chunk=16)
        sync(dev)
        r["vq_decode_s_per_image"] = round((time.perf_counter() - t0) / min(16, n_img), 4)
        rec[str(n_img)] = r
        res[name] = rec
        emit(res, a.out)
    paths.clear()  # the closure above reads the dict, so the name stays bound
    del ad, model
    if dev.type == "cuda":
        rec["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny dims on the CPU (smoke test of this script)")
    ap.add_argument("--models", default="1b,7b")
    ap.add_argument("--images", default="16,64")
    ap.add_argument("--k", type=int, default=8, help="images per prompt")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--weights",
        choices=["bf16", "fp32-autocast"],
        default="bf16",
        help="bf16 weights (a checkpoint's dtype) or the adapter's training setup: fp32 master + bf16 autocast",
    )
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.tiny:
        models, a.images = ["tiny"], [int(x) for x in (a.images if a.images != "16,64" else "4,8").split(",")]
        torch.set_num_threads(1)
    else:
        if dev.type != "cuda":
            raise SystemExit("Janus-Pro dims need a GPU; use --tiny for a CPU smoke test")
        models, a.images = a.models.split(","), [int(x) for x in a.images.split(",")]
    res: dict = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "weights": a.weights,
        "cfg_weight": 5.0,
        "k": a.k,
        "bandwidth_bytes_per_s": measured_bandwidth(dev),
    }
    for m in models:
        run_model(m, a, dev, res)
    emit(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
