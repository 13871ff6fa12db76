"""One memory discipline for every family (the load spec's autocast / gradient_checkpointing):
activation checkpointing per block changes no number; under bf16 compute the frozen weights and the
reference model are stored in bf16 and the trainable ones stay fp32 masters; Bagel's data-parallel
SFT normalises by the step's whole token counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.adapters import GenItem, LoadSpec, SFTExample, UndItem, load_adapter  # noqa: E402
from pairuni_sidecar.adapters.base import checkpoint_blocks  # noqa: E402
from pairuni_sidecar.adapters.tiny import build_tiny_janus  # noqa: E402
from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel  # noqa: E402
from pairuni_sidecar.contract import GenSampling, UndSampling  # noqa: E402
from pairuni_sidecar.diffusion.tiny_model import build_tiny_dimoo  # noqa: E402
from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput  # noqa: E402

BAGEL = {"vae_image_size": 32, "vit_image_size": 28}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("mem")
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"im{i}.png")
    return {
        "janus": build_tiny_janus(str(d / "janus"), seed=0),
        "dimoo": build_tiny_dimoo(str(d / "dimoo"), seed=0),
        "bagel": build_tiny_bagel(str(d / "bagel"), seed=0),
        "im": [str(d / f"im{i}.png") for i in range(2)],
    }


def _grads(policy: Policy) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in zip(policy.param_names, policy.params) if p.grad is not None}


def test_checkpointed_block_equals_the_plain_block_forward_and_backward():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
    ck = torch.nn.Sequential(*(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4)))
    ck.load_state_dict(plain.state_dict())
    names = [n for n, _ in ck.named_parameters()]
    checkpoint_blocks([ck])
    checkpoint_blocks([ck])  # idempotent: wrapping twice would recompute twice
    assert [n for n, _ in ck.named_parameters()] == names  # the module tree (checkpoint keys) is unchanged
    x = torch.randn(3, 4)
    plain(x).pow(2).sum().backward()
    out = ck(x)
    out.pow(2).sum().backward()
    for (n, a), (_, b) in zip(plain.named_parameters(), ck.named_parameters()):
        assert torch.equal(a.grad, b.grad), n
    with torch.no_grad():  # no-grad passes run the block as it is
        assert torch.equal(plain(x), ck(x))


def test_dimoo_update_with_checkpointed_blocks_equals_without(dirs):
    def step(gc: bool):
        torch.manual_seed(0)
        a = load_adapter("dimoo", LoadSpec(path=dirs["dimoo"], device="cpu", gradient_checkpointing=gc))
        pol = Policy(a, OptimCfg(lr=1e-3, micro_batch=4))
        ub = a.und_rollout(
            [UndItem(dirs["im"][0], "what?")], 4, UndSampling(max_new_tokens=4, seed=1, options={"steps": 2})
        )
        gb = a.gen_rollout([GenItem("a red dot")], 4, GenSampling(cfg_weight=2.0, seed=1, options={"steps": 4}))
        adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
        pol.update([SideInput(ub, adv), SideInput(gb, adv)], LossCfg(), est_seed=0)
        return a, {n: p.detach().clone() for n, p in a.model.named_parameters()}

    a_on, on = step(True)
    a_off, off = step(False)
    assert a_on.describe()["gradient_checkpointing"] and not a_off.describe()["gradient_checkpointing"]
    assert set(on) == set(off)
    assert max(float((on[k] - off[k]).abs().max()) for k in on) == 0.0


def test_bagel_sft_with_checkpointed_layers_equals_without(dirs):
    ex = [SFTExample("und", dirs["im"][0], "Color? A. red B. blue", "A"), SFTExample("gen", dirs["im"][1], "a square")]
    grads = {}
    for gc in (True, False):
        a = load_adapter(
            "bagel",
            LoadSpec(
                adapter="bagel",
                path=dirs["bagel"],
                device="cpu",
                autocast="off",
                gradient_checkpointing=gc,
                train_modules=["language_model", "vit"],
                options=BAGEL,
            ),
        )
        pol = Policy(a, OptimCfg(lr=1e-3))
        pol.optimizer.zero_grad()
        a.train_mode(True)
        a.combine_sft_losses(a.sft_loss(ex, seed=5)).backward()
        grads[gc] = _grads(pol)
    assert set(grads[True]) == set(grads[False]) and grads[True]
    assert max(float((grads[True][k] - grads[False][k]).abs().max()) for k in grads[True]) <= 1e-6


def test_bagel_sft_means_divide_by_the_steps_token_counts(dirs):
    """The CE / MSE normalisers are computed from the texts and the image size (every rank knows them
    without a collective): they equal the token counts the forward passes actually score."""
    import random

    a = load_adapter(
        "bagel", LoadSpec(adapter="bagel", path=dirs["bagel"], device="cpu", autocast="off", options=BAGEL)
    )
    ex = [
        SFTExample("und", dirs["im"][0], "Color?", "A ok ok"),
        SFTExample("gen", dirs["im"][1], "a square"),
        SFTExample("und", dirs["im"][1], "Which?", "B"),
        SFTExample("gen", dirs["im"][0], "a dot"),
    ]
    ce = mse = 0.0
    n_ce = n_mse = 0
    with torch.no_grad():
        for i, (u, g) in enumerate(a.pair_examples(ex)):
            rng = random.Random(7 * 1_000_003 + i)
            gen = torch.Generator().manual_seed(rng.randrange(2**31))
            with torch.random.fork_rng():
                torch.manual_seed(rng.randrange(2**31))
                out = a.forward_pack(a.pack(u, g, rng, gen))
            assert out["ce"].numel() == len(a._enc(u.target)) + 1
            ce, mse = ce + float(out["ce"].sum()), mse + float(out["mse"].mean(-1).sum())
            n_ce, n_mse = n_ce + out["ce"].numel(), n_mse + out["mse"].shape[0]
        got = a.sft_loss(ex, seed=7)
    assert n_mse == 2 * (32 // 16) ** 2
    assert float(got["ce"]) == pytest.approx(ce / n_ce, rel=1e-6)
    assert float(got["mse"]) == pytest.approx(mse / n_mse, rel=1e-6)


@pytest.mark.parametrize("family", ["janus", "dimoo"])
def test_bf16_compute_stores_frozen_weights_and_the_reference_in_bf16(dirs, family):
    """autocast bf16 (the GPU default; forced here on the CPU): trainable weights stay fp32 masters,
    frozen ones and the whole reference model are bf16, and a rollout + update + reference pass run."""
    train = ["language_model"] if family == "janus" else ["blocks.1."]
    spec = LoadSpec(path=dirs[family], device="cpu", autocast="bf16", train_modules=train, ref_model_dir=dirs[family])
    a = load_adapter(family, spec)
    dtypes = {n: p.dtype for n, p in a.model.named_parameters()}
    trainable = {n for n, _ in a.trainable_parameters()}
    assert trainable and len(trainable) < len(dtypes)
    assert all(dtypes[n] == torch.float32 for n in trainable)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if n not in trainable)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in a.ref_model.parameters())
    pol = Policy(a, OptimCfg(lr=1e-3, micro_batch=4))
    opts = {"steps": 2} if family == "dimoo" else {}
    ub = a.und_rollout([UndItem(dirs["im"][0], "what?")], 2, UndSampling(max_new_tokens=3, seed=1, options=opts))
    gb = a.gen_rollout(
        [GenItem("a dot")], 2, GenSampling(cfg_weight=2.0, seed=1, options={"steps": 3} if family == "dimoo" else {})
    )
    before = {n: p.detach().clone() for n, p in a.trainable_parameters()}
    inputs = [SideInput(ub, torch.tensor([1.0, -1.0])), SideInput(gb, torch.tensor([1.0, -1.0]))]
    m = pol.update(inputs, LossCfg(beta=0.1), est_seed=0)  # beta > 0: reference passes in bf16
    assert np.isfinite(m["loss"]) and m["grad_norm"] > 0 and "und/kl_ref" in m and "gen/kl_ref" in m
    assert any(not torch.equal(p, before[n]) for n, p in a.trainable_parameters())


def test_cpu_offload_needs_cuda_ranks(monkeypatch):
    """FSDP2's CPUOffloadPolicy moves shards between host and GPU: on CPU ranks it is refused by name
    before any collective runs."""
    from pairuni_sidecar import dist
    from pairuni_sidecar.errors import BadRequest

    monkeypatch.setattr(
        dist,
        "current",
        lambda: dist.World(rank=0, size=2, local_rank=0, device=torch.device("cpu"), mesh=None, restart=0),
    )
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(BadRequest, match="model.cpuOffload .* needs CUDA ranks") as ei:
        dist.shard(list(m), m, offload=True)
    assert ei.value.detail["field"] == "model.cpuOffload"
    assert not dist.is_sharded(m[0].weight)  # nothing was wrapped
