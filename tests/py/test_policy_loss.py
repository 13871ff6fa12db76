"""The clipped surrogate and its aggregation, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

torch.set_num_threads(1)

from pairuni_sidecar.errors import BadRequest  # noqa: E402
from pairuni_sidecar.policy import LossCfg, LossConfigError, clipped_surrogate, traj_coefficients  # noqa: E402


def _lp(ratios):
    """old_logp = 0, logp = log(ratio): makes rho_t exactly the given ratios."""
    return torch.log(torch.tensor(ratios, dtype=torch.float64)).float()


def test_clip_on_both_sides_of_one():
    # one trajectory per row, one token each; eps = 0.2
    ratios = [[1.5], [1.5], [0.5], [0.5], [1.1]]
    adv = torch.tensor([2.0, -2.0, 2.0, -2.0, 1.0])
    logp = _lp(ratios).requires_grad_(True)
    old = torch.zeros(5, 1)
    mask = torch.ones(5, 1, dtype=torch.bool)
    coef = torch.ones(5)
    loss, st = clipped_surrogate(logp, old, adv, mask, coef, LossCfg())
    # per-token objective min(rA, clip(r)A):
    #  r=1.5,A=2  -> min(3.0, 2.4)  = 2.4  (clipped above 1+eps, no gradient)
    #  r=1.5,A=-2 -> min(-3.0,-2.4) = -3.0 (unclipped, gradient)
    #  r=0.5,A=2  -> min(1.0, 1.6)  = 1.0  (unclipped, gradient)
    #  r=0.5,A=-2 -> min(-1.0,-1.6) = -1.6 (clipped below 1-eps, no gradient)
    #  r=1.1,A=1  -> 1.1 (inside the range)
    assert abs(float(loss.detach()) - (-(2.4 - 3.0 + 1.0 - 1.6 + 1.1))) < 1e-5
    assert float(st["clipped"]) == 2 and float(st["tokens"]) == 5
    loss.backward()
    g = logp.grad.flatten().tolist()
    # d(-r*A)/d(logp) = -r*A where unclipped; 0 where clipped
    assert g[0] == 0 and g[3] == 0
    assert abs(g[1] - 3.0) < 1e-5 and abs(g[2] + 1.0) < 1e-5 and abs(g[4] + 1.1) < 1e-5


def test_asymmetric_clip_range():
    logp = _lp([[1.25], [0.75]])
    loss, st = clipped_surrogate(
        logp,
        torch.zeros(2, 1),
        torch.tensor([1.0, -1.0]),
        torch.ones(2, 1, dtype=torch.bool),
        torch.ones(2),
        LossCfg(eps_low=0.2, eps_high=0.28),
    )
    # r=1.25 < 1.28: not clipped (1.25); r=0.75 < 0.8 with A<0: clipped to -0.8
    assert abs(float(loss) - (-(1.25 - 0.8))) < 1e-6 and float(st["clipped"]) == 1


def test_ratio_one_is_plain_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = clipped_surrogate(
        logp, logp.detach(), torch.tensor([0.5]), torch.ones(1, 2, dtype=torch.bool), torch.tensor([0.5]), LossCfg()
    )
    loss.backward()
    assert abs(float(loss.detach()) + 0.5) < 1e-6  # -(1*0.5 + 1*0.5) * 0.5
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25]]))


def test_mask_excludes_tokens():
    logp = _lp([[1.0, 100.0]])
    loss, st = clipped_surrogate(
        logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[True, False]]), torch.ones(1), LossCfg()
    )
    assert abs(float(loss) + 1.0) < 1e-6 and float(st["tokens"]) == 1


def test_k3_kl_term():
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    loss, st = clipped_surrogate(
        logp,
        logp.clone(),
        torch.tensor([0.0]),
        torch.ones(1, 1, dtype=torch.bool),
        torch.ones(1),
        LossCfg(beta=0.1),
        ref,
    )
    d = math.log(0.25) - math.log(0.5)
    k3 = math.exp(d) - d - 1  # 0.5 + ln2 - 1
    assert abs(float(st["kl_ref_sum"]) - k3) < 1e-6
    assert abs(float(loss) - 0.1 * k3) < 1e-6
    with pytest.raises(LossConfigError, match="reference"):
        clipped_surrogate(
            logp, logp, torch.tensor([0.0]), torch.ones(1, 1, dtype=torch.bool), torch.ones(1), LossCfg(beta=0.1)
        )


def test_traj_coefficients_hand_values():
    und = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)  # lengths 2, 3
    gen = torch.tensor([[1, 1, 1, 1]], dtype=torch.bool)  # length 4
    c = traj_coefficients([und, gen], LossCfg(agg="seq_mean", norm="side"))
    assert torch.allclose(c[0], torch.tensor([1 / (2 * 2), 1 / (2 * 3)])) and torch.allclose(
        c[1], torch.tensor([1 / 4])
    )
    c = traj_coefficients([und, gen], LossCfg(agg="seq_mean", norm="batch"))  # 3 trajectories in all
    assert torch.allclose(c[0], torch.tensor([1 / 6, 1 / 9])) and torch.allclose(c[1], torch.tensor([1 / 12]))
    c = traj_coefficients([und, gen], LossCfg(agg="token_mean", norm="side"))
    assert torch.allclose(c[0], torch.tensor([0.2, 0.2])) and torch.allclose(c[1], torch.tensor([0.25]))
    c = traj_coefficients([und, gen], LossCfg(agg="token_mean", norm="batch"))  # 9 tokens in all
    assert torch.allclose(c[0], torch.full((2,), 1 / 9)) and torch.allclose(c[1], torch.tensor([1 / 9]))
    c = traj_coefficients([torch.zeros(1, 3, dtype=torch.bool)], LossCfg())  # empty answer: weight 0, no div by 0
    assert c[0].tolist() == [0.0]


def test_token_sum_coefficients_hand_values():
    und = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)  # one item, K = 2: lengths 2, 3
    gen = torch.tensor([[1, 1, 1, 1]], dtype=torch.bool)  # one item, K = 1: length 4
    # eq. 2/4: E over pairs of the sum over the pair's trajectories and tokens -> c = 1 / items of the side
    c = traj_coefficients([und, gen], LossCfg(agg="token_sum", norm="side"), [1, 1])
    assert c[0].tolist() == [1.0, 1.0] and c[1].tolist() == [1.0]
    c = traj_coefficients([und, gen], LossCfg(agg="token_sum", norm="side"), [2, 1])  # K = 1 per item
    assert c[0].tolist() == [0.5, 0.5] and c[1].tolist() == [1.0]
    # eq. 1: E over the mixed batch's 3 trajectories of the token sum
    c = traj_coefficients([und, gen], LossCfg(agg="token_sum", norm="batch"))
    assert torch.allclose(c[0], torch.full((2,), 1 / 3)) and torch.allclose(c[1], torch.tensor([1 / 3]))
    with pytest.raises(LossConfigError, match="item count"):
        traj_coefficients([und, gen], LossCfg(agg="token_sum", norm="side"))


@pytest.mark.parametrize(
    ("agg", "items", "want"),
    [
        ("seq_mean", None, 0.0),  # -1/(2*1) + 3 * 1/(2*3)
        ("token_mean", None, 0.5),  # (-1 + 3) / 4 tokens
        ("token_sum", [1], 2.0),  # -1 + 3, one pair
    ],
)
def test_loss_under_each_aggregation_hand_values(agg, items, want):
    # One item, two trajectories at ratio 1: a 1-token answer with A = +1 (term -1) and a 3-token one
    # with A = -1 (terms +1 each).
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    logp = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    cfg = LossCfg(agg=agg, norm="side")
    coef = traj_coefficients([mask], cfg, items)[0]
    loss, _ = clipped_surrogate(logp, logp, adv, mask, coef, cfg)
    assert float(loss) == pytest.approx(want, abs=1e-7)


@pytest.mark.parametrize("bad", [dict(eps_low=1.0), dict(beta=-1.0), dict(agg="sum"), dict(norm="x")])
def test_loss_cfg_validation(bad):
    with pytest.raises(BadRequest):  # the generated record's schema (src/contract) refuses it
        LossCfg(**bad).validate()
