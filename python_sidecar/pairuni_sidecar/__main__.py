"""`python -m pairuni_sidecar`: start one sidecar rank and connect it to a controller.

Spawned by the TS SDK (`Sidecar.spawn`) with ipc:// endpoints, or started by hand / by torchrun
with `--connect tcp://HOST:PORT` for `Sidecar.attach` (the data socket defaults to PORT+1).
Under torchrun, RANK / WORLD_SIZE / LOCAL_RANK are read from the environment, and with more than one
rank the process joins a torch.distributed world (``dist.py``)::

    torchrun --nproc-per-node 2 -m pairuni_sidecar --connect tcp://CTRL:5555
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys


def _data_endpoint(ctrl: str) -> str:
    if ctrl.startswith("tcp://"):
        host, _, port = ctrl[len("tcp://") :].rpartition(":")
        return f"tcp://{host}:{int(port) + 1}"
    if ctrl.startswith("ipc://") and ctrl.endswith("ctrl"):
        return ctrl[: -len("ctrl")] + "data"
    raise SystemExit(f"cannot derive the data endpoint from {ctrl!r}; pass --data")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pairuni-sidecar", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--connect", "--ctrl", dest="ctrl", required=True, help="controller ctrl endpoint (ipc:// or tcp://)"
    )
    ap.add_argument("--data", help="controller data endpoint (default: derived from --connect)")
    ap.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)))
    ap.add_argument("--world", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    ap.add_argument("--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)))
    ap.add_argument("--parent-pid", type=int, default=None, help="the controller's pid: exit when that process is gone")
    ap.add_argument("--wait-controller", type=float, default=300.0, help="seconds to wait for the controller's welcome")
    ap.add_argument(
        "--plugins",
        action="append",
        default=[],
        help="plug-in module(s): ops, rewards, adapters, backbones, tiny-model builders (repeatable)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument(
        "--curve-key",
        default=os.environ.get("PAIRUNI_CURVE_KEY"),
        help="this rank's key file (`pairuni keys NAME` → NAME.key): connect with CURVE",
    )
    ap.add_argument(
        "--curve-server",
        default=os.environ.get("PAIRUNI_CURVE_SERVER"),
        help="the controller's public key, or its .pub file (with --curve-key)",
    )
    a = ap.parse_args(argv)

    extra = tuple(a.plugins) + tuple(m for m in os.environ.get("PAIRUNI_PLUGINS", "").split(",") if m)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from .server import Server, read_curve

    curve = read_curve(a.curve_key, a.curve_server)

    srv = Server(
        a.ctrl,
        a.data or _data_endpoint(a.ctrl),
        rank=a.rank,
        world=a.world,
        local_rank=a.local_rank,
        parent_pid=a.parent_pid,
        wait_controller_s=a.wait_controller,
        plugins=extra,
        curve=curve,
    )

    def stop(signum, _frame):
        srv.stopping = True

    signal.signal(signal.SIGTERM, stop)
    if a.parent_pid is None:
        signal.signal(signal.SIGINT, stop)
    else:
        # Spawned by a local controller (in a process group of its own, out of a terminal's reach): a
        # Ctrl-C is the controller's to handle (finish the step, save, then end this rank with bye /
        # SIGTERM), also when it reaches this rank some other way (torchrun forwards what it gets).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = srv.serve()
    finally:
        from .server import controller_alive

        if a.parent_pid is not None and not controller_alive(a.parent_pid):
            _remove_socket_dir(a.ctrl)
    if a.world > 1:
        from . import dist

        dist.exit_process(code)  # destroy_process_group, then os._exit: no gloo abort at exit
    return code


def _remove_socket_dir(ctrl: str) -> None:
    """The controller died without cleaning up (SIGKILL): remove the private ipc directory it made."""
    if not ctrl.startswith("ipc://"):
        return
    d = os.path.dirname(ctrl[len("ipc://") :])
    if os.path.basename(d).startswith("pairuni-"):
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
