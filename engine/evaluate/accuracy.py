"""How well a bottleneck explains generated images: its encoder's concept predictions on w against
an evaluator's judgement of g2(w) (and, on toyfaces, against the ground truth the world decides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from engine.errors import UsageError
from engine.generators.ddpm import Sampling


@dataclass(frozen=True)
class AccuracyConfig:
    gen: str = "toyfaces"
    cbae: str | None = None  # (default on toyfaces: the built-in CB-AE)
    cc: str | None = None
    config: str | None = None
    classifiers: str | None = None  # the evaluator (default on toyfaces: oracle)
    samples: int = 1000
    batch_size: int = 100
    seed: int = 0
    truncation_psi: float = 1.0
    device: str = "auto"
    sampling: Sampling = Sampling()  # DDPM: scheduler, steps, eta, intervene_below
    force: bool = False


def evaluate_accuracy(cfg: AccuracyConfig, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    from engine import distributed as D
    from engine.classifiers.io import load_classifier_set
    from engine.device import resolve_device
    from engine.evaluate.steerability import _find, sample_seed
    from engine.generators.latent import open_generator
    from engine.intervene import open_bottleneck
    from engine.toyfaces.world import CONCEPTS

    if cfg.samples < 1 or cfg.batch_size < 1:
        raise UsageError("--samples and --batch-size must be at least 1")
    dist = D.setup(cfg.device)
    device = resolve_device(D.rank_device(cfg.device, dist))
    lg = open_generator(cfg.gen, device=device, truncation_psi=cfg.truncation_psi, **cfg.sampling.kwargs())
    world = lg.world
    model, meta, where = open_bottleneck(cfg.gen, cfg.cbae, cfg.cc, cfg.config, lg, device, cfg.force)
    evaluator_name = cfg.classifiers or ("oracle" if world is not None else None)
    evaluator = load_classifier_set(evaluator_name, device=device) if evaluator_name else {}
    names = list(model.spec.names)
    agree_eval = {n: 0 for n in names if _find(n, evaluator)}
    agree_truth = {n: 0 for n in names if world is not None and n in CONCEPTS}
    evaluator_vs_truth = {n: 0 for n in agree_truth if n in agree_eval}
    mine = D.shard(range(cfg.samples), dist)  # sample i comes from seed hash(seed, i), whatever process makes it
    for start in range(0, len(mine), cfg.batch_size):
        idx = mine[start : start + cfg.batch_size]
        batch_seeds = [sample_seed(cfg.seed, 0, i) for i in idx]
        z = lg.z_from_seeds(batch_seeds)
        seen: dict[str, torch.Tensor] = {}

        def record(h):  # StyleGAN2: w; DDPM: the mid-block latent at the last step t <= intervene_below
            seen["latent"] = h.detach()
            return h

        imgs = lg.render(z, record, seeds=batch_seeds)
        with torch.no_grad():
            logits = model.enc(seen["latent"])
            pred = {name: logits[:, model.spec.group(k)].argmax(dim=1).cpu() for k, name in enumerate(names)}
            judged = {name: evaluator[_find(name, evaluator)][0](imgs).argmax(dim=1).cpu() for name in agree_eval}
            truth = world.factors(z.cpu())[0] if world is not None else None
        for name in agree_eval:
            agree_eval[name] += int((pred[name] == judged[name]).sum())
        for name in agree_truth:
            t = truth[:, CONCEPTS.index(name)]
            agree_truth[name] += int((pred[name] == t).sum())
            if name in evaluator_vs_truth:
                evaluator_vs_truth[name] += int((judged[name] == t).sum())
        if progress is not None:
            progress(min(cfg.samples, (start + len(idx)) * dist.world_size), cfg.samples)
    keys = [("e", n) for n in agree_eval] + [("t", n) for n in agree_truth] + [("v", n) for n in evaluator_vs_truth]
    tables = {"e": agree_eval, "t": agree_truth, "v": evaluator_vs_truth}
    summed = D.all_reduce_sum([tables[t][n] for t, n in keys], dist)  # counts of every rank
    for (t, n), x in zip(keys, summed.tolist()):
        tables[t][n] = int(round(x))
    r = lambda x: round(x / cfg.samples, 4)  # noqa: E731
    rows = []
    for name in names:
        row: dict[str, Any] = {"concept": name}
        if name in agree_eval:
            row["agreement_with_evaluator"] = r(agree_eval[name])
        if name in agree_truth:
            row["agreement_with_ground_truth"] = r(agree_truth[name])
        if name in evaluator_vs_truth:
            row["evaluator_vs_ground_truth"] = r(evaluator_vs_truth[name])
        rows.append(row)

    def mean(key):
        vals = [row[key] for row in rows if key in row]
        return round(sum(vals) / len(vals), 4) if vals else None

    return {"generator": cfg.gen, "bottleneck": where, "kind": model.kind, "evaluator": evaluator_name, "samples": cfg.samples,
            "seed": cfg.seed, "rows": rows, "mean_agreement_with_evaluator": mean("agreement_with_evaluator"),
            "mean_agreement_with_ground_truth": mean("agreement_with_ground_truth")}
