"""`gencbm generate`: images from seeds, as NVIDIA's gen_images.py makes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from engine.errors import UsageError
from engine.generators.stylegan2 import NOISE_MODES


@dataclass(frozen=True)
class GenerateConfig:
    gen: str  # generator: artifact name or file path
    seeds: tuple[int, ...]  # one image per seed (z as NVIDIA's gen_images.py)
    out_dir: Path = Path("out")  # where seedNNNN.png files go
    class_idx: int | None = None  # class label for conditional generators; None for unconditional
    truncation_psi: float = 1.0  # 1: no truncation
    truncation_cutoff: int | None = None  # truncate only the first N ws; None: all
    noise_mode: str = "const"  # const | random | none
    grid: bool = False  # also write grid.png with every image
    batch_size: int = 8  # images per forward pass
    device: str = "auto"  # auto | cpu | cuda[:N]
    pickle_key: str = "G_ema"  # network to load from an NVIDIA pickle
    classifiers: tuple[str, ...] = ()  # classifier sets (names or folders) whose predictions join the manifest
    cbae: str | None = None  # a CB-AE whose concept probabilities (from its encoder on w) join the manifest
    cc: str | None = None  # a CC, likewise
    config: str | None = None  # the original YAML of an original-format --cbae / --cc
    force: bool = False  # use a bottleneck trained for another generator anyway


@dataclass
class GenerateResult:
    generator: str  # what was loaded
    images: list[dict] = field(default_factory=list)  # [{"seed": s, "path": str}]
    grid: str | None = None  # path of grid.png, if written
    settings: dict = field(default_factory=dict)  # the options used

    def to_json(self) -> dict:
        return {"generator": self.generator, "images": self.images, "grid": self.grid, **self.settings}


def _caption(entry: dict) -> list[str]:
    """Caption lines for the annotated grid: seed, then per concept the first set's probability
    (and ground truth as 0/1 where known), abbreviated to fit under a 128 px image."""
    lines = [f"seed {entry['seed']}"]
    preds = next(iter(entry.get("predictions", {}).values()), {})
    truth = entry.get("ground_truth", {})
    for concept in list(preds) or list(truth):
        short = concept.replace("_", "")[:10]
        value = preds.get(concept)
        value = max(value) if isinstance(value, list) else value
        p = f" {value:.2f}" if value is not None else ""
        t = f" gt{truth[concept]}" if concept in truth else ""
        lines.append(f"{short}{p}{t}")
    return lines


def _check(config: GenerateConfig) -> None:
    if not config.seeds:
        raise UsageError("no seeds given")
    if config.noise_mode not in NOISE_MODES:
        raise UsageError(f"--noise-mode must be one of {', '.join(NOISE_MODES)} (got {config.noise_mode!r})")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {config.batch_size})")
    if config.truncation_cutoff is not None and config.truncation_cutoff < 0:
        raise UsageError(f"--trunc-cutoff must be >= 0 (got {config.truncation_cutoff})")


def generate(config: GenerateConfig, progress: Callable[[int, int], None] | None = None) -> GenerateResult:
    """Write one PNG per seed (and optionally a grid); `progress(done, total)` after each batch."""
    from engine.device import resolve_device
    from engine.generators import load_generator
    from engine.generators.stylegan2 import one_hot, z_from_seeds
    from engine.images import make_grid, save_png, to_uint8

    _check(config)
    device = resolve_device(config.device)
    G = load_generator(config.gen, device=device, pickle_key=config.pickle_key)
    if G.c_dim == 0 and config.class_idx is not None:
        raise UsageError("--class was given but this generator is unconditional")
    if G.c_dim > 0 and config.class_idx is None:
        raise UsageError(f"this generator is conditional ({G.c_dim} classes): pass --class K with K in 0..{G.c_dim - 1}")
    if G.c_dim > 0 and not 0 <= config.class_idx < G.c_dim:
        raise UsageError(f"--class must be in 0..{G.c_dim - 1} (got {config.class_idx})")
    if config.truncation_cutoff is not None and config.truncation_cutoff > G.num_ws:
        raise UsageError(f"--trunc-cutoff must be at most num_ws = {G.num_ws} (got {config.truncation_cutoff})")

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = GenerateResult(
        generator=str(config.gen),
        settings={
            "class": config.class_idx,
            "truncation_psi": config.truncation_psi,
            "truncation_cutoff": config.truncation_cutoff,
            "noise_mode": config.noise_mode,
            "device": str(device),
            "resolution": G.img_resolution,
        },
    )
    classifier_sets = {}
    from engine.classifiers.concept import predict_proba

    if config.classifiers:
        from engine.classifiers.io import load_classifier_set

        classifier_sets = {name: load_classifier_set(name, device=device) for name in config.classifiers}
    bottleneck = None
    if config.cbae or config.cc:
        from engine.intervene import open_bottleneck

        bottleneck, _, where = open_bottleneck(config.gen, config.cbae, config.cc, config.config, G.num_ws, device, config.force)
        if (bottleneck.num_ws, bottleneck.w_dim) != (G.num_ws, G.w_dim):
            raise UsageError(f"the bottleneck expects latents [{bottleneck.num_ws}, {bottleneck.w_dim}] but the generator makes [{G.num_ws}, {G.w_dim}]")
        result.settings["bottleneck"] = where
    world = None
    world_meta = (getattr(G, "gencbm_meta", None) or {}).get("world")
    if world_meta is not None:  # a toyfaces generator: its z decides the ground-truth concepts
        from engine.toyfaces.world import CONCEPTS, World, WorldConfig

        world = World(WorldConfig.from_json(world_meta))
    arrays = []
    seeds = list(config.seeds)
    total = len(seeds)
    if progress is not None:
        progress(0, total)
    with torch.no_grad():
        for start in range(0, total, config.batch_size):
            batch = seeds[start : start + config.batch_size]
            z = z_from_seeds(batch, G.z_dim).to(device)
            c = one_hot(config.class_idx, G.c_dim, len(batch))
            c = c.to(device) if c is not None else None
            ws = G.mapping(z, c, truncation_psi=config.truncation_psi, truncation_cutoff=config.truncation_cutoff)
            img = G.synthesis(ws, noise_mode=config.noise_mode)
            truth = world.factors(z.cpu())[0].tolist() if world is not None else None
            preds = {}
            if bottleneck is not None:  # the bottleneck explains the image: its encoder's reading of w
                from engine.intervene import _probs_of_one

                per_image = _probs_of_one(bottleneck, bottleneck.enc(ws))
                preds[bottleneck.kind] = {concept: [p[concept] for p in per_image] for concept in bottleneck.spec.names}
            preds.update({name: {concept: predict_proba(clf, img).tolist() for concept, (clf, _) in cset.items()}
                          for name, cset in classifier_sets.items()})
            for i, (seed, arr) in enumerate(zip(batch, to_uint8(img))):
                path = save_png(arr, out_dir / f"seed{seed:04d}.png")
                entry = {"seed": seed, "path": str(path)}
                if truth is not None:
                    entry["ground_truth"] = dict(zip(CONCEPTS, truth[i]))
                if preds:
                    entry["predictions"] = {name: {c: (round(p[i], 4) if isinstance(p[i], float) else p[i]) for c, p in by_concept.items()}
                                            for name, by_concept in preds.items()}
                result.images.append(entry)
                if config.grid:
                    arrays.append(arr)
            if progress is not None:
                progress(min(start + len(batch), total), total)
    if config.grid:
        result.grid = str(save_png(make_grid(arrays), out_dir / "grid.png"))
        if classifier_sets or world is not None or bottleneck is not None:
            from engine.images import annotated_grid

            captions = [_caption(entry) for entry in result.images]
            result.settings["annotated_grid"] = str(save_png(annotated_grid(arrays, captions), out_dir / "grid-annotated.png"))
    return result
