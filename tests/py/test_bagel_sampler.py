"""Bagel sampling on the tiny random-init model (CPU): the flow sampler (ODE / SDE), text answers, and
PairGRPO's log-probs on both sides."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nemo_automodel.components.models.bagel")

from pairuni_sidecar.adapters import GenItem, LoadSpec, UndItem, load_adapter  # noqa: E402
from pairuni_sidecar.adapters import bagel_flow as flow  # noqa: E402
from pairuni_sidecar.adapters.bagel import Tokens, attention_mask, pack_gen, pack_pair  # noqa: E402
from pairuni_sidecar.adapters.base import AdapterConfigError, CapabilityError  # noqa: E402
from pairuni_sidecar.adapters.tiny_bagel import build_tiny_bagel  # noqa: E402
from pairuni_sidecar.contract.generated import BagelGenOptions, GenSampling, LoadOptim, UndSampling, UpdateLoss  # noqa: E402
from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.policy import Policy  # noqa: E402
from pairuni_sidecar.policy.step import SideInput  # noqa: E402

SMALL = {"vae_image_size": 32, "vit_image_size": 28}
FAST = {"num_timesteps": 5}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("bagel-sampler")
    build_tiny_bagel(str(r / "model"), seed=0)
    for i, color in enumerate([(220, 30, 30), (30, 30, 220)]):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8) + np.array(color, np.uint8)).save(r / f"im{i}.png")
    return r


def load(root, objective="pairgrpo", **opts):
    return load_adapter(
        "bagel",
        LoadSpec(
            adapter="bagel",
            path=str(root / "model"),
            device="cpu",
            autocast="off",
            train_modules=["language_model", "vit"],
            options={**SMALL, "objective": objective, **opts},
        ),
    )


@pytest.fixture(scope="module")
def adapter(root):
    return load(root)


def gen_opts(**kw):
    return BagelGenOptions.from_wire({**FAST, **kw}, where="test")


# -- the sampler's maths by hand -------------------------------------------------------------------


def test_time_grid_matches_a_hand_computation():
    # linspace(1, 0, 5) = 1, .75, .5, .25, 0; 3t / (1 + 2t) -> 1, 2.25/2.5, 1.5/2, .75/1.5, 0
    assert flow.time_grid(5, 3.0).tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0], abs=1e-15)
    assert flow.time_grid(3, 1.0).tolist() == [1.0, 0.5, 0.0]
    # upstream's interval test lo < t <= hi
    assert [flow.guidance_on(t, [0.4, 1.0]) for t in (1.0, 0.75, 0.4, 0.2)] == [True, True, False, False]


def test_guided_velocity_and_renormalisation_by_hand():
    c = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])  # |c| = 5
    u = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert torch.equal(flow.guided_velocity(c, u, 1.0, 0.0, "global"), c)
    g = u + 2 * (c - u)  # [[5, 0], [0, 7]], |g| = sqrt(74)
    assert torch.allclose(flow.guided_velocity(c, u, 2.0, 1.0, "global"), g)  # renorm_min 1: none
    assert torch.allclose(flow.guided_velocity(c, u, 2.0, 0.0, "global"), g * 5 / (math.sqrt(74) + 1e-8))
    per_tok = flow.guided_velocity(c, u, 2.0, 0.0, "channel")  # each token back to its own |c|
    assert torch.allclose(per_tok, torch.tensor([[[3.0, 0.0], [0.0, 4.0]]]), atol=1e-6)
    assert torch.allclose(flow.guided_velocity(c, u, 2.0, 0.9, "global"), g * 0.9)  # the clamp's floor


def test_sde_step_by_hand():
    grid = flow.time_grid(5, 3.0)  # 1, .9, .75, .5, 0
    assert flow.sde_sigma(grid, 0, 0.7) == pytest.approx(0.7 * math.sqrt(1 / (1 - 0.9)))  # t = 1: 1 - t_1 instead
    assert flow.sde_sigma(grid, 2, 0.7) == pytest.approx(0.7 * math.sqrt(0.75 / 0.25))
    x, v = torch.tensor([[2.0]]), torch.tensor([[1.0]])
    # x - v dt - sigma^2 dt / (2t) (x + (1 - t) v) at t = .5, dt = .5, sigma = 1: 2 - .5 - .5 (2 + .5)
    assert flow.sde_mean(x, v, 0.5, 0.5, 1.0).item() == pytest.approx(0.25)
    assert flow.sde_mean(x, v, 0.5, 0.5, 0.0).item() == pytest.approx(1.5)  # sigma 0: the Euler step
    lp = flow.step_logp(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0]]), 2.0)
    by_hand = np.mean([-0.5 * (z / 2) ** 2 - math.log(2) - 0.5 * math.log(2 * math.pi) for z in (1.0, 3.0)])
    assert lp.item() == pytest.approx(by_hand)


def test_generation_query_is_the_sft_gen_sample():
    tok = Tokens(bos=1, eos=2, boi=3, eoi=4)
    pk = pack_pair(
        tok,
        und_image=torch.zeros(3, 14, 14),
        question=[10],
        answer=[20],
        prompt=[30, 31],
        gen_image=torch.zeros(3, 32, 32),
        vit_patch=14,
        vit_max_per_side=8,
        vae_downsample=16,
        latent_max_per_side=8,
        timestep=0.0,
        drop_prompt=False,
    )
    und = pk.sample_lens[0]
    q = pack_gen(tok, [30, 31], 2, 2, 8)
    assert (
        q.sample_lens == pk.sample_lens[1:] and q.split_lens == pk.split_lens[1:] and q.attn_modes == pk.attn_modes[1:]
    )
    gen_text = sorted((i - und, t) for i, t in zip(pk.text_indexes, pk.text_ids) if i >= und)
    assert sorted(zip(q.text_indexes, q.text_ids)) == gen_text
    assert q.position_ids == pk.position_ids[und:]
    assert q.vae_token_indexes == [i - und for i in pk.vae_token_indexes]
    assert q.latent_position_ids == pk.latent_position_ids
    free = pack_gen(tok, None, 2, 2, 8)  # upstream's prompt-free context: the image alone at position 0
    assert free.split_lens == [[6]] and free.attn_modes == [["noise"]] and free.position_ids == [0] * 6
    assert torch.equal(attention_mask(free.split_lens[0], free.attn_modes[0]), torch.zeros(6, 6))


# -- the flow sampler on the tiny model --------------------------------------------------------------

PROMPTS = ["a red square", "blue circle", "two green triangles"]


def test_batch_equals_per_sample_runs_and_a_seed_repeats(adapter):
    ids = [adapter._enc(p) for p in PROMPTS]
    for noise in (0.0, 0.7):
        traj, lps = adapter._flow_sample(ids, [11, 12, 13], w=4.0, g=gen_opts(), noise_level=noise)
        again, lps2 = adapter._flow_sample(ids, [11, 12, 13], w=4.0, g=gen_opts(), noise_level=noise)
        assert torch.equal(traj, again)
        for j in range(3):
            one, lp1 = adapter._flow_sample([ids[j]], [11 + j], w=4.0, g=gen_opts(), noise_level=noise)
            assert torch.allclose(traj[j], one[0], atol=1e-5)
            if noise:
                assert torch.allclose(lps[j], lp1[0], atol=1e-5)
        assert (lps is None) == (noise == 0)
    ode, _ = adapter._flow_sample(ids, [11, 12, 13], w=4.0, g=gen_opts(), noise_level=0.0)
    other, _ = adapter._flow_sample(ids, [11, 12, 14], w=4.0, g=gen_opts(), noise_level=0.0)
    assert torch.allclose(other[:2], ode[:2], atol=1e-5) and not torch.allclose(other[2], ode[2], atol=1e-3)


def test_guidance_one_is_the_unguided_velocity_path(adapter):
    ids = [adapter._enc(p) for p in PROMPTS[:2]]
    traj, _ = adapter._flow_sample(ids, [5, 6], w=1.0, g=gen_opts(), noise_level=0.0)
    # by hand: seeded noise, Euler steps of the conditional velocity on the grid 1, .9, .75, .5, 0
    x = torch.stack([torch.randn(4, 64, generator=torch.Generator().manual_seed(s)) for s in (5, 6)])
    cond = adapter._gen_packs(ids)[0]
    for t, t_next in zip([1.0, 0.9, 0.75, 0.5], [0.9, 0.75, 0.5, 0.0]):
        x = x - adapter._velocity(cond, x, t) * (t - t_next)
    assert torch.allclose(traj[:, -1], x, atol=1e-5)
    # guidance outside its interval is the same path; inside it changes the image
    off, _ = adapter._flow_sample(ids, [5, 6], w=4.0, g=gen_opts(cfg_interval=[1.0, 1.0]), noise_level=0.0)
    on, _ = adapter._flow_sample(ids, [5, 6], w=4.0, g=gen_opts(), noise_level=0.0)
    assert torch.equal(off, traj) and not torch.allclose(on[:, -1], traj[:, -1], atol=1e-3)


def test_images_have_the_configured_shape_and_range(adapter):
    imgs = adapter.sample_images(["a red square"], 2, cfg_weight=4.0, temperature=1.0, seed=0, options=FAST)
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == torch.uint8
    assert not torch.equal(imgs[0], imgs[1])  # two seeds, two images
    b = adapter.gen_rollout([GenItem("a red square")], 2, GenSampling(seed=0, cfg_weight=4.0, options=FAST))
    assert b.images.shape == (2, 32, 32, 3) and torch.equal(b.images, adapter.decode_latents(b.extra["traj"][:, -1]))
    assert b.out_ids.tolist() == [[0, 1, 2, 3]] * 2 and bool(b.out_mask.all())


def test_bad_sampling_settings_are_named(adapter):
    with pytest.raises(AdapterConfigError, match="gen.temperature must be 1"):
        adapter.gen_rollout([GenItem("x")], 1, GenSampling(seed=0, temperature=0.5, options=FAST))
    with pytest.raises(AdapterConfigError, match="cfg_interval"):
        adapter.gen_rollout([GenItem("x")], 1, GenSampling(seed=0, options={"cfg_interval": [0.9, 0.1]}))
    with pytest.raises(BadRequest, match="steps"):
        adapter.gen_rollout([GenItem("x")], 1, GenSampling(seed=0, options={"steps": 3}))


# -- understanding by decoding -----------------------------------------------------------------------


def test_greedy_answers_are_deterministic_and_the_argmax_of_the_ports_own_forward(adapter, root):
    imgs = torch.from_numpy(np.stack([np.asarray(Image.open(root / f"im{i}.png")) for i in (0, 1)]))
    qs = ["Color? A. red B. blue", "Shape?"]
    first = adapter.greedy_answers(imgs, qs, max_new_tokens=4)
    assert first == adapter.greedy_answers(imgs, qs, max_new_tokens=4)
    assert adapter.greedy_answers(imgs[1:], qs[1:], max_new_tokens=4) == first[1:]  # batch = alone
    # by hand: the port's training forward in the SFT layout, CE of every vocabulary id at the last position
    V = adapter.model.config.text_config.vocab_size
    tok, geo, dev = adapter.tokens, adapter.geometry, adapter.device
    vit = adapter._uint8_vit(imgs)
    for i in range(2):
        ans = []
        for _ in range(4):
            pk = pack_pair(
                tok,
                und_image=vit[i],
                question=adapter._enc(qs[i]),
                answer=ans,
                prompt=[],
                gen_image=torch.zeros(3, 0, 0),
                vit_patch=geo["vit_patch_size"],
                vit_max_per_side=geo["vit_max_num_patch_per_side"],
                vae_downsample=1,
                latent_max_per_side=1,
                timestep=0.0,
                drop_prompt=True,
            )
            n = pk.sample_lens[0]
            keep = [j for j, ix in enumerate(pk.text_indexes) if ix < n]
            T = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
            with torch.no_grad(), adapter._packed_path():
                ce = adapter.model(
                    sequence_length=n,
                    packed_text_ids=T([pk.text_ids[j] for j in keep]),
                    packed_text_indexes=T([pk.text_indexes[j] for j in keep]),
                    sample_lens=[n],
                    packed_position_ids=T(pk.position_ids[:n]),
                    nested_attention_masks=[attention_mask(pk.split_lens[0], pk.attn_modes[0])],
                    packed_vit_tokens=pk.vit_tokens,
                    packed_vit_token_indexes=T(pk.vit_token_indexes),
                    packed_vit_position_ids=T(pk.vit_position_ids),
                    vit_token_seqlens=T([len(pk.vit_token_indexes)], torch.int),
                    ce_loss_indexes=T([pk.ce_loss_indexes[len(ans)]] * V),
                    packed_label_ids=T(list(range(V))),
                )["ce"]
            nxt = int(ce.argmin())
            if nxt == tok.eos:
                break
            ans.append(nxt)
        assert first[i] == adapter.tok.decode(ans, skip_special_tokens=True)


def test_und_rollout_is_seeded_per_row_with_teacher_forced_old_logprobs(adapter, root):
    items = [UndItem(str(root / "im0.png"), "Color?"), UndItem(str(root / "im1.png"), "Shape?")]
    s = UndSampling(seed=4, max_new_tokens=5, old_logp="rollout")
    b = adapter.und_rollout(items, 2, s)
    assert b.out_ids.shape == (4, 5) and b.group.tolist() == [0, 0, 1, 1] and len(b.texts) == 4
    assert torch.equal(b.out_ids, adapter.und_rollout(items, 2, s).out_ids)
    assert not torch.equal(b.out_ids[0], b.out_ids[1])  # two rows, two seeds
    # the decoding's log-probs are the teacher-forced ones (same layout; only float rounding apart)
    lp, mask = adapter.token_logprobs(b, torch.arange(4), est_seed=0, grad=False)
    assert torch.equal(mask, b.out_mask) and torch.allclose(lp, b.old_logp, atol=1e-5)
    exact = adapter.und_rollout(items, 2, UndSampling(seed=4, max_new_tokens=5))  # auto: recomputed
    assert torch.equal(exact.old_logp, lp)


# -- PairGRPO on Bagel ----------------------------------------------------------------------------


def test_a_steps_recorded_logprob_is_the_gaussian_density_by_hand(adapter):
    b = adapter.gen_rollout(
        [GenItem("a red square")], 2, GenSampling(seed=1, cfg_weight=1.0, options={**FAST, "noise_level": 0.5})
    )
    traj, cond = b.extra["traj"], adapter._gen_packs([adapter._enc("a red square")] * 2)[0]
    for k, (t, t_next) in enumerate(zip([1.0, 0.9, 0.75, 0.5], [0.9, 0.75, 0.5, 0.0])):
        dt = t - t_next
        sigma = 0.5 * math.sqrt(t / (1 - (0.9 if k == 0 else t)))
        x = traj[:, k]
        v = adapter._velocity(cond, x, t)
        mean = x - v * dt - sigma**2 * dt / (2 * t) * (x + (1 - t) * v)
        dens = torch.distributions.Normal(mean, sigma * math.sqrt(dt)).log_prob(traj[:, k + 1])
        assert torch.allclose(b.old_logp[:, k], dens.flatten(1).mean(1), atol=1e-5)


def test_conditional_logprobs_score_the_guided_steps_without_guidance(adapter):
    s = dict(seed=3, cfg_weight=4.0, options={**FAST, "noise_level": 0.7})
    guided = adapter.gen_rollout([GenItem("blue circle")], 2, GenSampling(**s))
    cond = adapter.gen_rollout([GenItem("blue circle")], 2, GenSampling(**s, logp="cond"))
    assert torch.equal(cond.extra["traj"], guided.extra["traj"])  # the same sampled trajectories ...
    # ... scored under the conditional velocity: by hand at the first step (inside the guidance interval)
    x, v = (
        cond.extra["traj"][:, 0],
        adapter._velocity(adapter._gen_packs([adapter._enc("blue circle")] * 2)[0], cond.extra["traj"][:, 0], 1.0),
    )
    sigma, dt = 0.7 * math.sqrt(1 / (1 - 0.9)), 0.1
    mean = x - v * dt - sigma**2 * dt / 2 * x
    assert torch.allclose(
        cond.old_logp[:, 0], flow.step_logp(cond.extra["traj"][:, 1], mean, sigma * math.sqrt(dt)), atol=1e-5
    )
    assert not torch.equal(cond.old_logp, guided.old_logp)  # (the tiny random model's guidance moves little)


RECIPE = LoadOptim(lr=3e-3, betas=[0.9, 0.95], eps=1e-15, weight_decay=0.0, max_grad_norm=1.0, micro_batch=8)


def test_ratio_is_exactly_one_before_the_first_update_and_a_rewarded_image_gains_logprob(root):
    a = load(root)
    pol = Policy(a, RECIPE)
    gs = GenSampling(seed=2, cfg_weight=4.0, options={**FAST, "noise_level": 0.7})
    gb = a.gen_rollout([GenItem("a red square"), GenItem("blue circle")], 2, gs)
    ub = a.und_rollout([UndItem(str(root / "im0.png"), "Color?")], 2, UndSampling(seed=2, max_new_tokens=4))
    before = a.token_logprobs(gb, torch.arange(4), est_seed=0, grad=False)[0].sum(1)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    m = pol.update([SideInput(ub, torch.tensor([1.0, -1.0])), SideInput(gb, adv)], UpdateLoss())
    for side in ("und", "gen"):
        assert m[f"{side}/ratio_min"] == 1.0 and m[f"{side}/ratio_max"] == 1.0 and m[f"{side}/clip_frac"] == 0.0
    after = a.token_logprobs(gb, torch.arange(4), est_seed=0, grad=False)[0].sum(1)
    assert bool((after[adv > 0] > before[adv > 0]).all()) and bool((after[adv < 0] < before[adv < 0]).all())


def test_capabilities_choose_sft_or_pairgrpo(root, adapter):
    sft = load(root, objective="sft")
    assert {"und_rollout", "gen_rollout", "sft"} <= sft.capabilities and not {
        "logprobs_und",
        "logprobs_gen",
    } & sft.capabilities
    assert {"logprobs_und", "logprobs_gen"} <= adapter.capabilities
    assert sft.describe()["capabilities"] == sorted(sft.capabilities)
    b = sft.gen_rollout([GenItem("x")], 1, GenSampling(seed=0, options=FAST))
    with pytest.raises(CapabilityError, match="logprobs_gen"):
        sft.token_logprobs(b, torch.arange(1), est_seed=0, grad=False)
    ode = adapter.gen_rollout([GenItem("x")], 1, GenSampling(seed=0, options={**FAST, "noise_level": 0}))
    assert not bool(ode.out_mask.any())
    with pytest.raises(AdapterConfigError, match="ODE sampler"):
        adapter.token_logprobs(ode, torch.arange(1), est_seed=0, grad=False)


def test_gpu_sampler_profile_runs_its_tiny_path_on_cpu():
    # tests/gpu/bagel_sampler_profile.py at BAGEL-7B-MoT size needs a GPU; its --tiny path is this
    import importlib.util
    import os
    import sys

    here = os.path.join(os.path.dirname(__file__), "..", "gpu")
    # The script puts its own folder on sys.path (spelled its own way): restore the whole list after.
    saved = sys.path[:]
    try:
        spec = importlib.util.spec_from_file_location(
            "bagel_sampler_profile", os.path.join(here, "bagel_sampler_profile.py")
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        rec = mod.run(tiny=True, batch=1, timesteps=2, repeats=1)
    finally:
        sys.path[:] = saved
    assert rec["image_px"] == 32 and set(rec["results"]) == {"ode", "sde", "sde_score_backward"}
    assert rec["results"]["ode"]["logp_recorded"] is False and rec["results"]["sde"]["logp_recorded"] is True
    assert rec["results"]["sde"]["image_shape"] == [32, 32, 3] and rec["results"]["ode"]["images_per_s"] > 0
    assert rec["results"]["sde_score_backward"]["steps"] == 1
