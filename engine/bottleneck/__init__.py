"""Concept bottlenecks on a generator's latent: CB-AE (encoder + decoder) and CC (encoder only).

Kulkarni et al., "Interpretable Generative Models through Post-hoc Concept Bottlenecks", CVPR 2025.
"""

from engine.bottleneck.modules import CBAE, CC, Bottleneck, swap_logits
from engine.bottleneck.spec import ConceptSpec

__all__ = ["CBAE", "CC", "Bottleneck", "ConceptSpec", "swap_logits"]
