"""Masked-diffusion math (diffusion/samplers.py, estimator.py) and the DiMOO adapter on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter
from pairuni_sidecar.adapters.base import EstimatorSeedError
from pairuni_sidecar.contract import GenSampling, UndSampling
from pairuni_sidecar.diffusion.estimator import estimator_seeds, masked_inputs, one_step_logprobs, prompt_masks
from pairuni_sidecar.diffusion.layout import gen_region, right_pad
from pairuni_sidecar.diffusion.samplers import guided, row_seed, sample_image, sample_text, transfer_schedule
from pairuni_sidecar.diffusion.tiny_model import TinyMDM, TinyMDMConfig, build_tiny_dimoo, tiny_layout
from pairuni_sidecar.policy import LossCfg, OptimCfg, Policy, SideInput

LAY = tiny_layout(96, 16)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyMDM(TinyMDMConfig(vocab_size=LAY.vocab_size)).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # dropout 0.1 in the saved config: the adapter must switch it off
    return build_tiny_dimoo(str(tmp_path_factory.mktemp("tiny") / "m"), seed=0, dropout=0.1)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
    return str(p)


def _text_rows(lens, L):
    rng = np.random.default_rng(1)
    seqs, starts = [], []
    for n in lens:
        head = [int(x) for x in rng.integers(0, 96, n)] + [LAY.boa]
        seqs.append(head + [LAY.mask] * L + [LAY.eoa])
        starts.append(len(head))
    ids, keep = right_pad(seqs, LAY.pad)
    return ids, keep, torch.tensor(starts).unsqueeze(1) + torch.arange(L)


def test_transfer_schedule_is_llada_linear():
    assert transfer_schedule(8, 2) == [4, 4]
    assert transfer_schedule(7, 3) == [3, 2, 2]


def test_batched_text_sampler_equals_per_sample(net):
    ids, keep, slots = _text_rows([5, 9, 7], 6)
    seeds = [row_seed(3, r) for r in range(3)]
    kw = dict(steps=4, block_length=3, temperature=1.0, support=LAY.text_support(), mask_id=LAY.mask)
    batched = sample_text(net, ids, keep, slots, seeds=seeds, **kw).gather(1, slots)
    for r in range(3):
        n = int(keep[r].sum())
        one = sample_text(net, ids[r : r + 1, :n], keep[r : r + 1, :n], slots[r : r + 1], seeds=seeds[r : r + 1], **kw)
        assert one.gather(1, slots[r : r + 1]).tolist() == batched[r : r + 1].tolist()
    assert not (batched == LAY.mask).any()
    # temperature > 0: two rollouts of one prompt differ
    same = sample_text(
        net,
        ids[:1].repeat(2, 1),
        keep[:1].repeat(2, 1),
        slots[:1].repeat(2, 1),
        seeds=[row_seed(3, 0), row_seed(3, 1)],
        **kw,
    ).gather(1, slots[:1].repeat(2, 1))
    assert same[0].tolist() != same[1].tolist()


def _gen_rows(lens):
    region, offs = gen_region(4, 4, LAY)
    rng = np.random.default_rng(2)
    seqs, slots = [], []
    for n in lens:
        p = [int(x) for x in rng.integers(0, 96, n)]
        seqs.append(p + region)
        slots.append([n + o for o in offs])
    ids, keep = right_pad(seqs, LAY.pad)
    u = [LAY.uncond] + region
    uids = torch.tensor([u] * len(lens))
    uslots = (1 + torch.tensor(offs)).unsqueeze(0).repeat(len(lens), 1)
    return ids, keep, torch.tensor(slots), (uids, torch.ones_like(uids, dtype=torch.bool), uslots)


def test_batched_image_sampler_equals_per_sample_and_keeps_separators(net):
    ids, keep, slots, un = _gen_rows([3, 8])
    seeds = [row_seed(5, 0), row_seed(5, 1)]
    kw = dict(steps=5, temperature=1.0, lay=LAY, cfg_weight=3.0)
    codes = sample_image(net, ids, keep, slots, seeds=seeds, uncond=un, **kw)
    assert codes.shape == (2, 16) and int(codes.min()) >= 0 and int(codes.max()) < LAY.codebook
    for r in range(2):
        n = int(keep[r].sum())
        one = sample_image(
            net,
            ids[r : r + 1, :n],
            keep[r : r + 1, :n],
            slots[r : r + 1],
            seeds=seeds[r : r + 1],
            uncond=tuple(t[r : r + 1] for t in un),
            **kw,
        )
        assert one.tolist() == codes[r : r + 1].tolist()


def test_image_sampler_restricts_to_codes_and_leaves_structure(net):
    ids, keep, slots, _ = _gen_rows([4])
    seen = []

    def spy(x, k, p):
        seen.append(x.clone())
        return net(x, k, p)

    sample_image(spy, ids, keep, slots, seeds=[1], steps=3, temperature=1.0, lay=LAY)
    structure = torch.ones(ids.shape[1], dtype=torch.bool)
    structure[slots[0]] = False
    for x in seen:  # separators, BOI/EOI/BOA/EOA and the prompt never change between steps
        assert torch.equal(x[0, structure], ids[0, structure])
    # number still masked after each step follows floor(N cos(pi/2 (t+1)/T)): 16 -> 13 -> 8 -> 0
    masked = [int((x[0, slots[0]] == LAY.mask).sum()) for x in seen]
    assert masked == [16, math.floor(16 * math.cos(math.pi / 6)), math.floor(16 * math.cos(math.pi / 3))]


def test_cfg_combination_matches_hand_computed():
    c = torch.tensor([[[1.0, 2.0, 0.0]]])
    u = torch.tensor([[[0.5, -1.0, 0.0]]])
    fn = lambda ids, keep, pos: c if int(ids[0, 0]) == 1 else u  # noqa: E731
    one = torch.ones(1, 1, dtype=torch.long)
    z = guided(fn, one, one.bool(), one, (one * 0, one.bool(), one), 3.0)
    assert z.flatten().tolist() == [2.0, 8.0, 0.0]  # u + 3 (c - u): 0.5 + 1.5, -1 + 9, 0
    # the estimator: log softmax of the guided logits at temperature 2, target index 1
    lp = one_step_logprobs(
        fn,
        one,
        one.bool(),
        torch.zeros(1, 1, dtype=torch.long),
        torch.tensor([[1]]),
        temperature=2.0,
        support=torch.zeros(3),
        cfg_weight=3.0,
        uncond=(one * 0, one.bool(), one),
    )
    want = 4.0 - math.log(math.exp(1.0) + math.exp(4.0) + math.exp(0.0))  # z / 2 = (1, 4, 0)
    assert float(lp) == pytest.approx(want, abs=1e-6)


def test_estimator_masks_depend_on_seed_and_row_not_on_batching():
    ids, keep, slots = _text_rows([6, 11, 8], 4)
    maskable = keep.clone()
    for r in range(3):
        maskable[r, int(slots[r, 0]) - 1 :] = False
    rows = torch.arange(3)
    full = masked_inputs(ids, keep, slots, maskable, estimator_seeds(9, rows), 0.5, LAY.mask)
    for r in range(3):  # the same row alone, with the same (est_seed, row): the same mask
        alone = masked_inputs(
            ids[r : r + 1],
            keep[r : r + 1],
            slots[r : r + 1],
            maskable[r : r + 1],
            estimator_seeds(9, torch.tensor([r])),
            0.5,
            LAY.mask,
        )
        assert torch.equal(alone[0], full[r])
    assert (full.gather(1, slots) == LAY.mask).all()
    fixed = keep & ~maskable
    fixed.scatter_(1, slots, False)  # BOA / EOA: never masked
    assert fixed.sum() == 6 and torch.equal(full[fixed], ids[fixed])
    other = prompt_masks(keep, maskable, estimator_seeds(10, rows), 0.5)
    assert not torch.equal(other, prompt_masks(keep, maskable, estimator_seeds(9, rows), 0.5))
    assert not prompt_masks(keep, maskable, estimator_seeds(9, rows), 0.0).any()
    assert not (prompt_masks(keep, maskable, estimator_seeds(9, rows), 1.0) ^ maskable).any()


def _adapter(model_dir, **opts):
    return load_adapter("dimoo", LoadSpec(path=model_dir, device="cpu", options=opts))


def test_adapter_zeroes_dropout_and_old_equals_current(model_dir, image):
    a = _adapter(model_dir)
    assert all(m.p == 0.0 for m in a.model.modules() if isinstance(m, torch.nn.Dropout))
    b = a.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=1, max_new_tokens=4, est_seeds=[11, 12]))
    g = a.gen_rollout(
        [GenItem("red"), GenItem("blue circle")], 2, GenSampling(seed=2, options={"steps": 4}, est_seeds=[11, 12])
    )
    for batch in (b, g):
        assert set(batch.old_logp_by_seed) == {11, 12}
        assert not torch.equal(batch.old_logp_by_seed[11], batch.old_logp_by_seed[12])  # other prompt masks
        for rows in (torch.arange(batch.size), torch.tensor([1]), torch.tensor([0])):
            lp, mask = a.token_logprobs(batch, rows, est_seed=11, grad=True)
            assert torch.equal(lp.detach(), batch.old_logp_for(11)[rows] * mask)
        with pytest.raises(EstimatorSeedError, match="11, 12"):
            batch.old_logp_for(13)
    pol = Policy(a, OptimCfg(lr=1e-3, micro_batch=1))
    cfg = LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side")
    m = pol.update(
        [SideInput(b, torch.tensor([1.0, -1.0])), SideInput(g, torch.tensor([1.0, -1.0, 0.5, -0.5]))], cfg, est_seed=11
    )
    for side in ("und", "gen"):  # first inner iteration: ratio exactly 1
        assert m[f"{side}/ratio_min"] == 1.0 and m[f"{side}/ratio_max"] == 1.0


def test_step_raises_rewarded_answer_logprob(model_dir, image):
    a = _adapter(model_dir)
    b = a.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=4, max_new_tokens=4, est_seeds=[0, 1]))
    g = a.gen_rollout([GenItem("red")], 2, GenSampling(seed=4, options={"steps": 4}, est_seeds=[0, 1]))
    pol = Policy(a, OptimCfg(lr=3e-3, micro_batch=2))
    cfg = LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side")
    adv = torch.tensor([1.0, -1.0])
    m = pol.update([SideInput(b, adv), SideInput(g, adv)], cfg, est_seed=0)
    assert math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    for batch in (b, g):
        before = batch.old_logp_for(1).sum(-1)  # the same masks as the next inner iteration's pass
        after = a.token_logprobs(batch, torch.arange(2), est_seed=1, grad=False)[0].sum(-1)
        assert float(after[0] - before[0]) > 0 > float(after[1] - before[1])
    m2 = pol.update([SideInput(b, adv), SideInput(g, adv)], cfg, est_seed=1)
    assert m2["und/ratio_mean"] != 1.0


def test_reference_logprobs_follow_the_estimator_seed(model_dir, image):
    a = load_adapter("dimoo", LoadSpec(path=model_dir, device="cpu", ref_model_dir=model_dir))
    b = a.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=4, max_new_tokens=4, est_seeds=[0, 1]))
    pol = Policy(a, OptimCfg(lr=1e-3))
    (ref0,) = pol.ref_logps([b], 8, 0)
    (ref1,) = pol.ref_logps([b], 8, 1)
    assert torch.equal(ref0, b.old_logp_for(0)) and torch.equal(ref1, b.old_logp_for(1))


def test_greedy_answers_and_sample_images_are_deterministic(model_dir):
    a = _adapter(model_dir)
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8))
    assert a.greedy_answers(imgs, ["a", "b"], max_new_tokens=3) == a.greedy_answers(imgs, ["a", "b"], max_new_tokens=3)
    x = a.sample_images(["red"], 2, cfg_weight=5.0, temperature=1.0, seed=3, steps=4)
    assert x.shape == (2, 16, 16, 3) and x.dtype == torch.uint8
    assert torch.equal(x, a.sample_images(["red"], 2, cfg_weight=5.0, temperature=1.0, seed=3, steps=4))


def test_sft_loss_is_finite_and_trains(model_dir, image):
    a = _adapter(model_dir)
    from pairuni_sidecar.adapters import SFTExample

    torch.manual_seed(0)
    ex = [SFTExample("und", image, "Which?", "A"), SFTExample("gen", image, "red")]
    pol = Policy(a, OptimCfg(lr=1e-2))
    first = pol.sft_step(ex)
    assert math.isfinite(first["und/sft_loss"]) and math.isfinite(first["gen/sft_loss"])


def test_train_modules_groups(model_dir):
    from pairuni_sidecar.adapters import AdapterConfigError

    a = load_adapter("dimoo", LoadSpec(path=model_dir, device="cpu", train_modules=["language_model", "vision"]))
    assert len(a.trainable_parameters()) == len(list(a.model.parameters()))
    b = load_adapter("dimoo", LoadSpec(path=model_dir, device="cpu", train_modules=["head."]))
    assert [n for n, _ in b.trainable_parameters()] == ["head.weight", "head.bias"]
    with pytest.raises(AdapterConfigError, match="select no parameter"):
        load_adapter("dimoo", LoadSpec(path=model_dir, device="cpu", train_modules=["vision"]))
    with pytest.raises(AdapterConfigError, match="'nope'"):
        load_adapter("dimoo", LoadSpec(path=model_dir, device="cpu", train_modules=["nope"]))


def test_save_and_resume_through_the_policy_checkpoint(model_dir, image, tmp_path):
    from pairuni_sidecar.policy import load_policy, save_policy

    spec = LoadSpec(path=model_dir, device="cpu")
    pol = load_policy("dimoo", spec, OptimCfg(lr=1e-3))
    b = pol.adapter.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=4, max_new_tokens=4, est_seeds=[0]))
    pol.update(
        [SideInput(b, torch.tensor([1.0, -1.0]))],
        LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side"),
        est_seed=0,
    )
    save_policy(pol, "dimoo", str(tmp_path / "ck"))
    back = load_policy("dimoo", spec, OptimCfg(lr=1e-3), str(tmp_path / "ck"))
    assert back.step_count == 1
    sd, sb = pol.adapter.model.state_dict(), back.adapter.model.state_dict()
    assert all(torch.equal(sd[k], sb[k]) for k in sd)
    lp, _ = back.adapter.token_logprobs(b, torch.arange(2), est_seed=0, grad=False)
    assert torch.equal(lp, pol.adapter.token_logprobs(b, torch.arange(2), est_seed=0, grad=False)[0])


def test_trajectory_estimator_rescores_the_sampled_steps(model_dir, image):
    """The trajectory estimate equals the log-prob each committed token had when the sampler drew it."""
    net_a = _adapter(model_dir, estimator="trajectory")
    fn = net_a._logits_fn(net_a.model)
    ids, keep, slots, _, un = net_a._gen_rows(["red", "blue circle"])
    lay = net_a.layout
    codes, commit, lp = sample_image(
        fn, ids, keep, slots, steps=5, temperature=1.0, lay=lay, seeds=[1, 2], cfg_weight=3.0, uncond=un, record=True
    )
    assert int(commit.min()) == 0 and int(commit.max()) == 4
    from pairuni_sidecar.diffusion.estimator import trajectory_logprobs

    again = trajectory_logprobs(
        fn,
        ids,
        keep,
        slots,
        codes + lay.code_base,
        codes,
        commit,
        steps=5,
        mask_id=lay.mask,
        temperature=1.0,
        support=slice(lay.code_base, lay.code_end),
        cfg_weight=3.0,
        uncond=un,
    )
    assert torch.allclose(again, lp, atol=1e-5)
    g = net_a.gen_rollout(
        [GenItem("red")], 2, GenSampling(seed=2, cfg_weight=3.0, options={"steps": 5}, est_seeds=[3, 4])
    )
    assert torch.equal(g.old_logp_for(3), g.old_logp_for(4))  # no mask randomness
    got, _ = net_a.token_logprobs(g, torch.arange(2), est_seed=4, grad=True)
    assert torch.equal(got.detach(), g.old_logp_for(4))
    b = net_a.und_rollout([UndItem(image, "Which?")], 2, UndSampling(seed=4, max_new_tokens=4, est_seeds=[0]))
    assert torch.isfinite(b.old_logp).all() and (b.old_logp[b.out_mask] < 0).all()


def test_trajectory_step_raises_the_samplers_logprob_of_the_rewarded_image(model_dir):
    """With the trajectory estimator the update moves what the sampler draws: the log-prob of every
    committed code in the context it was committed in, so the rewarded image becomes more likely and the
    other less (the demo's estimator; the one-step estimate did not order pairs this way, docs/notes.md)."""
    a = _adapter(model_dir, estimator="trajectory")
    g = a.gen_rollout(
        [GenItem("red"), GenItem("blue circle")],
        2,
        GenSampling(seed=4, cfg_weight=3.0, options={"steps": 6}, est_seeds=[0, 1]),
    )
    pol = Policy(a, OptimCfg(lr=3e-3, micro_batch=4))
    cfg = LossCfg(eps_low=0.2, eps_high=0.2, beta=0.0, agg="seq_mean", norm="side")
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    m = pol.update([SideInput(g, adv)], cfg, est_seed=0)
    assert math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    before = g.old_logp_for(1).sum(-1)
    after = a.token_logprobs(g, torch.arange(4), est_seed=1, grad=False)[0].sum(-1)
    d = after - before
    assert float(d[0]) > 0 > float(d[1]) and float(d[3]) > 0 > float(d[2])
