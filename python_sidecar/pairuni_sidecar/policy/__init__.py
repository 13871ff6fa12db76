"""Model-agnostic policy code: the clipped PairGRPO surrogate, the optimizer step and checkpoints."""
from .checkpoint import load_policy, read_policy_meta, save_policy
from .loss import LossCfg, LossConfigError, clipped_surrogate, traj_coefficients
from .step import NonFiniteError, OptimCfg, Policy, SideInput

__all__ = [
    "LossCfg", "LossConfigError", "NonFiniteError", "OptimCfg", "Policy", "SideInput",
    "clipped_surrogate", "load_policy", "read_policy_meta", "save_policy", "traj_coefficients",
]
