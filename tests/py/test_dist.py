"""Data-parallel PairGRPO on torch.distributed (gloo, CPU): 2 ranks under FSDP2 == 1 rank.

Each case starts torchrun (``--standalone``: a free port per run) on ``dist_worker.py``; the ranks are
real processes with a gloo process group and an explicit CPU device mesh.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pairuni_sidecar.policy import LossCfg, traj_coefficients
from pairuni_sidecar.policy.loss import side_totals

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def env_for(tmp: Path) -> dict:
    # torchrun leaves its log directories in TMPDIR: keep them inside the test's own tmp dir
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "python_sidecar"), "TMPDIR": str(tmp)}


def torchrun(n: int, tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = env_for(tmp)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"torchrun x{n} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    from pairuni_sidecar.adapters.tiny import build_tiny_janus

    d = tmp_path_factory.mktemp("dist")
    model = build_tiny_janus(str(d / "model"), seed=0)
    img = d / "a.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    return model, str(img)


@pytest.fixture(scope="module")
def worlds(inputs, tmp_path_factory):
    model, img = inputs
    out = tmp_path_factory.mktemp("out")
    worker = str(HERE / "dist_worker.py")
    torchrun(1, out, worker, model, img, str(out))
    torchrun(2, out, worker, model, img, str(out))
    load = lambda name: torch.load(out / name, weights_only=False)  # noqa: E731
    return load("world1-rank0.pt"), load("world2-rank0.pt"), load("world2-rank1.pt")


def test_two_ranks_fsdp2_equal_one_rank_after_three_updates(worlds):
    one, r0, r1 = worlds
    assert not one["sharded"] and r0["sharded"] and r1["sharded"]  # world 2 really ran FSDP2 (DTensor params)
    assert set(one["params"]) == set(r0["params"])
    worst = max(float((one["params"][k] - r0["params"][k]).abs().max()) for k in one["params"])
    moved = max(float((one["params"][k] - one["init"][k]).abs().max()) for k in one["params"])
    assert worst <= 1e-5, f"2 ranks differ from 1 rank by {worst}"
    for k in one["params"]:  # both ranks hold the same full model
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    # the runs trained (lr 5e-3: weights moved by far more than the tolerance)
    assert moved > 1e-3, moved
    for step in range(3):
        m1, a, b = one["seen"][f"m{step}"], r0["seen"][f"m{step}"], r1["seen"][f"m{step}"]
        # one global gradient norm on every rank, equal to the one-process norm
        assert float(a["grad_norm"]) == float(b["grad_norm"])
        assert abs(float(a["grad_norm"]) - float(m1["grad_norm"])) <= 1e-5 * float(m1["grad_norm"])
        # the ranks' loss parts add up to the one-process loss (world-global coefficients)
        assert abs(float(a["loss"]) + float(b["loss"]) - float(m1["loss"])) <= 1e-6


def test_rollouts_under_fsdp2_bit_identical_to_unsharded(worlds):
    one, r0, r1 = worlds
    # step 0: same weights, so gathered FSDP2 rollouts must equal the unsharded ones bit for bit
    for p, rank in ((0, r0), (1, r1)):
        for k, v in one["seen"][f"s0p{p}"].items():
            assert torch.equal(v, rank["seen"][f"s0p{p}"][k]), (p, k)
    # later steps: weights agree to ~1e-6, the sampled tokens stay the same
    for step in (1, 2):
        for p, rank in ((0, r0), (1, r1)):
            for k in ("und_ids", "gen_ids"):
                assert torch.equal(one["seen"][f"s{step}p{p}"][k], rank["seen"][f"s{step}p{p}"][k]), (step, p, k)


def test_coefficients_with_world_totals_hand_values():
    # rank 0 holds two und trajectories of 2 and 4 tokens; the world holds 4 und trajectories, 12 tokens
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    totals = {"und": (4, 12.0, 2)}
    seq = traj_coefficients([m], LossCfg(agg="seq_mean", norm="side"), sides=["und"], totals=totals)[0]
    assert seq.tolist() == pytest.approx([1 / (4 * 2), 1 / (4 * 4)])
    tok = traj_coefficients([m], LossCfg(agg="token_mean", norm="side"), sides=["und"], totals=totals)[0]
    assert tok.tolist() == pytest.approx([1 / 12, 1 / 12])
    # two parts of one side share its group: the same coefficients as one concatenated batch
    a, b = m[:1], m[1:]
    parts = traj_coefficients([a, b], LossCfg(agg="token_mean", norm="side"), sides=["und", "und"])
    assert [float(parts[0][0]), float(parts[1][0])] == pytest.approx([1 / 6, 1 / 6])
    assert side_totals([a, b], ["und", "und"], [1, 1]) == {"und": (2, 6.0, 2)}
    # token_sum sums a pair's K trajectories: c = 1 / (the world's items on the side)
    ts = traj_coefficients([m], LossCfg(agg="token_sum", norm="side"), sides=["und"], totals=totals)[0]
    assert ts.tolist() == pytest.approx([1 / 2, 1 / 2])


def test_two_torchrun_agents_form_one_world_over_c10d_and_train_the_same(inputs, worlds, tmp_path):
    """Two "hosts" on loopback: two torchrun agents (--nnodes 2, one rank each) meet through c10d
    rendezvous, form one world of 2 and train to the single-host numbers."""
    import socket

    one, r0, _ = worlds
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model, img = inputs
    out = tmp_path / "c10d"
    out.mkdir()
    env = env_for(tmp_path)
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                                "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=pairuni-test",
                                str(HERE / "dist_worker.py"), model, img, str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    logs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(x[-3000:] for x in logs)
    got = torch.load(out / "world2-rank0.pt", weights_only=False)
    assert got["sharded"] and got["world"] == 2
    worst = max(float((one["params"][k] - got["params"][k]).abs().max()) for k in one["params"])
    assert worst <= 1e-5
    # the same world as the single-agent run: identical numbers
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], got["params"][k]), k
