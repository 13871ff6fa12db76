"""Bagel SFT step at BAGEL-7B-MoT dimensions (random init, bf16 autocast): tokens/s and peak memory per
freeze option, through the real adapter (``BagelAdapter``) and the generic ``Policy.sft_step``.

    python tests/gpu/bagel_sft_profile.py                        # GPU: 7B-MoT dims, 512 px generation, 378 px ViT
    python tests/gpu/bagel_sft_profile.py --tiny                 # CPU smoke test of this script (tiny dims)
    python tests/gpu/bagel_sft_profile.py --out tests/gpu/results/bagel_sft_<gpu>_<date>.json

Dimensions: Qwen2-7B (28 layers, hidden 3584, MLP 18944, 28 heads / 4 KV, vocab 152064) doubled into
the MoT und/gen experts; SigLIP-so400m/14 (hidden 1152, MLP 4304, 16 heads, 27 layers stored, 26 used);
FLUX VAE (z 16, 8x). These follow BAGEL-7B-MoT's published configs as read, not a downloaded checkpoint.

Options (``train_modules``; Bagel's flags in brackets): ``full`` = language_model + vit; ``freeze_vit``
= language_model [--freeze_vit]; ``freeze_und`` = gen_expert [--freeze_und]; ``freeze_llm`` = vit
[--freeze_llm]; ``lora16`` = LoRA rank 16 on both experts' projections. Trainable weights are fp32 masters with AdamW state (16 B/param incl. grads); frozen
weights are bf16 (2 B/param). An option that does not fit records ``"oom"``.

Each option's record carries ``pairuni plan``'s per-GPU figure for the same step (``plan_total_gib``,
``plan_verdict``) and, on a GPU, ``peak_over_plan`` = max_memory_allocated / plan.

Prints one JSON line per option and the whole record at the end (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from PIL import Image

OPTIONS = {
    "full": ["language_model", "vit"],
    "freeze_vit": ["language_model"],
    "freeze_und": ["gen_expert"],
    "freeze_llm": ["vit"],
    "lora16": ["language_model"],  # with lora_rank 16 (see profile)
}


def write_model_dir(d: str, tiny: bool, device: str) -> dict:
    """A random-init model directory in the BAGEL-7B-MoT layout (bf16 weights on disk, like the release)."""
    import nemo_automodel.components.models.bagel as bagel
    from safetensors.torch import save_file

    from pairuni_sidecar.adapters.bagel import DEFAULT_GEOMETRY
    from pairuni_sidecar.adapters.tiny_bagel import TINY_GEOMETRY, build_tiny_bagel, tiny_tokenizer

    if tiny:
        build_tiny_bagel(d)
        return {"llm": "tiny", "geometry": TINY_GEOMETRY}
    llm = {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "model_type": "qwen2",
    }
    vit = {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 980,
        "num_channels": 3,
        "model_type": "siglip_vision_model",
    }
    g = DEFAULT_GEOMETRY
    cfg = bagel.BagelConfig(
        text_config=dict(llm, layer_module="Qwen2MoTDecoderLayer", qk_norm=True),
        vision_config=dict(vit),
        visual_und=True,
        visual_gen=True,
        vae_config={"z_channels": 16, "downsample": 8},
        max_latent_size=g["max_latent_size"],
        vit_max_num_patch_per_side=g["vit_max_num_patch_per_side"],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = bagel.BagelForUnifiedMultimodal(cfg).to(torch.bfloat16)
    os.makedirs(d, exist_ok=True)
    save_file(
        {k.removeprefix("model."): v.cpu().contiguous() for k, v in model.state_dict().items()},
        os.path.join(d, "ema.safetensors"),
    )
    del model
    vae = bagel.AutoEncoder(bagel.AutoEncoderParams(**g["ae"]))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, os.path.join(d, "ae.safetensors"))
    for name, c in (("llm_config.json", llm), ("vit_config.json", vit)):
        with open(os.path.join(d, name), "w") as f:
            json.dump(c, f)
    tiny_tokenizer().save_pretrained(d)  # ids only matter for shapes; Qwen2's tokenizer is not downloaded
    return {"llm": llm, "vit": vit}


def pair_images(d: str, size: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    u, g = os.path.join(d, "u.png"), os.path.join(d, "g.png")
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(u)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(g)
    return u, g


def profile(
    model_dir: str, modules: list[str], *, device: str, tiny: bool, steps: int, u: str, g: str, lora: bool = False
) -> dict:
    from pairuni_sidecar.adapters import LoadSpec, SFTExample, load_adapter
    from pairuni_sidecar.contract.generated import LoadOptim
    from pairuni_sidecar.policy import Policy

    opts = {"vae_image_size": 32, "vit_image_size": 28} if tiny else {"vae_image_size": 512, "vit_image_size": 378}
    if lora:
        opts["lora_rank"] = 16
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    a = load_adapter(
        "bagel",
        LoadSpec(adapter="bagel", path=model_dir, device=device, autocast="bf16", train_modules=modules, options=opts),
    )
    load_s = time.perf_counter() - t0
    pol = Policy(a, LoadOptim(lr=2e-5, betas=[0.9, 0.95], eps=1e-15, weight_decay=0.0, max_grad_norm=1.0))
    question = "What is shown in the image? Answer in one sentence. " * (1 if tiny else 4)
    ex = [
        SFTExample("und", u, question, "A red square above a blue circle."),
        SFTExample("gen", g, "a red square above a blue circle on a white background"),
    ]
    pk = a.pack(ex[0], ex[1], __import__("random").Random(0), torch.Generator().manual_seed(0))
    times = []
    for s in range(steps + 1):  # the first step warms up (allocator, kernels)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        m = pol.sft_step(ex, seed=s)
        if device == "cuda":
            torch.cuda.synchronize()
        if s:
            times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    out = {
        "train_modules": modules,
        "params_trainable": a.describe()["params_trainable"],
        "params_total": a.describe()["params_total"],
        "seq_tokens": pk.length,
        "vae_tokens": len(pk.vae_token_indexes),
        "vit_tokens": len(pk.vit_token_indexes),
        "step_s": round(step_s, 4),
        "tokens_per_s": round(pk.length / step_s, 1),
        "load_s": round(load_s, 1),
        "ce": round(m["ce/sft_loss"], 4),
        "mse": round(m["mse/sft_loss"], 4),
    }
    if device == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    # ``pairuni plan`` for the same step: one pair, its text split over the und and gen samples. The plan
    # sizes the understanding image like the generated one (512 px), this step's ViT sees 378 px: the
    # plan's ViT activations are an upper bound here.
    from pairuni_sidecar.contract.generated import PlanRequest
    from pairuni_sidecar.plan.memory import plan

    p = plan(
        PlanRequest(
            family="bagel",
            model_dir=model_dir,
            ranks=1,
            mode="sft",
            micro_batch=1,
            train_modules=modules,
            lora_rank=opts.get("lora_rank", 0),
            image_tokens=len(pk.vae_token_indexes),
            text_tokens=-(-(pk.length - len(pk.vit_token_indexes) - len(pk.vae_token_indexes)) // 2),
            precision="bf16-mixed" if device == "cuda" else "fp32",
            gpu_gib=torch.cuda.get_device_properties(0).total_memory / 2**30 if device == "cuda" else 80,
        )
    )
    out["plan_total_gib"] = round(p["bytes"]["total"] / 2**30, 4)
    out["plan_verdict"] = p["verdict"]
    if device == "cuda":
        out["peak_over_plan"] = round(out["peak_mem_gib"] / out["plan_total_gib"], 3)
    del pol, a
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny dims on CPU (smoke test of this script)")
    ap.add_argument("--options", default=",".join(OPTIONS), help=f"comma list of {list(OPTIONS)}")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", help="write the JSON record here")
    a = ap.parse_args()
    device = "cpu" if a.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny for the CPU smoke test")
    work = tempfile.mkdtemp(prefix="bagel-profile-")
    try:
        dims = write_model_dir(os.path.join(work, "model"), a.tiny, device)
        u, g = pair_images(work, 64 if a.tiny else 512)
        record = {
            "script": "tests/gpu/bagel_sft_profile.py",
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__,
            "tiny": a.tiny,
            "dims": dims,
            "results": {},
        }
        for name in a.options.split(","):
            try:
                r = profile(
                    os.path.join(work, "model"),
                    OPTIONS[name],
                    device=device,
                    tiny=a.tiny,
                    steps=a.steps,
                    u=u,
                    g=g,
                    lora=name.startswith("lora"),
                )
            except torch.OutOfMemoryError as e:
                r = {"train_modules": OPTIONS[name], "oom": True, "error": str(e).splitlines()[0]}
                gc.collect()
                torch.cuda.empty_cache()
            record["results"][name] = r
            print(json.dumps({name: r}), flush=True)
        if a.out:
            with open(a.out, "w") as f:
                json.dump(record, f, indent=1)
        print(json.dumps(record))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
