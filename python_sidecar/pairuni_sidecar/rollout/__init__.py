"""Rollout engines shared by the autoregressive family adapters (see ``engine.py``)."""

from .engine import Decoded, StaticDecoder, cfg_mix, draw, exp_race_noise

__all__ = ["Decoded", "StaticDecoder", "cfg_mix", "draw", "exp_race_noise"]
