"""Concept classifiers (pseudo-labelers and evaluation oracles)."""
