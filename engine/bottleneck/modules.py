"""CB-AE and CC on a generator's latent, in two layouts:

  "ws"   StyleGAN2's w [B, num_ws, w_dim] (one vector per synthesis layer): the encoder reads the mean
         over the num_ws axis, the decoder's output is repeated num_ws times;
  "flat" a feature map such as a DDPM UNet's mid-block output [B, C, H, W]: the encoder reads it
         flattened (C*H*W inputs), the decoder's output is reshaped back (the original's cbae_unet2d).

Layout as the original project (so its checkpoints load as they are):
  encoder: depth x (Linear -> LeakyReLU(0.1) -> BatchNorm1d) -> Linear to the concept logits
           (+ unknown dims)                                        keys encoder.0, .2, .3, .5, ...
  decoder: the mirror image                                        keys decoder.0, .2, .3, .5, ...
CC is the encoder alone. Linear layers start Xavier-uniform with zero bias; BatchNorm scales start
at N(1, 0.02) (the original's initialisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from engine.bottleneck.spec import ConceptSpec


def _mlp(n_in: int, hidden: int, depth: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.1), nn.BatchNorm1d(hidden)]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Bottleneck(nn.Module):
    """Common part of CB-AE and CC: the concept encoder E."""

    kind = ""

    def __init__(
        self,
        spec: ConceptSpec,  # concept layout of E's output
        w_dim: int,  # latent width (512 for CelebA-HQ StyleGAN2)
        num_ws: int,  # latent vectors per sample (14 at 256 px)
        hidden: int | None = None,  # hidden width; None: w_dim (the original), 512 for a flat latent
        depth: int = 3,  # hidden blocks (the original: 3)
        flat_shape: tuple[int, ...] | None = None,  # a feature-map latent [C, H, W] ("flat" layout); w_dim/num_ws unused
    ):
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0 (got {depth})")
        self.spec = spec
        if flat_shape is not None:
            self.layout = "flat"
            self.latent_shape = tuple(int(d) for d in flat_shape)
            self.w_dim = math.prod(self.latent_shape)  # the encoder's input width
            self.num_ws = 1
            self.hidden = int(hidden or 512)
        else:
            self.layout = "ws"
            self.w_dim = int(w_dim)
            self.num_ws = int(num_ws)
            self.latent_shape = (self.num_ws, self.w_dim)
            self.hidden = int(hidden or w_dim)
        self.depth = int(depth)
        self.encoder = _mlp(self.w_dim, self.hidden, self.depth, spec.total)

    def enc(self, latent: torch.Tensor) -> torch.Tensor:  # latent [B, *latent_shape] -> logits [B, spec.total]
        if tuple(latent.shape[1:]) != self.latent_shape:
            raise ValueError(f"latent must be [B, {', '.join(map(str, self.latent_shape))}] (got {tuple(latent.shape)})")
        if self.layout == "flat":
            return self.encoder(latent.reshape(latent.shape[0], self.w_dim))
        return self.encoder(latent.mean(dim=1))

    def concept_probs(self, logits: torch.Tensor) -> list[torch.Tensor]:  # [B, total] -> K x [B, n_k]
        return [logits[:, self.spec.group(k)].softmax(dim=1) for k in range(len(self.spec.names))]

    def config(self) -> dict:
        if self.layout == "flat":
            return {"kind": self.kind, "layout": "flat", "latent_shape": list(self.latent_shape), "hidden": self.hidden, "depth": self.depth}
        return {"kind": self.kind, "w_dim": self.w_dim, "num_ws": self.num_ws, "hidden": self.hidden, "depth": self.depth}


class CC(Bottleneck):
    """Concept controller: the encoder alone, a concept predictor on the latent."""

    kind = "cc"

    def __init__(self, spec: ConceptSpec, w_dim: int, num_ws: int, hidden: int | None = None, depth: int = 3,
                 flat_shape: tuple[int, ...] | None = None):
        super().__init__(spec, w_dim, num_ws, hidden, depth, flat_shape)
        self.apply(_init)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.enc(latent)


class CBAE(Bottleneck):
    """Concept bottleneck autoencoder: E to concept logits, D back to the latent."""

    kind = "cbae"

    def __init__(self, spec: ConceptSpec, w_dim: int, num_ws: int, hidden: int | None = None, depth: int = 3,
                 flat_shape: tuple[int, ...] | None = None):
        super().__init__(spec, w_dim, num_ws, hidden, depth, flat_shape)
        self.decoder = _mlp(spec.total, self.hidden, self.depth, self.w_dim)
        self.apply(_init)

    def dec(self, logits: torch.Tensor) -> torch.Tensor:  # [B, total] -> [B, *latent_shape]
        if logits.ndim != 2 or logits.shape[1] != self.spec.total:
            raise ValueError(f"concept logits must be [B, {self.spec.total}] (got {tuple(logits.shape)})")
        if self.layout == "flat":
            return self.decoder(logits).reshape(logits.shape[0], *self.latent_shape)
        return self.decoder(logits).unsqueeze(1).repeat(1, self.num_ws, 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(latent))


def swap_logits(logits: torch.Tensor, spec: ConceptSpec, k: int, value: int | torch.Tensor) -> torch.Tensor:
    """The original's CB-AE intervention: in concept k's logit group, the largest logit and the
    target value's logit trade places, so the target wins by the margin the old winner had.
    `value`: an int, or [B] int64 for a per-sample target. Returns a new tensor [B, total]."""
    out = logits.clone()
    group = out[:, spec.group(k)]  # a view into out
    b = group.shape[0]
    target = torch.as_tensor(value, device=logits.device, dtype=torch.long).expand(b).reshape(b, 1)
    old = group.gather(1, target)  # [B, 1]
    top, arg = group.max(dim=1, keepdim=True)
    group.scatter_(1, arg, old)
    group.scatter_(1, target, top)
    return out
