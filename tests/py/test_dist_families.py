"""FSDP2 for Lumina-DiMOO (PairGRPO) and Bagel (SFT) on torch.distributed (gloo, 2 CPU ranks): one
update at 2 ranks equals 1 rank, and a DCP checkpoint written at one world size resumes at another to
the uninterrupted numbers (``dist_family_worker.py``; the Janus checks are in ``test_dist.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from test_dist import _worst, torchrun

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "dist_family_worker.py")
FAMILIES = ("dimoo", "bagel-lora", "bagel-ema")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from PIL import Image

    from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel
    from pairuni_sidecar.diffusion.tiny_model import build_tiny_dimoo

    d = tmp_path_factory.mktemp("families")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / "a.png")
    for i, color in enumerate([(220, 30, 30), (30, 30, 220)]):
        arr = np.zeros((40, 40, 3), np.uint8) + np.array(color, np.uint8)
        arr[10:30, 10:30] = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"im{i}.png")
    return {
        "dimoo": build_tiny_dimoo(str(d / "dimoo"), seed=0),
        "bagel": build_tiny_bagel(str(d / "bagel"), seed=0),
        "data": str(d),
    }


def _load(out: Path, family: str, mode: str, world: int) -> list[dict]:
    return [torch.load(out / f"{family}-{mode}-world{world}-rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    """Per family: 2 steps, a checkpoint, the 3rd step (uninterrupted) at 2 ranks and at 1 rank; each
    checkpoint resumed at the other world size for the 3rd step. One torchrun per (mode, world size):
    its ranks run the three families in turn (each rank process imports torch once, not three times)."""
    got = {}
    root = tmp_path_factory.mktemp("families")
    dirs = ",".join(models["dimoo" if fam == "dimoo" else "bagel"] for fam in FAMILIES)
    for saved, resumed in ((2, 1), (1, 2)):
        sdir = root / f"saved{saved}"
        sdir.mkdir()
        cks = [str(sdir / f"{fam}-ck") for fam in FAMILIES]
        torchrun(saved, sdir, WORKER, ",".join(FAMILIES), "save", dirs, models["data"], str(sdir), ",".join(cks))
        rdir = sdir / f"resumed{resumed}"
        rdir.mkdir()
        torchrun(resumed, rdir, WORKER, ",".join(FAMILIES), "resume", dirs, models["data"], str(rdir), ",".join(cks))
        for fam, ck in zip(FAMILIES, cks):
            got[(fam, "save", saved)] = _load(sdir, fam, "save", saved)
            got[(fam, "resume", saved, resumed)] = _load(rdir, fam, "resume", resumed)
            got[(fam, "ck", saved)] = ck
    return got


def _comparable(params: dict) -> dict:
    """DiMOO's attention key bias has a zero gradient in exact arithmetic (softmax ignores a shift shared
    by every key of a query): AdamW turns its rounding noise (~1e-9, summed in another order at another
    world size) into lr-sized steps, so it is left out of the cross-world comparisons."""
    out = dict(params)
    for k, v in params.items():
        if k.endswith(".qkv.bias"):
            n = v.numel() // 3
            out[k] = torch.cat([v[:n], v[2 * n :]])
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_two_ranks_equal_one_rank_after_three_steps(runs, family):
    (one,), (r0, r1) = runs[(family, "save", 1)], runs[(family, "save", 2)]
    assert not one["sharded"] and r0["sharded"] and r1["sharded"]  # world 2 ran FSDP2 (DTensor params)
    worst = _worst(_comparable(one["params"]), _comparable(r0["params"]))
    assert worst <= 1e-5, f"{family}: 2 ranks differ from 1 rank by {worst}"
    if one["extra"]:
        assert _worst(one["extra"], r0["extra"]) <= 1e-5
    for k in r0["params"]:  # both ranks hold the same full model
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    for k in r0["extra"]:  # replicated LoRA factors stay in step; the sharded EMA gathers whole
        assert torch.equal(r0["extra"][k], r1["extra"][k]), k
    # the runs trained: what trains moved by far more than the tolerance
    moved = max(_worst(one["params"], one["init"]), _worst(one["extra"], one["init_extra"]) if one["extra"] else 0.0)
    assert moved > 1e-3, moved
    for step in range(3):
        m1, a, b = one["seen"][f"m{step}"], r0["seen"][f"m{step}"], r1["seen"][f"m{step}"]
        assert float(a["grad_norm"]) == float(b["grad_norm"])  # one global norm on every rank
        assert abs(float(a["grad_norm"]) - float(m1["grad_norm"])) <= 1e-5 * float(m1["grad_norm"])
        if family == "dimoo":  # the ranks' loss parts add up to the one-process loss
            assert abs(float(a["loss"]) + float(b["loss"]) - float(m1["loss"])) <= 1e-6
            assert float(a["update_tokens"]) + float(b["update_tokens"]) == float(m1["update_tokens"])
        else:  # SFT metrics are the step's whole loss on every rank
            for k in ("loss", "ce/sft_loss", "mse/sft_loss"):
                assert abs(float(a[k]) - float(m1[k])) <= 1e-5 * abs(float(m1[k])), (step, k)


def test_dimoo_rollouts_under_fsdp2_are_bit_identical_to_unsharded(runs):
    (one,), (r0, r1) = runs[("dimoo", "save", 1)], runs[("dimoo", "save", 2)]
    for p, rank in ((0, r0), (1, r1)):
        for k, v in one["seen"][f"s0p{p}"].items():  # the same weights: the same tokens and log-probs
            assert torch.equal(v, rank["seen"][f"s0p{p}"][k]), (p, k)


def test_bagel_lora_trains_only_factors_and_bridges_at_two_ranks(runs):
    r0 = runs[("bagel-lora", "save", 2)][0]
    frozen = [k for k in r0["params"] if k.startswith("model.language_model.")]
    assert frozen and all(torch.equal(r0["params"][k], r0["init"][k]) for k in frozen)
    assert all(float(v.abs().max()) > 0 for k, v in r0["extra"].items() if k.endswith(".b"))  # B starts at 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("saved,resumed", [(2, 1), (1, 2)])
def test_checkpoint_resumes_at_another_world_size(runs, family, saved, resumed):
    savers = runs[(family, "save", saved)]
    ranks = runs[(family, "resume", saved, resumed)]
    assert savers[0]["sharded"] == (saved > 1) and ranks[0]["sharded"] == (resumed > 1)
    for r, got in enumerate(ranks):
        want = savers[r % saved]
        assert _worst(got["loaded"]["params"], want["saved"]["params"]) == 0.0
        assert _worst(got["loaded"]["exp_avg"], want["saved"]["exp_avg"]) == 0.0
        if want["saved_extra"]:  # EMA weights / LoRA factors come back exactly
            assert _worst(got["loaded_extra"], want["saved_extra"]) == 0.0
        assert got["loaded"]["optimizer_step"] == 2
    cont = savers[0]
    assert _worst(_comparable(ranks[0]["params"]), _comparable(cont["params"])) <= 1e-5
    if cont["extra"]:
        assert _worst(ranks[0]["extra"], cont["extra"]) <= 1e-5
    m_cont, m_res = cont["seen"]["m2"], ranks[0]["seen"]["m2"]
    assert abs(float(m_res["grad_norm"]) - float(m_cont["grad_norm"])) <= 1e-5 * float(m_cont["grad_norm"])


@pytest.mark.parametrize("family", FAMILIES)
def test_export_from_two_ranks_loads_with_the_family_loader(runs, family):
    from pairuni_sidecar.adapters import LoadSpec, load_adapter

    ck = runs[(family, "ck", 2)]
    want = runs[(family, "save", 2)][0]["saved"]["params"]
    if family == "dimoo":
        got = load_adapter("dimoo", LoadSpec(path=ck + "-hf", device="cpu")).model
        assert _worst({n: p.detach() for n, p in got.named_parameters()}, want) == 0.0
        return
    from safetensors.torch import load_file

    opts = {"vae_image_size": 32, "vit_image_size": 28}
    a = load_adapter(
        "bagel",
        LoadSpec(
            adapter="bagel", path=ck + "-hf", device="cpu", autocast="off", train_modules=["gen_expert"], options=opts
        ),
    )
    extra = runs[(family, "save", 2)][0]["saved_extra"]
    got = {n: p.detach() for n, p in a.model.named_parameters()}
    if family == "bagel-ema":
        # model.safetensors: the live weights (what the loader resumes from); ema.safetensors: the EMA,
        # gathered from its shards, under Bagel's own key names
        assert _worst({n: got[n] for n in want if n in got}, {n: want[n] for n in want if n in got}) == 0.0
        ema = load_file(str(Path(ck + "-hf") / "ema.safetensors"))
        assert _worst({k: ema[k.removeprefix("ema:model.")] for k in extra}, extra) == 0.0
        assert _worst(extra, {k: want[k.removeprefix("ema:")] for k in extra}) > 0  # the EMA lags the weights
    else:  # with lora.safetensors and no LoRA option the loader reads ema.safetensors: W + (alpha/r) B A
        n = "model.language_model.model.layers.1.mlp_moe_gen.down_proj"
        merged = want[n + ".weight"] + 2.0 * (extra[f"lora:{n}.b"] @ extra[f"lora:{n}.a"])
        assert torch.allclose(got[n + ".weight"], merged, atol=1e-6)
