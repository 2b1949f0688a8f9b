"""Steerability of concept edits, by the original project's protocol, plus side effects.

For each row (concept c, target value v) and N generated samples:
  reference image = the reconstruction g2(D(E(w))) for a CB-AE, the original g2(w) for a CC or a
                    latent-direction baseline; edited image = g2(edit(w)) (on a DDPM: the denoising
                    run from the same x_T with the reference / edit applied at the steps t <= 400);
  eligible        = the evaluator judges the reference NOT to have value v;
  steerability    = eligible samples whose edited image the evaluator judges to have v / eligible;
  negative rate   = samples whose reference had v and whose edit lost it / samples whose reference had v;
  side effects    = per other concept, the share of samples whose evaluator prediction flipped;
  mean pixel change = mean |edit - reference| over pixels, images in [0, 1].
Sample i of a row is made from seed hash(seed, row, i) (`sample_seed`), so every method sees the same
latents for a given seed, and the numbers do not depend on the batch size or on how many processes
share the work: under torchrun each rank takes every world_size-th sample and the counts are summed
over the ranks. Memory stays constant in N (batches are reduced to counts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engine.errors import UsageError
from engine.generators.ddpm import Sampling


@dataclass
class RowResult:
    concept: str
    value: int
    steerability: float | None  # None when no sample was eligible
    negative_rate: float | None  # None when no reference had the value
    eligible: int
    had_value: int
    samples: int
    side_effects: dict[str, float] = field(default_factory=dict)
    mean_side_effect: float = 0.0
    mean_pixel_change: float = 0.0

    def to_json(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
        return {"concept": self.concept, "value": self.value, "steerability": r(self.steerability), "negative_rate": r(self.negative_rate),
                "eligible": self.eligible, "had_value": self.had_value, "samples": self.samples,
                "side_effects": {k: r(v) for k, v in self.side_effects.items()}, "mean_side_effect": r(self.mean_side_effect),
                "mean_pixel_change": r(self.mean_pixel_change)}


def evaluator_predictions(evaluator: dict[str, Any], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{concept: predicted value [B] int64} from a classifier set {concept: (classifier, meta)}."""
    out = {}
    with torch.no_grad():
        for concept, (clf, _) in evaluator.items():
            out[concept] = clf(images).argmax(dim=1).cpu()
    return out


def sample_seed(seed: int, row: int, index: int) -> int:
    """The seed of sample `index` of a row: a hash of (seed, row, index), so a sample's latent (and a
    DDPM's step noise) depends on its index alone, not on the batch or the process that makes it."""
    digest = hashlib.sha256(f"gencbm-eval/{seed}/{row}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def evaluate_row(
    concept: str,  # the evaluator's and the editor's name of the concept
    value: int,
    *,
    z_from_seeds: Callable[[list[int]], torch.Tensor],  # seeds -> z (StyleGAN2 z, DDPM x_T)
    reference: Callable[[torch.Tensor], torch.Tensor] | None,  # latent -> reference latent; None: the latent itself
    edit: Callable[[torch.Tensor], torch.Tensor],  # latent -> edited latent
    render: Callable[..., torch.Tensor],  # render(z, edit, seeds=...) -> image [B, C, H, W] in [-1, 1] (the generator's)
    evaluator: dict[str, Any],  # {concept: (classifier, meta)}
    samples: int,
    batch_size: int,
    seeds: Callable[[int], int],  # sample index -> its seed
    on_batch: Callable[[int], None] | None = None,  # called with the samples done (all ranks together, estimated) after each batch
    keep_examples: int = 0,  # keep this many (reference, edited, success) image pairs for grids
    dist=None,  # engine.distributed.Dist: this process's share of the samples; counts are summed over ranks
) -> tuple[RowResult, list[tuple[torch.Tensor, torch.Tensor, bool]]]:
    from engine import distributed as D

    dist = dist or D.current()
    if concept not in evaluator:
        raise UsageError(f"the evaluator has no classifier for {concept} (it has {', '.join(evaluator)})")
    others = [c for c in evaluator if c != concept]
    counts = torch.zeros(5 + len(others), dtype=torch.float64)  # eligible, success, had, lost, pixel sum, flips per other
    examples: list[tuple[int, torch.Tensor, torch.Tensor, bool]] = []
    mine = D.shard(range(samples), dist)
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        batch_seeds = [seeds(i) for i in idx]
        z = z_from_seeds(batch_seeds)
        ref_img = render(z, reference, seeds=batch_seeds)
        edit_img = render(z, edit, seeds=batch_seeds)
        pr = evaluator_predictions(evaluator, ref_img)
        pe = evaluator_predictions(evaluator, edit_img)
        is_eligible = pr[concept] != value
        ok = is_eligible & (pe[concept] == value)
        had_it = ~is_eligible
        pixel = ((edit_img - ref_img).abs() * 0.5).to(torch.float64).mean(dim=(1, 2, 3)).cpu()
        counts[0] += int(is_eligible.sum())
        counts[1] += int(ok.sum())
        counts[2] += int(had_it.sum())
        counts[3] += int((had_it & (pe[concept] != value)).sum())
        counts[4] += float(pixel.sum())
        for j, c in enumerate(others):
            counts[5 + j] += int((pr[c] != pe[c]).sum())
        for b, i in enumerate(idx):
            if len(examples) < keep_examples and bool(is_eligible[b]):
                examples.append((i, ref_img[b].cpu(), edit_img[b].cpu(), bool(ok[b])))
        if on_batch is not None:
            on_batch(min(samples, (start + len(idx)) * dist.world_size))
    counts = D.all_reduce_sum(counts, dist)
    if dist.enabled and keep_examples:  # the first eligible samples by index, as one process would keep
        examples = [e for part in D.gather_objects(examples, dist) for e in part]
    examples = sorted(examples, key=lambda e: e[0])[:keep_examples]
    eligible, success, had, lost = (int(round(float(x))) for x in counts[:4])
    side = {c: float(counts[5 + j]) / samples for j, c in enumerate(others)}
    row = RowResult(
        concept=concept, value=int(value), steerability=success / eligible if eligible else None,
        negative_rate=lost / had if had else None, eligible=eligible, had_value=had, samples=samples, side_effects=side,
        mean_side_effect=sum(side.values()) / len(side) if side else 0.0, mean_pixel_change=float(counts[4]) / samples,
    )
    return row, [(r, e, ok) for _, r, e, ok in examples]


# ------------------------------------------------------------------------------------------------
# The whole table: `gencbm evaluate steerability`.

METHODS = ("swap", "optimize", "interfacegan")


@dataclass(frozen=True)
class SteerabilityConfig:
    gen: str = "toyfaces"  # generator
    cbae: str | None = None  # CB-AE (default on toyfaces: the built-in one)
    cc: str | None = None  # CC instead of a CB-AE
    config: str | None = None  # the original YAML of an original checkpoint
    classifiers: str | None = None  # the evaluator (default on toyfaces: oracle)
    concepts: tuple[str, ...] = ("all",)  # concepts to edit; ("all",): every concept the editor and the evaluator share
    values: tuple[int, ...] = (0, 1)  # target values per concept
    method: str = "optimize"  # swap | optimize | interfacegan
    settings: Any = None  # EditSettings for swap/optimize (method is overridden by `method`); None: defaults
    fit_classifiers: str | None = None  # interfacegan: labeler for the boundaries (default: the bottleneck's pseudo-labeler set)
    fit_samples: int = 2000  # interfacegan: labelled latents per fit
    margin: float = 1.0  # interfacegan: target distance beyond the boundary, in projection stds
    strength: float | None = None  # interfacegan: fixed move in projection stds instead of crossing
    samples: int = 200  # samples per (concept, value) row
    batch_size: int = 50
    seed: int = 0
    truncation_psi: float = 1.0
    out_dir: str | None = None  # grids of successful and failed edits per row
    examples: int = 8  # images per grid
    device: str = "auto"
    sampling: Sampling = Sampling()  # DDPM: scheduler, steps, eta, intervene_below
    force: bool = False


def _settings(cfg: SteerabilityConfig, model):
    from dataclasses import replace as _replace

    from engine.bottleneck.interventions import EditSettings

    s = cfg.settings or EditSettings()
    if cfg.method in ("swap", "optimize"):
        s = _replace(s, method=cfg.method)
    return s


def evaluate_steerability(cfg: SteerabilityConfig, progress: Callable[[int, int], None] | None = None,
                          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    from engine.bottleneck.interventions import edit_latent, reference_latent
    from engine.classifiers.io import load_classifier_set
    from engine.concepts import match_concept
    from engine.device import resolve_device
    from engine.generators.latent import generator_identity_of, open_generator
    from engine import distributed as D
    from engine.intervene import default_eps, open_bottleneck

    if cfg.method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)} (got {cfg.method!r})")
    if cfg.samples < 1 or cfg.batch_size < 1:
        raise UsageError("--samples and --batch-size must be at least 1")
    if any(v not in (0, 1) for v in cfg.values) or not cfg.values:
        raise UsageError("--value must be 0, 1 or both")
    note = log or (lambda m: None)
    dist = D.setup(cfg.device)
    device = resolve_device(D.rank_device(cfg.device, dist))
    lg = open_generator(cfg.gen, device=device, truncation_psi=cfg.truncation_psi, **cfg.sampling.kwargs())
    toy = lg.world is not None
    model = meta = where = None
    if cfg.method != "interfacegan" or cfg.cbae or cfg.cc or toy:
        model, meta, where = open_bottleneck(cfg.gen, cfg.cbae, cfg.cc, cfg.config, lg, device, cfg.force)
    evaluator_name = cfg.classifiers or ("oracle" if toy else None)
    if evaluator_name is None:
        raise UsageError("pass --classifiers with the evaluation classifiers (e.g. classifiers-celebahq-vitl16)")
    evaluator = load_classifier_set(evaluator_name, device=device)
    editor_names = list(model.spec.names) if model is not None else list(evaluator)
    if cfg.concepts == ("all",) or not cfg.concepts:
        names = [n for n in editor_names if _find(n, evaluator) is not None]
        if not names:
            raise UsageError(f"the evaluator {evaluator_name} judges none of the concepts {', '.join(editor_names)}")
    else:
        names = [match_concept(c, editor_names) for c in cfg.concepts]
    eval_of = {n: _find(n, evaluator) or match_concept(n, list(evaluator), what=f"concept of the evaluator {evaluator_name}") for n in names}

    settings = _settings(cfg, model).resolved(meta, default_eps=default_eps(lg)) if cfg.method != "interfacegan" else None
    if settings is not None:
        settings.check(model.kind)
    boundaries = None
    if cfg.method == "interfacegan":
        if lg.family != "stylegan2":
            raise UsageError("--method interfacegan fits boundaries in StyleGAN2's w; use swap or optimize on a DDPM")
        sample_latents = lambda n, gen: lg.g1(lg.sample_z(n, gen))  # noqa: E731
        fit_name = cfg.fit_classifiers or ((meta or {}).get("training") or {}).get("labeler", {}).get("classifiers") or ("toyfaces-pseudo" if toy else None)
        if fit_name is None:
            raise UsageError("interfacegan needs labels to fit its boundaries: pass --fit-classifiers (e.g. the pseudo-labeler's set)")
        from engine.classifiers.io import load_classifier_set as _load
        from engine.evaluate.interfacegan import fit_boundaries

        fitter = _load(fit_name, device=device)
        fit_of = {n: match_concept(n, list(fitter), what=f"concept of {fit_name}") for n in names}

        def labels_of(images):
            return torch.stack([fitter[fit_of[n]][0](images).argmax(dim=1) for n in names], dim=1)

        ident = generator_identity_of(cfg.gen)
        key = {"generator": ident.to_json(), "labeler": str(fit_name), "truncation_psi": cfg.truncation_psi}
        boundaries, cached = fit_boundaries(names, sample_latents=sample_latents, g2=lg.g2, labels_of=labels_of,
                                            fit_samples=cfg.fit_samples, batch_size=cfg.batch_size, seed=cfg.seed + 7919, cache_key=key)
        note(f"interfacegan boundaries {'from the cache' if cached else 'fitted'}: training accuracy "
             + ", ".join(f"{n} {a:.2f}" for n, a in zip(names, boundaries.accuracy)))

    rows = []
    total = len(names) * len(cfg.values) * cfg.samples
    done_rows = 0
    grids = []
    for ci, name in enumerate(names):
        for v in cfg.values:
            row_id = 2 * ci + v
            if cfg.method == "interfacegan":
                k = names.index(name)
                reference = None
                edit = lambda w, k=k, v=v: boundaries.edit(w, k, v, cfg.margin, cfg.strength)  # noqa: E731
            else:
                k = model.spec.index(name)
                on_latent = model.kind == "cc" or (settings.method == "optimize" and settings.on == "latent")
                reference = None if on_latent else (lambda w: reference_latent(model, w))
                edit = lambda w, k=k, v=v: edit_latent(model, w, [(k, v)], settings)  # noqa: E731
            base = done_rows * cfg.samples
            row, examples = evaluate_row(
                eval_of[name], v, z_from_seeds=lg.z_from_seeds, reference=reference, edit=edit, render=lg.render, evaluator=evaluator,
                samples=cfg.samples, batch_size=cfg.batch_size, seeds=lambda i, row_id=row_id: sample_seed(cfg.seed, row_id, i), dist=dist,
                on_batch=(lambda d, base=base: progress(base + d, total)) if progress else None,
                keep_examples=cfg.examples if cfg.out_dir else 0,
            )
            row.concept = name
            rows.append(row)
            done_rows += 1
            if cfg.out_dir and examples and dist.is_main:
                grids += _save_examples(Path(cfg.out_dir), name, v, examples)
    steer = [r.steerability for r in rows if r.steerability is not None]
    return {
        "generator": cfg.gen,
        "bottleneck": where if cfg.method != "interfacegan" else None,
        "method": cfg.method,
        "settings": ({"eps": settings.eps, "iters": settings.iters, "alpha": settings.alpha, "stop_at": settings.stop_at,
                      **({"on": settings.on} if model.kind == "cbae" else {})}
                     if settings is not None and settings.method == "optimize" else
                     {"alpha": settings.alpha} if settings is not None else
                     {"fit_samples": cfg.fit_samples, "margin": cfg.margin, "strength": cfg.strength}),
        "evaluator": evaluator_name,
        "samples": cfg.samples,
        "seed": cfg.seed,
        "rows": [r.to_json() for r in rows],
        "mean_steerability": round(sum(steer) / len(steer), 4) if steer else None,
        "mean_side_effect": round(sum(r.mean_side_effect for r in rows) / len(rows), 4),
        "mean_negative_rate": _mean([r.negative_rate for r in rows]),
        "grids": grids,
    }


def _mean(values):
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _find(name: str, evaluator: dict) -> str | None:
    from engine.concepts import normalize_concept_name

    key = normalize_concept_name(name)
    for c in evaluator:
        if normalize_concept_name(c) == key:
            return c
    return None


def _save_examples(out: Path, concept: str, value: int, examples) -> list[str]:
    from engine.images import annotated_grid, save_png, to_uint8

    paths = []
    for label, want in (("success", True), ("failure", False)):
        chosen = [(r, e) for r, e, ok in examples if ok == want]
        if not chosen:
            continue
        arrays = list(to_uint8(torch.stack([r for r, _ in chosen]))) + list(to_uint8(torch.stack([e for _, e in chosen])))
        captions = [["reference"]] * len(chosen) + [[f"{concept[:12]}={value}"]] * len(chosen)
        paths.append(str(save_png(annotated_grid(arrays, captions, cols=len(chosen)), out / f"{concept}-{value}-{label}.png")))
    return paths
