"""PyTorch sidecar of the pairuni SDK."""

__version__ = "0.1.0"
