"""Pseudo-label sources M for bottleneck training: supervised classifiers, CLIP zero-shot, TIP-Adapter."""
