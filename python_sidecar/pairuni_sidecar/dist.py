"""The rank's place in a torch.distributed world: device, process group, device mesh, FSDP2, shutdown.

One process per rank (torchrun, or ``Sidecar.spawn({ ranks: N })`` which runs torchrun). The world is
set up once per process by ``init_world`` from RANK / WORLD_SIZE / LOCAL_RANK:

- the device is chosen here, once, from the local rank (``cuda:LOCAL_RANK`` when CUDA is present, else
  CPU); ``device("auto")`` everywhere else in the sidecar asks this module;
- world > 1: ``init_process_group("cuda:nccl,cpu:gloo", device_id=...)`` on GPU, ``("gloo")`` with no
  ``device_id`` on CPU (a CPU device_id raises, pytorch#160731), and always an explicit mesh from
  ``init_device_mesh`` (a gloo group on a GPU host without one crashes, pytorch#132471);
- FSDP2 averages gradients over the world (a divide factor of 1 needs PREMUL_SUM, which gloo lacks),
  so a loss that is already a world-global sum is scaled by the world size before backward;
- ``shard(module_list, root)`` applies FSDP2 ``fully_shard`` to every module an adapter calls directly
  and then to the root (only the root's forward hook would fire otherwise: "mixed torch.Tensor and
  DTensor"); bf16 params / fp32 reduce on GPU only;
- ``gathered(model)`` keeps every shard group unsharded for a rollout: one all-gather per rollout, no
  collective inside the token loop (ranks stop decoding at different steps);
- ``exit_process(code)``: ``destroy_process_group`` then ``os._exit`` (a normal interpreter exit after
  gloo aborted in 2 of 10 runs measured here; with ``os._exit``, none in 12).

World 1 never touches torch.distributed: a single sidecar behaves exactly as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from . import log
from .errors import BadRequest


@dataclass
class World:
    # No defaults here: a world is always built whole (``init_world``, ``current``).
    rank: int
    size: int
    local_rank: int
    device: torch.device
    mesh: Any  # DeviceMesh when size > 1
    #: torchrun's restart counter: each restart of the world is a new epoch
    restart: int

    @property
    def distributed(self) -> bool:
        return self.size > 1


_WORLD: World | None = None


def pick_device(local_rank: int) -> torch.device:
    """The device of a rank: its local GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise BadRequest(
                f"local rank {local_rank} has no GPU: this host has {n} (start at most {n} ranks per host)"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_world(rank: int, size: int, local_rank: int) -> World:
    """Join the process group (size > 1; torchrun's MASTER_ADDR/PORT rendezvous) and build the mesh."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    dev = pick_device(local_rank)
    w = World(
        rank=rank,
        size=size,
        local_rank=local_rank,
        device=dev,
        mesh=None,
        restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0),
    )
    if size > 1:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        if (
            os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0
        ):
            # torchrun's shared rendezvous store keeps the dead world's addresses across restarts
            # (pytorch#135712): a restarted world may then fail to connect or hang. Sidecar.spawn sets this.
            log.warn(
                "torchrun shares its rendezvous store across restarts; set "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun, or a restarted world may fail to form"
            )

        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("cuda:nccl,cpu:gloo", device_id=dev)
        else:
            dist.init_process_group("gloo")
        if dist.get_rank() != rank or dist.get_world_size() != size:
            raise BadRequest(
                f"process group says rank {dist.get_rank()}/{dist.get_world_size()}, the launcher said {rank}/{size}"
            )
        w.mesh = init_device_mesh(dev.type, (size,))
    _WORLD = w
    return w


def current() -> World:
    """This process's world (a world of one on the default device until ``init_world`` runs)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = World(rank=0, size=1, local_rank=0, device=pick_device(0), mesh=None, restart=0)
    return _WORLD


def default_device() -> torch.device:
    return current().device


def mixed_precision(w: World):
    """bf16 parameters with fp32 gradient reduction on GPU; full fp32 on CPU (gloo reduces fp32)."""
    if w.device.type != "cuda":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(
    modules: Iterable[torch.nn.Module],
    root: torch.nn.Module,
    *,
    forward_methods: Iterable[tuple[torch.nn.Module, str]] = (),
    offload: bool = False,
) -> None:
    """FSDP2 on each module (inner ones first), then on ``root``; ``forward_methods`` are (module,
    method) pairs called directly instead of ``forward`` (e.g. a VQ decoder's ``decode``); ``offload``
    (the load spec's ``cpu_offload``) keeps the shards and their optimizer state in host memory."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    w = current()
    if not w.distributed:
        return
    kw: dict[str, Any] = {"mesh": w.mesh}
    mp = mixed_precision(w)
    if mp is not None:
        kw["mp_policy"] = mp
    if offload:
        if w.device.type != "cuda":
            raise BadRequest(
                "model.cpuOffload moves FSDP2 shards between host and GPU memory: it needs CUDA ranks "
                f"(this rank runs on {w.device})",
                detail={"field": "model.cpuOffload"},
            )
        from torch.distributed.fsdp import CPUOffloadPolicy

        kw["offload_policy"] = CPUOffloadPolicy()
    for m in modules:
        fully_shard(m, **kw)
    fully_shard(root, **kw)
    for m, name in forward_methods:
        register_fsdp_forward_method(m, name)
    if not any(p.is_meta for p in root.parameters()):
        init_root(root)  # a model built on the meta device does this once materialised


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks of the model's largest ``ModuleList`` (by parameter count): the transformer layers that
    FSDP2 shards one unit each (TinyMDM's ``blocks``, LLaDA's ``transformer.blocks``)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        return []
    best = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))
    return list(best)


def is_sharded(t: torch.Tensor) -> bool:
    """A DTensor (an FSDP2 shard) rather than a tensor every rank holds whole."""
    return hasattr(t, "full_tensor")


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (a collective for a DTensor: every rank calls it in one order)."""
    return t.full_tensor() if is_sharded(t) else t


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Averages replicated tensors (gradients of parameters outside FSDP2) over the world, in place."""
    w = current()
    if not w.distributed or not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat)
    flat /= w.size
    off = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[off : off + n].view_as(t).to(t.dtype))
        off += n


def init_root(root: torch.nn.Module) -> None:
    """FSDP2 makes the first module whose forward runs the root of its tree. Adapters call submodules
    before (or without) the root's forward, so the root is initialised explicitly, once."""
    root._get_fsdp_state()._lazy_init()


def fsdp_modules(root: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in root.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(*models: torch.nn.Module | None) -> Iterator[None]:
    """Full parameters on every rank for the duration (a rollout): no collective inside the block."""
    mods = [m for model in models if model is not None for m in fsdp_modules(model)]
    if not mods:
        yield
        return
    for m in mods:
        m.unshard()
        m.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for m in mods:
            m.set_reshard_after_forward(True)
            m.reshard()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sums a few floats over the world (float64 on the CPU group); identity at world 1."""
    w = current()
    if not w.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=w.device if w.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return [float(x) for x in t.cpu()]


def all_reduce_max(values: list[int]) -> list[int]:
    w = current()
    if not w.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.int64, device=w.device if w.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(x) for x in t.cpu()]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s (picklable) object on every rank; identity at world 1."""
    if not current().distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_ok(ok: bool) -> bool:
    """True on every rank only if ``ok`` is true on every rank (a failure on one rank reaches all,
    so none waits in a later collective for a rank that gave up)."""
    return all_reduce_max([0 if ok else 1])[0] == 0


def barrier() -> None:
    if current().distributed:
        import torch.distributed as dist

        dist.barrier()


def exit_process(code: int) -> None:
    """Leave the process group and end the process now (never returns)."""
    w = _WORLD
    if w is not None and w.distributed:
        import torch.distributed as dist

        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception as e:  # noqa: BLE001 - a broken world still has to exit
            log.warn(f"destroy_process_group failed: {e}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
