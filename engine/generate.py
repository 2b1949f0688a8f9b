"""`gencbm generate`: images from seeds, as NVIDIA's gen_images.py makes them (StyleGAN2), or as
diffusers' DDIM/DDPM pipelines make them (a diffusers UNet2DModel: engine.generators.ddpm).

With `skip_existing`, seeds whose seedNNNN.png is already there are not generated again (PNGs are
written atomically, so an existing file is a complete one): a long pre-generation run can be
re-run after an interruption and continues where it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engine import distributed as D
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
    scheduler: str = "ddim"  # DDPM: ddim | ddpm
    steps: int | None = None  # DDPM: denoising steps; None: 50 for DDIM, 1000 for DDPM
    eta: float = 0.0  # DDPM: DDIM eta (0: deterministic)
    skip_existing: bool = False  # keep seeds whose seedNNNN.png exists (listed with "skipped": true)


@dataclass
class GenerateResult:
    generator: str  # what was loaded
    images: list[dict] = field(default_factory=list)  # [{"seed": s, "path": str}] (+ "skipped": True)
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
    if config.steps is not None and config.steps < 1:
        raise UsageError(f"--steps must be >= 1 (got {config.steps})")
    if not 0.0 <= config.eta <= 1.0:
        raise UsageError(f"--eta must be in [0, 1] (got {config.eta})")


def _check_family_options(config: GenerateConfig, ddpm: bool) -> None:
    """Options of the other generator family are an error, not silently ignored."""
    if ddpm:
        given = [opt for opt, on in (("--trunc", config.truncation_psi != 1.0), ("--trunc-cutoff", config.truncation_cutoff is not None),
                                     ("--noise-mode", config.noise_mode != "const"), ("--pickle-key", config.pickle_key != "G_ema")) if on]
        if given:
            raise UsageError(f"{', '.join(given)}: StyleGAN2 option(s), but {config.gen} is a DDPM (use --scheduler, --steps, --eta)")
    else:
        given = [opt for opt, on in (("--scheduler", config.scheduler != "ddim"), ("--steps", config.steps is not None),
                                     ("--eta", config.eta != 0.0)) if on]
        if given:
            raise UsageError(f"{', '.join(given)}: DDPM option(s), but {config.gen} is not a diffusers DDPM")


def _pending(config: GenerateConfig, out_dir: Path, shape: tuple[int, int, int]) -> list[int]:
    """The seeds to generate, in the order given: all of them, or with skip_existing those without a
    seedNNNN.png yet. Existing files are checked up front (header only: cheap) to be readable PNGs of
    the size this generator makes, so a resumed run never mixes in another generator's images."""
    seeds = list(config.seeds)
    if not config.skip_existing:
        return seeds
    todo = []
    for seed in seeds:
        path = out_dir / f"seed{seed:04d}.png"
        if path.is_file():
            _check_existing(path, shape)
        else:
            todo.append(seed)
    return todo


def _check_existing(path: Path, shape: tuple[int, int, int]) -> None:
    from PIL import Image

    from engine.errors import CorruptFileError

    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path}: not a readable PNG ({exc}); delete it or run without --skip-existing") from None
    if fmt != "PNG":
        raise CorruptFileError(f"{path}: not a PNG ({fmt}); delete it or run without --skip-existing")
    if size != (shape[1], shape[0]):
        raise UsageError(f"{path} is {size[0]}x{size[1]} but this generator makes {shape[1]}x{shape[0]}: "
                         "another generator's output? (use another --out or run without --skip-existing)")


def _read_existing(path: Path, shape: tuple[int, int, int]):
    """A skipped seed's PNG for the grid, as [H, W, C] uint8 (checked by _pending)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("L" if shape[2] == 1 else "RGB"))
    return arr[:, :, None] if arr.ndim == 2 else arr


def _assemble(config: GenerateConfig, result: GenerateResult, out_dir: Path, made: dict[int, dict], arrays: dict[int, Any],
              shape: tuple[int, int, int], annotate: bool) -> GenerateResult:
    """Manifest entries in the order of the seeds given (skipped ones flagged), then the grids."""
    grid_arrays = []
    for seed in config.seeds:
        if seed in made:
            result.images.append(made[seed])
            if config.grid:
                grid_arrays.append(arrays[seed])
        else:
            path = out_dir / f"seed{seed:04d}.png"
            result.images.append({"seed": seed, "path": str(path), "skipped": True})
            if config.grid:
                grid_arrays.append(_read_existing(path, shape))
    if config.grid:
        from engine.images import make_grid, save_png

        result.grid = str(save_png(make_grid(grid_arrays), out_dir / "grid.png"))
        if annotate:
            from engine.images import annotated_grid

            captions = [_caption(entry) for entry in result.images]
            result.settings["annotated_grid"] = str(save_png(annotated_grid(grid_arrays, captions), out_dir / "grid-annotated.png"))
    return result


def _gathered(made: dict[int, dict], arrays: dict[int, Any]) -> tuple[dict[int, dict], dict[int, Any]]:
    """Every rank's manifest entries (and grid images) on rank 0; as they are in one process."""
    dist = D.current()
    if not dist.enabled:
        return made, arrays
    parts = D.gather_objects((made, arrays), dist)
    return ({k: v for m, _ in parts for k, v in m.items()}, {k: v for _, a in parts for k, v in a.items()})


def _entry(seed: int, path: Path, i: int, preds: dict, truth_row=None) -> dict:
    entry: dict[str, Any] = {"seed": seed, "path": str(path)}
    if truth_row is not None:
        from engine.toyfaces.world import CONCEPTS

        entry["ground_truth"] = dict(zip(CONCEPTS, truth_row))
    if preds:
        entry["predictions"] = {name: {c: (round(p[i], 4) if isinstance(p[i], float) else p[i]) for c, p in by_concept.items()}
                                for name, by_concept in preds.items()}
    return entry


def generate(config: GenerateConfig, progress: Callable[[int, int], None] | None = None) -> GenerateResult:
    """Write one PNG per seed (and optionally a grid); `progress(done, total)` after each batch, over
    the seeds that are generated (not the skipped ones). Under torchrun each rank makes every
    world_size-th seed; rank 0 gathers the manifest and writes the grids."""
    from engine.device import resolve_device
    from engine.generators.ddpm import is_ddpm

    _check(config)
    dist = D.setup(config.device)
    device = resolve_device(D.rank_device(config.device, dist))
    ddpm = is_ddpm(config.gen)
    _check_family_options(config, ddpm)
    if ddpm:
        return _generate_ddpm(config, device, progress)
    return _generate_stylegan2(config, device, progress)


def _classifier_sets(config: GenerateConfig, device) -> dict:
    if not config.classifiers:
        return {}
    from engine.classifiers.io import load_classifier_set

    return {name: load_classifier_set(name, device=device) for name in config.classifiers}


def _predictions(bottleneck, latent, classifier_sets: dict, img) -> dict:
    """{"cbae"|"cc": {concept: [p per image]}} from the bottleneck's encoder on the latent (when
    given), and {set: {concept: [p per image]}} from each classifier set on the images."""
    from engine.classifiers.concept import predict_proba

    preds = {}
    if bottleneck is not None:  # the bottleneck explains the image: its encoder's reading of the latent
        from engine.intervene import _probs_of_one

        per_image = _probs_of_one(bottleneck, bottleneck.enc(latent))
        preds[bottleneck.kind] = {concept: [p[concept] for p in per_image] for concept in bottleneck.spec.names}
    preds.update({name: {concept: predict_proba(clf, img).tolist() for concept, (clf, _) in cset.items()}
                  for name, cset in classifier_sets.items()})
    return preds


def _write_images(config: GenerateConfig, result: GenerateResult, shape: tuple[int, int, int], make, progress,
                  annotate: bool) -> GenerateResult:
    """The loop every family shares: the pending seeds (this rank's share under torchrun), per batch
    `make(seeds) -> (uint8 images [B, H, W, C], predictions, ground-truth rows or None)`, one PNG and
    manifest entry per seed, progress, then the manifest gathered on rank 0, which writes the grids."""
    from engine.images import save_png

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = D.shard(_pending(config, out_dir, shape))  # under torchrun: every world_size-th seed
    made: dict[int, dict] = {}
    arrays: dict[int, Any] = {}
    total = len(todo)
    if progress is not None:
        progress(0, total)
    for start in range(0, total, config.batch_size):
        batch = todo[start : start + config.batch_size]
        with torch.no_grad():
            images, preds, truth = make(batch)
        for i, (seed, arr) in enumerate(zip(batch, images)):
            path = save_png(arr, out_dir / f"seed{seed:04d}.png")
            made[seed] = _entry(seed, path, i, preds, truth[i] if truth is not None else None)
            if config.grid:  # kept only for the grid (a 32k-image run would not fit in memory)
                arrays[seed] = arr
        if progress is not None:
            progress(min(start + len(batch), total), total)
    made, arrays = _gathered(made, arrays)
    if not D.current().is_main:
        return result  # rank 0 alone writes the grids and reports
    return _assemble(config, result, out_dir, made, arrays, shape, annotate=annotate)


def _generate_ddpm(config: GenerateConfig, device, progress) -> GenerateResult:
    """A diffusers DDPM: per batch the scheduler's denoising loop from each seed's x_T."""
    from engine.generators.latent import open_generator

    lg = open_generator(config.gen, device=device, scheduler=config.scheduler, steps=config.steps, eta=config.eta,
                        class_idx=config.class_idx)
    result = GenerateResult(
        generator=str(config.gen),
        settings={"class": config.class_idx, "scheduler": lg.scheduler, "steps": int(lg.steps), "eta": lg.eta,
                  "device": str(device), "resolution": lg.resolution},
    )
    classifier_sets = _classifier_sets(config, device)
    bottleneck = None
    if config.cbae or config.cc:
        from engine.intervene import open_bottleneck

        bottleneck, _, where = open_bottleneck(config.gen, config.cbae, config.cc, config.config, lg, device, config.force)
        result.settings["bottleneck"] = where
        result.settings["intervene_below"] = lg.intervene_below  # the encoder reads the latent of the last step t <= this
    c, h, w = lg.image_shape

    def make(batch: list[int]):
        seen: dict[str, torch.Tensor] = {}

        def record(h):  # the latent at the steps t <= intervene_below; the last call is the last such step
            seen["latent"] = h.detach()
            return h

        img = lg.render(lg.z_from_seeds(batch), edit=record if bottleneck is not None else None, seeds=batch)
        if bottleneck is not None and "latent" not in seen:
            raise UsageError(f"no denoising step has t <= {lg.intervene_below}: the bottleneck never sees a latent")
        return lg.to_uint8(img), _predictions(bottleneck, seen.get("latent"), classifier_sets, img), None

    return _write_images(config, result, (h, w, c), make, progress, annotate=bool(classifier_sets) or bottleneck is not None)


def _generate_stylegan2(config: GenerateConfig, device, progress) -> GenerateResult:
    from engine.generators import load_generator
    from engine.generators.stylegan2 import one_hot, z_from_seeds
    from engine.images import to_uint8

    G = load_generator(config.gen, device=device, pickle_key=config.pickle_key)
    if G.c_dim == 0 and config.class_idx is not None:
        raise UsageError("--class was given but this generator is unconditional")
    if G.c_dim > 0 and config.class_idx is None:
        raise UsageError(f"this generator is conditional ({G.c_dim} classes): pass --class K with K in 0..{G.c_dim - 1}")
    if G.c_dim > 0 and not 0 <= config.class_idx < G.c_dim:
        raise UsageError(f"--class must be in 0..{G.c_dim - 1} (got {config.class_idx})")
    if config.truncation_cutoff is not None and config.truncation_cutoff > G.num_ws:
        raise UsageError(f"--trunc-cutoff must be at most num_ws = {G.num_ws} (got {config.truncation_cutoff})")

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
    classifier_sets = _classifier_sets(config, device)
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
        from engine.toyfaces.world import World, WorldConfig

        world = World(WorldConfig.from_json(world_meta))

    def make(batch: list[int]):
        z = z_from_seeds(batch, G.z_dim).to(device)
        c = one_hot(config.class_idx, G.c_dim, len(batch))
        c = c.to(device) if c is not None else None
        ws = G.mapping(z, c, truncation_psi=config.truncation_psi, truncation_cutoff=config.truncation_cutoff)
        img = G.synthesis(ws, noise_mode=config.noise_mode)
        truth = world.factors(z.cpu())[0].tolist() if world is not None else None
        return to_uint8(img), _predictions(bottleneck, ws, classifier_sets, img), truth

    return _write_images(config, result, (G.img_resolution, G.img_resolution, G.img_channels), make, progress,
                         annotate=bool(classifier_sets) or world is not None or bottleneck is not None)
