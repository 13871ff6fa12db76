"""Masked-diffusion (Lumina-DiMOO style) pieces, family-independent of any checkpoint format:

- ``layout``: the token layout (special ids, image-code range) and the sequences built from it;
- ``samplers``: batched text (low-confidence block remasking) and image (MaskGIT) samplers;
- ``estimator``: the one-step mean-field log-prob estimator of d1 / dLLM for GRPO;
- ``tiny_model``: the project's tiny bidirectional transformer with the same conventions.

The adapter (``adapters/dimoo.py``) glues them to a loaded model.
"""
