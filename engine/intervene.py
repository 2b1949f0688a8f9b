"""`gencbm intervene`: edit generated images through a concept bottleneck and show what changed.

Per seed: seedNNNN-orig.png (g2(w)), seedNNNN-recon.png (through the bottleneck without an edit,
g2(D(E(w))); the original image for a CC) and seedNNNN-edit.png (on a DDPM the three are denoising
runs from the same x_T, the bottleneck acting at the steps t <= --intervene-below, and the encoder's
probabilities are read at the last of those steps); grid.png (rows orig / recon /
edit, captioned with the bottleneck's probabilities of the edited concepts); results.json (per seed:
the encoder's concept probabilities on the original and the edited latent and, with classifiers,
their probabilities on each image; ground truth on toyfaces).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engine.bottleneck.interventions import EditSettings, edit_latent, reference_latent
from engine.errors import UsageError
from engine.generators.ddpm import Sampling

DEFAULT_OUT = Path("gencbm-out")


@dataclass(frozen=True)
class InterveneConfig:
    edits: tuple[tuple[str, int], ...]  # (concept name, target value), applied together
    gen: str | None = None  # generator; None: the built-in toyfaces world
    cbae: str | None = None  # CB-AE checkpoint (ours or the original's .pt) or registry name
    cc: str | None = None  # CC checkpoint; exactly one of cbae / cc (none: the built-in toyfaces CB-AE)
    config: str | None = None  # the original YAML for an original checkpoint
    settings: EditSettings = field(default_factory=EditSettings)  # method, eps, iters, alpha, ...
    seeds: tuple[int, ...] = tuple(range(8))  # one edit per seed
    truncation_psi: float = 1.0
    truncation_cutoff: int | None = None
    noise_mode: str = "const"
    class_idx: int | None = None
    sampling: Sampling = field(default_factory=Sampling)  # DDPM: scheduler, steps, eta, intervene_below
    classifiers: tuple[str, ...] = ()  # classifier sets whose judgement of each image joins results.json
    out_dir: Path | None = None  # None: ./gencbm-out
    batch_size: int = 8
    device: str = "auto"
    force: bool = False  # use a bottleneck trained for another generator anyway


@dataclass
class InterveneResult:
    out_dir: str
    generator: str
    bottleneck: str
    kind: str
    method: str
    edits: list[dict[str, Any]]
    images: list[dict[str, Any]]
    grid: str
    results: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("out_dir", "generator", "bottleneck", "kind", "method", "edits", "grid", "results", "images")}


def _probs_of_one(model, logits: torch.Tensor) -> list[dict[str, float]]:
    """Per sample {concept: P(value 1)} for binary concepts, {concept: [P(v) ...]} for categorical ones."""
    out: list[dict[str, Any]] = [{} for _ in range(logits.shape[0])]
    for k, name in enumerate(model.spec.names):
        p = logits[:, model.spec.group(k)].softmax(dim=1).cpu()
        for i in range(p.shape[0]):
            out[i][name] = round(float(p[i, 1]), 4) if p.shape[1] == 2 else [round(float(x), 4) for x in p[i]]
    return out


def default_eps(lg) -> float:
    """The optimize radius when neither --eps nor the checkpoint says: the original's 0.1 on StyleGAN2 w, 1.0 on a DDPM latent."""
    from engine.bottleneck.interventions import DEFAULT_EPS, DEFAULT_EPS_DDPM

    return DEFAULT_EPS_DDPM if getattr(lg, "family", "") == "ddpm" else DEFAULT_EPS


def open_bottleneck(gen: str, cbae: str | None, cc: str | None, config: str | None, lg, device, force: bool = False):
    """(model, meta, what) for --cbae / --cc (or the built-in toyfaces CB-AE when neither is given).
    `lg`: the open latent generator (its latent shape must fit the bottleneck), or a bare num_ws."""
    from engine.bottleneck.io import load_bottleneck
    from engine.generators.latent import generator_identity_of

    if cbae and cc:
        raise UsageError("pass one of --cbae and --cc, not both")
    value, kind = (cbae, "cbae") if cbae else (cc, "cc") if cc else (None, None)
    if value is None:
        from engine.toyfaces.builtin import builtin_bottleneck

        if str(gen).strip().lower() != "toyfaces":
            raise UsageError("pass --cbae CKPT or --cc CKPT (a built-in bottleneck exists only for --gen toyfaces)")
        value, kind = str(builtin_bottleneck("toyfaces-cbae")), "cbae"
    else:
        from engine.toyfaces.builtin import builtin_bottleneck

        builtin = builtin_bottleneck(value) if not Path(value).exists() else None
        value = str(builtin) if builtin is not None else value
    identity = generator_identity_of(gen)
    shape = tuple(lg.latent_shape) if not isinstance(lg, int) else None
    num_ws = lg if isinstance(lg, int) else (shape[0] if len(shape) == 2 else None)
    model, meta = load_bottleneck(value, kind=kind, config=config, num_ws=num_ws, latent_shape=shape, generator=identity,
                                  force=force, device=device)
    if shape is not None and tuple(model.latent_shape) != shape:
        raise UsageError(f"the bottleneck expects latents {list(model.latent_shape)} but {gen} makes {list(shape)}")
    rec = (meta.get("intervention") or {}).get("intervene_below")
    if getattr(lg, "family", "") == "ddpm" and not lg.intervene_below_given and rec is not None:
        lg.intervene_below = int(rec)  # the t range the bottleneck was trained on (train --max-t)
    return model, meta, value


def _generator_settings(lg, config) -> dict[str, Any]:
    if lg.family == "ddpm":
        return {k: v for k, v in lg.describe().items() if k in ("scheduler", "steps", "eta", "intervene_below")}
    return {"truncation_psi": config.truncation_psi, "noise_mode": config.noise_mode}


def intervene(config: InterveneConfig, progress: Callable[[int, int], None] | None = None) -> InterveneResult:
    from engine.classifiers.concept import predict_proba
    from engine.classifiers.io import load_classifier_set
    from engine.device import resolve_device
    from engine.generators.latent import open_generator
    from engine.images import annotated_grid, save_png

    if not config.seeds:
        raise UsageError("no seeds given")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {config.batch_size})")
    device = resolve_device(config.device)
    gen = config.gen or "toyfaces"
    lg = open_generator(gen, device=device, truncation_psi=config.truncation_psi, truncation_cutoff=config.truncation_cutoff,
                        noise_mode=config.noise_mode, class_idx=config.class_idx, **config.sampling.kwargs())
    model, meta, where = open_bottleneck(gen, config.cbae, config.cc, config.config, lg, device, config.force)
    settings = config.settings.resolved(meta, default_eps=default_eps(lg))
    settings.check(model.kind)
    spec = model.spec
    if not config.edits:
        raise UsageError(f"no edit given: pass --concept NAME --value V (concepts: {', '.join(spec.names)})")
    edits = [(spec.index(name), 0) for name, _ in config.edits]
    edits = [(k, spec.check_value(k, v)) for (k, _), (_, v) in zip(edits, config.edits)]
    if len({k for k, _ in edits}) != len(edits):
        raise UsageError("a concept is edited twice in one call")
    classifier_sets = {name: load_classifier_set(name, device=device) for name in config.classifiers}
    world = lg.world
    out_dir = Path(config.out_dir) if config.out_dir is not None else DEFAULT_OUT
    out_dir.mkdir(parents=True, exist_ok=True)

    images: list[dict[str, Any]] = []
    rows: dict[str, list] = {"orig": [], "recon": [], "edit": []}
    captions: dict[str, list] = {"orig": [], "recon": [], "edit": []}
    seeds = list(config.seeds)
    edited_names = [spec.names[k] for k, _ in edits]
    if progress is not None:
        progress(0, len(seeds))
    for start in range(0, len(seeds), config.batch_size):
        batch = seeds[start : start + config.batch_size]
        z = lg.z_from_seeds(batch)
        seen: dict[str, torch.Tensor] = {}  # the latent at the last edited step (StyleGAN2: w) and its edits

        def record(key, fn=None):
            def apply(h):
                out = fn(h) if fn is not None else h
                seen[key] = out.detach()
                return out
            return apply

        imgs = {"orig": lg.render(z, record("orig_latent"), seeds=batch)}
        imgs["recon"] = lg.render(z, record("recon", lambda h: reference_latent(model, h)), seeds=batch) if model.kind == "cbae" else imgs["orig"]
        imgs["edit"] = lg.render(z, record("edit", lambda h: edit_latent(model, h, edits, settings)), seeds=batch)
        with torch.no_grad():
            enc = {"orig": _probs_of_one(model, model.enc(seen["orig_latent"])), "edit": _probs_of_one(model, model.enc(seen["edit"]))}
            if model.kind == "cbae":
                enc["recon"] = _probs_of_one(model, model.enc(seen["recon"]))
            cls = {name: {row: {c: predict_proba(clf, imgs[row]).tolist() for c, (clf, _) in cset.items()} for row in imgs}
                   for name, cset in classifier_sets.items()}
            truth = world.factors(z.cpu())[0].tolist() if world is not None else None
        arrays = {row: lg.to_uint8(img) for row, img in imgs.items()}
        for i, seed in enumerate(batch):
            entry: dict[str, Any] = {"seed": seed}
            for row in ("orig", "recon", "edit"):
                entry[row] = str(save_png(arrays[row][i], out_dir / f"seed{seed:04d}-{row}.png"))
                rows[row].append(arrays[row][i])
            entry["encoder"] = {row: probs[i] for row, probs in enc.items()}
            if cls:
                entry["classifiers"] = {name: {row: {c: round(p[i], 4) for c, p in by.items()} for row, by in rows_.items()}
                                        for name, rows_ in cls.items()}
            if truth is not None:
                from engine.toyfaces.world import CONCEPTS

                entry["ground_truth"] = dict(zip(CONCEPTS, truth[i]))
            for row in ("orig", "recon", "edit"):
                src = enc.get(row, enc["orig"])[i]
                lines = [f"seed {seed} {row}"]
                for name in edited_names:
                    p = src[name]
                    lines.append(f"{name.replace('_', '')[:10]} {p:.2f}" if isinstance(p, float) else f"{name[:10]} {max(p):.2f}")
                for name, by_row in (entry.get("classifiers") or {}).items():
                    for c in edited_names:
                        if c in by_row[row]:
                            lines.append(f"{name[:6]}:{c.replace('_', '')[:6]} {by_row[row][c]:.2f}")
                captions[row].append(lines)
            images.append(entry)
        if progress is not None:
            progress(min(start + len(batch), len(seeds)), len(seeds))
    cols = len(seeds)
    grid = annotated_grid(rows["orig"] + rows["recon"] + rows["edit"], captions["orig"] + captions["recon"] + captions["edit"], cols=cols)
    grid_path = save_png(grid, out_dir / "grid.png")
    result = InterveneResult(
        out_dir=str(out_dir), generator=gen, bottleneck=where, kind=model.kind, method=config.settings.method,
        edits=[{"concept": spec.names[k], "value": v} for k, v in edits], images=images, grid=str(grid_path),
        results=str(out_dir / "results.json"),
    )
    doc = {**result.to_json(), "settings": {"eps": settings.eps, "iters": settings.iters, "alpha": settings.alpha,
                                             **({"on": settings.on} if model.kind == "cbae" else {}), "stop_at": settings.stop_at,
                                             **_generator_settings(lg, config)}}
    from engine.store.atomic import atomic_write_bytes

    atomic_write_bytes(out_dir / "results.json", (json.dumps(doc, indent=1) + "\n").encode())
    return result
