"""A reward server for `{ url }` reward sources: wraps any sidecar reward plug-in, so a reward with heavy
or clashing dependencies runs in its own environment or on its own host.

    python examples/reward_server.py --reward hps --config '{"checkpoint": "/ckpt/HPS_v2.1_compressed.pt"}' \\
        --port 8000 [--plugins my_pkg.plugins] [--token-env REWARD_TOKEN]

and in the training config `gen: { reward: { url: "http://host:8000/" } }` (docs/training.md#reward-sources).
It needs only torch and the `pairuni_sidecar` package (on PYTHONPATH, or installed) plus the reward's own
dependencies. The scorer is built before the server listens, so a missing package or checkpoint fails at
once; the line `listening on http://HOST:PORT/` on stdout says it is ready (`--port 0` picks a free port).

The request body (application/x-pairuni-reward): uint32 little-endian n, n bytes of JSON
`{side, step, items: [{prompt, pair_id}], images: {dtype: "uint8", shape: [B, H, W, 3]}}`, then the
images' B*H*W*3 bytes. The reply: `{"rewards": [B floats]}`, `null` for a score that is not finite (the
trainer reports it by item). Requests are served one at a time: a GPU scorer is not shared between threads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import torch

from pairuni_sidecar.errors import BadRequest
from pairuni_sidecar.registry import load_plugins
from pairuni_sidecar.rewards import make_reward


def decode(body: bytes) -> tuple[dict, torch.Tensor | None]:
    """The JSON header and the images (uint8, B x H x W x 3) of a request body."""
    if len(body) < 4:
        raise BadRequest("the body is shorter than its 4-byte header length")
    (n,) = struct.unpack_from("<I", body, 0)
    try:
        head = json.loads(body[4 : 4 + n])
    except ValueError as e:
        raise BadRequest(f"the JSON header does not parse: {e}") from None
    spec = head.get("images")
    if spec is None:
        return head, None
    shape = [int(x) for x in spec["shape"]]
    raw = body[4 + n :]
    if spec.get("dtype") != "uint8" or len(shape) != 4 or shape[-1] != 3 or math.prod(shape) != len(raw):
        raise BadRequest(f"images {spec} do not describe the {len(raw)} bytes after the header")
    return head, torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(shape)


def make_handler(scorer, token: str | None):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if token is not None and self.headers.get("authorization") != f"Bearer {token}":
                return self.reply(401, {"error": "missing or wrong Authorization: Bearer token"})
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                head, images = decode(body)
                if head.get("side") != "gen" or images is None:
                    raise BadRequest(
                        "this server wraps a sidecar reward plug-in: it scores generated images (side 'gen') only"
                    )
                prompts = [str(it["prompt"]) for it in head["items"]]
                scores = (
                    torch.as_tensor(scorer.score(images, prompts))
                    .detach()
                    .to("cpu", torch.float64)
                    .reshape(-1)
                    .tolist()
                )
            except (BadRequest, KeyError, TypeError, ValueError) as e:
                return self.reply(400, {"error": f"{type(e).__name__}: {e}"})
            except Exception as e:  # noqa: BLE001 - the client retries 500s, then reports this text
                return self.reply(500, {"error": f"{type(e).__name__}: {e}"})
            self.reply(200, {"rewards": [x if math.isfinite(x) else None for x in scores]})

        def log_message(self, fmt: str, *args) -> None:
            sys.stderr.write(f"reward_server: {fmt % args}\n")

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve a sidecar reward plug-in over HTTP.")
    p.add_argument("--reward", required=True, help="registered reward name (hps, shapes, brightness, a plug-in's)")
    p.add_argument("--config", default="{}", help="the reward's config, as JSON")
    p.add_argument("--plugins", nargs="*", default=[], help="plug-in modules to load (as sidecar.plugins)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-env", help="environment variable holding the bearer token clients must send")
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
    if a.plugins:
        load_plugins(a.plugins)
    token = None
    if a.token_env:
        token = os.environ.get(a.token_env)
        if not token:
            p.error(f"--token-env {a.token_env}: that environment variable is not set")
    scorer = make_reward(a.reward, json.loads(a.config))
    server = HTTPServer((a.host, a.port), make_handler(scorer, token))
    print(f"listening on http://{a.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
