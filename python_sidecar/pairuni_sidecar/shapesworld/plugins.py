"""ShapesWorld's plug-ins, declared by the toy world itself (``registry.BUILTIN_PLUGIN_MODULES``): the
framework (policy, adapters, diffusion, rollout, rewards, training) reaches them only by name through the
registry, never by import, so the toy world can change or go without touching it."""

PLUGINS = {
    "op": ["pairuni_sidecar.ops.shapesworld"],
    "reward": {"shapes": "pairuni_sidecar.shapesworld.reward:make_shapes_scorer"},
    # The tiny DiMOO's exact image codec (its config.json: "codec": "shapes").
    "codec": {"shapes": "pairuni_sidecar.shapesworld.codec:make_shapes_codec"},
}
