"""Data-parallel PairGRPO on torch.distributed (gloo, CPU): 2 ranks under FSDP2 == 1 rank; DCP
checkpoints written at one world size resume at another; the HF export; the reference-KL path with
uneven parts.

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


# Subprocess limits here only stop a hang: several times a run on 2 busy cores (docs/testing.md).
def torchrun(n: int, tmp: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
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
def runs(inputs, tmp_path_factory):
    """parity, save (to RUNS/world<N>/ck) and refkl at world 1 and at world 2: one torchrun per world
    size, its ranks run the three modes in turn (each rank process imports torch once, not three times)."""
    model, img = inputs
    root = tmp_path_factory.mktemp("runs")
    for n in (1, 2):
        out = root / f"world{n}"
        out.mkdir()
        torchrun(n, out, str(HERE / "dist_worker.py"), "parity+save+refkl", model, img, str(out), str(out / "ck"))
    return root


def _load(runs: Path, mode: str, world: int, rank: int) -> dict:
    return torch.load(runs / f"world{world}" / f"{mode}-world{world}-rank{rank}.pt", weights_only=False)


@pytest.fixture(scope="module")
def worlds(runs):
    return _load(runs, "parity", 1, 0), _load(runs, "parity", 2, 0), _load(runs, "parity", 2, 1)


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
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=pairuni-test",
                str(HERE / "dist_worker.py"),
                "parity",
                model,
                img,
                str(out),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [a.communicate(timeout=900)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(x[-3000:] for x in logs)
    got = torch.load(out / "parity-world2-rank0.pt", weights_only=False)
    assert got["sharded"] and got["world"] == 2
    worst = max(float((one["params"][k] - got["params"][k]).abs().max()) for k in one["params"])
    assert worst <= 1e-5
    # the same world as the single-agent run: identical numbers
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], got["params"][k]), k


# -- checkpoints (torch.distributed.checkpoint) ------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(inputs, runs, tmp_path_factory):
    """Saved after 2 updates at world S (then the 3rd update, uninterrupted), resumed at world R for
    the 3rd update: (S, R) in (2, 1), (2, 2), (1, 2)."""
    model, img = inputs
    root = tmp_path_factory.mktemp("ckpt")
    worker = str(HERE / "dist_worker.py")
    got = {}
    for saved in (2, 1):
        out = root / f"saved{saved}"
        out.mkdir()
        ck = str(runs / f"world{saved}" / "ck")
        got[saved] = {"ck": ck, "ranks": [_load(runs, "save", saved, r) for r in range(saved)]}
        for resumed in (1, 2) if saved == 2 else (2,):
            rout = out / f"resumed{resumed}"
            rout.mkdir()
            torchrun(resumed, rout, worker, "resume", model, img, str(rout), ck)
            got[(saved, resumed)] = [
                torch.load(rout / f"resume-world{resumed}-rank{r}.pt", weights_only=False) for r in range(resumed)
            ]
    return got


def _worst(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("saved,resumed", [(2, 1), (2, 2), (1, 2)])
def test_checkpoint_resumes_at_another_world_size_and_continues_identically(checkpoints, saved, resumed):
    savers = checkpoints[saved]["ranks"]
    ranks = checkpoints[(saved, resumed)]
    assert savers[0]["sharded"] == (saved > 1) and ranks[0]["sharded"] == (resumed > 1)
    for r, got in enumerate(ranks):
        loaded, want = got["loaded"], savers[r % saved]["saved"]
        # the model and Adam's moments come back exactly (DCP copies the bytes, resharded)
        assert _worst(loaded["params"], want["params"]) == 0.0
        assert _worst(loaded["exp_avg"], want["exp_avg"]) == 0.0
        assert max(float(v.abs().max()) for v in want["exp_avg"].values()) > 1e-4  # a real optimizer state
        assert loaded["optimizer_step"] == 2
        # each rank continues the RNG streams of rank (r % saved world)
        for k, v in want["rng"].items():
            assert torch.equal(loaded["rng"][k], v), (r, k)
    # the next update equals the uninterrupted one (fp32 sums in another order at another world size)
    cont = savers[0]
    assert _worst(ranks[0]["params"], cont["params"]) <= 1e-5
    moved = _worst(cont["params"], cont["saved"]["params"])
    assert moved > 1e-3, moved  # the 3rd update moved the weights by far more than the tolerance
    m_cont = [s["seen"]["m2"] for s in savers]
    m_res = [g["seen"]["m2"] for g in ranks]
    assert abs(float(m_res[0]["grad_norm"]) - float(m_cont[0]["grad_norm"])) <= 1e-5 * float(m_cont[0]["grad_norm"])
    assert abs(sum(float(m["loss"]) for m in m_res) - sum(float(m["loss"]) for m in m_cont)) <= 1e-6
    assert sum(float(m["update_tokens"]) for m in m_res) == sum(float(m["update_tokens"]) for m in m_cont)
    if saved == resumed:  # the same world: bit for bit
        assert _worst(ranks[0]["params"], cont["params"]) == 0.0


def test_checkpoint_layout_is_dcp_shards_per_rank(checkpoints):
    import json

    for saved in (1, 2):
        ck = Path(checkpoints[saved]["ck"])
        assert sorted(p.name for p in ck.iterdir()) == ["policy.json", "state"]
        assert sorted(p.name for p in (ck / "state").iterdir()) == [
            ".metadata",
            *[f"__{r}_0.distcp" for r in range(saved)],
        ]
        meta = json.loads((ck / "policy.json").read_text())
        assert (meta["format"], meta["world"], meta["optimizer_step"]) == ("pairuni-policy/2", saved, 2)
        assert not [p for p in ck.parent.iterdir() if p.name.startswith(".")]  # no temp directory left


@pytest.mark.parametrize("saved", [1, 2])
def test_hf_export_loads_with_from_pretrained_and_equals_the_trained_params(checkpoints, saved):
    from transformers import JanusForConditionalGeneration

    want = checkpoints[saved]["ranks"][0]["saved"]["params"]
    m = JanusForConditionalGeneration.from_pretrained(checkpoints[saved]["ck"] + "-hf")
    got = {n: p.detach() for n, p in m.named_parameters()}
    assert _worst(got, want) == 0.0


def test_corrupt_or_missing_checkpoint_is_a_typed_error_naming_what_is_wrong(checkpoints, inputs, tmp_path):
    import shutil

    from pairuni_sidecar.adapters import LoadSpec
    from pairuni_sidecar.adapters.base import CheckpointNotFound
    from pairuni_sidecar.errors import BadRequest
    from pairuni_sidecar.policy import CheckpointCorrupt, OptimCfg, load_policy

    model, _ = inputs
    spec, optim = LoadSpec(path=model, device="cpu"), OptimCfg(lr=5e-3, micro_batch=2)

    def copy(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(checkpoints[2]["ck"], d)
        return d

    with pytest.raises(CheckpointNotFound, match="nowhere' does not exist") as ei:
        load_policy("janus", spec, optim, resume_dir=str(tmp_path / "nowhere"))
    assert ei.value.code == "not_found"
    d = copy("no-meta")
    (d / "policy.json").unlink()
    with pytest.raises(CheckpointNotFound, match="has no policy.json"):
        load_policy("janus", spec, optim, resume_dir=str(d))
    d = copy("bad-meta")
    (d / "policy.json").write_text("{not json")
    with pytest.raises(CheckpointCorrupt, match="policy.json is unreadable"):
        load_policy("janus", spec, optim, resume_dir=str(d))
    d = copy("no-shard")
    (d / "state" / "__1_0.distcp").unlink()
    with pytest.raises(CheckpointCorrupt, match=r"incomplete: state/__1_0.distcp missing \(written by 2 ranks\)") as ei:
        load_policy("janus", spec, optim, resume_dir=str(d))
    assert ei.value.code == "op_failed" and ei.value.detail["missing"] == ["state/__1_0.distcp"]
    d = copy("no-index")
    (d / "state" / ".metadata").unlink()
    with pytest.raises(CheckpointCorrupt, match=r"incomplete: state/.metadata is missing"):
        load_policy("janus", spec, optim, resume_dir=str(d))
    d = copy("truncated")
    shard = d / "state" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointCorrupt, match=r"its DCP state \(state/\) cannot be read into this janus model") as ei:
        load_policy("janus", spec, optim, resume_dir=str(d))
    assert ei.value.detail["path"] == str(d)
    with pytest.raises(BadRequest, match="written by adapter 'janus', not 'dimoo'"):
        load_policy("dimoo", spec, optim, resume_dir=checkpoints[2]["ck"])


# -- the reference-KL path with uneven parts ---------------------------------------------------


def test_reference_kl_with_uneven_parts_two_ranks_equal_one_rank(runs):
    """beta > 0: every rank computes reference log-probs for its own parts. Part 0 holds twice the
    trajectories of part 1, so the ranks' micro-batch counts differ; the reference and update passes
    are padded to the busiest rank's count, the run finishes, and it equals one process."""
    one, r0, r1 = (_load(runs, "refkl", n, r) for n, r in ((1, 0), (2, 0), (2, 1)))
    assert r0["sharded"] and not one["sharded"]
    assert r0["seen"]["s0p0"]["und_ids"].shape[0] == 2 * r1["seen"]["s0p1"]["und_ids"].shape[0]  # uneven parts
    assert _worst(one["params"], r0["params"]) <= 1e-5
    assert _worst(one["params"], one["init"]) > 1e-3
    for step in range(2):
        m1, a, b = one["seen"][f"m{step}"], r0["seen"][f"m{step}"], r1["seen"][f"m{step}"]
        assert abs(float(a["grad_norm"]) - float(m1["grad_norm"])) <= 1e-5 * float(m1["grad_norm"])
        assert abs(float(a["loss"]) + float(b["loss"]) - float(m1["loss"])) <= 1e-6
        assert "und/kl_ref" in m1 and "gen/kl_ref" in m1
    assert float(one["seen"]["m1"]["gen/kl_ref"]) > 0  # after one update the policy left the reference
