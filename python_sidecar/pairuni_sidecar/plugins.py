"""The sidecar's built-in plug-ins, declared for the one registry (``registry.load_plugins``).

A user's plug-in package declares the same ``PLUGINS`` mapping (or uses ``@op`` / ``@plugin``) and is
loaded with ``Sidecar.spawn({ plugins: ['my_pkg.plugins'] })`` / ``--plugins my_pkg.plugins``.
Entries are imported on first use, so a missing optional package disables only what needs it.
The ShapesWorld toy world declares its own (``shapesworld/plugins.py``).
"""

PLUGINS = {
    # Modules whose @op handlers register when imported (at start-up).
    "op": [
        "pairuni_sidecar.ops.builtin",
        "pairuni_sidecar.ops.kernels",
        "pairuni_sidecar.ops.features",
        "pairuni_sidecar.ops.train",
        "pairuni_sidecar.ops.option_eval",
        "pairuni_sidecar.ops.plan",
    ],
    "reward": {
        "hps": "pairuni_sidecar.rewards.hps:make_hps",
        "brightness": "pairuni_sidecar.policy.toy_rewards:make_brightness",
    },
    "adapter": {
        "janus": "pairuni_sidecar.adapters.janus:JanusAdapter",
        "dimoo": "pairuni_sidecar.adapters.dimoo:DimooAdapter",
        "bagel": "pairuni_sidecar.adapters.bagel:BagelAdapter",
    },
    "backbone": {
        "resnet50": "pairuni_sidecar.features.backbones:load_resnet50",
        "torchvision": "pairuni_sidecar.features.backbones:load_torchvision",
        "timm": "pairuni_sidecar.features.backbones:load_timm",
        "hf": "pairuni_sidecar.features.backbones:load_hf",
        "pixels": "pairuni_sidecar.features.backbones:load_pixels",
    },
    "tiny": {
        "janus": "pairuni_sidecar.adapters.tiny:build_tiny_janus",
        "dimoo": "pairuni_sidecar.diffusion.tiny_model:build_tiny_dimoo",
        "bagel": "pairuni_sidecar.adapters.tiny_bagel:build_tiny_bagel",
    },
}
