"""Model-agnostic policy code: the clipped PairGRPO surrogate, the optimizer step and checkpoints."""

from ..errors import NonFiniteError  # re-exported: it lives with the other wire errors
from .checkpoint import CheckpointCorrupt, export_policy, load_policy, read_policy_meta, save_policy
from .loss import LossCfg, LossConfigError, clipped_surrogate, traj_coefficients
from .step import OptimCfg, Policy, SideInput

__all__ = [
    "CheckpointCorrupt",
    "LossCfg",
    "LossConfigError",
    "NonFiniteError",
    "OptimCfg",
    "Policy",
    "SideInput",
    "clipped_surrogate",
    "export_policy",
    "load_policy",
    "read_policy_meta",
    "save_policy",
    "traj_coefficients",
]
