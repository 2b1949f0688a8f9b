"""`gencbm evaluate steerability|accuracy|fid`: the paper's numbers, measured on your generator."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from gencbm_cli.common import (DdpmStepsOpt, DebugOpt, EtaOpt, IntervenBelowOpt, JsonOpt, QuietOpt, SchedulerOpt, apply_common, command,
                               info, print_json, progress_bar, sampling)

evaluate_app = typer.Typer(
    help="Measure steerability and side effects, concept accuracy, or FID.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

GenOpt = Annotated[str, typer.Option("--gen", "-g", help="Generator: StyleGAN2 (name or file) or DDPM (diffusers UNet / pipeline folder, ddpm-celebahq-256); default: the built-in toyfaces world.")]
CbaeOpt = Annotated[Optional[str], typer.Option("--cbae", help="CB-AE checkpoint (default on toyfaces: the built-in one).")]
CcOpt = Annotated[Optional[str], typer.Option("--cc", help="CC checkpoint instead of a CB-AE.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="The original YAML config of an original checkpoint.")]
ClassifiersOpt = Annotated[Optional[str], typer.Option("--classifiers", help="Evaluation classifiers (default on toyfaces: oracle).")]
SamplesOpt = Annotated[int, typer.Option("--samples", "-n", min=1, help="Samples per row.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per batch.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the sampled latents (the same for every method).")]
TruncOpt = Annotated[float, typer.Option("--trunc", help="Truncation psi (1 = none).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Use a bottleneck trained for another generator anyway.")]


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"steerability: {doc['method']} on {doc['generator']} (evaluator {doc['evaluator']}, {doc['samples']} samples per row)")
    for col in ("concept", "value", "steerability", "negative rate", "eligible", "mean side effect", "worst side effect", "pixel change"):
        t.add_column(col, justify="left" if col == "concept" else "right")
    for r in doc["rows"]:
        worst = max(r["side_effects"].items(), key=lambda kv: kv[1]) if r["side_effects"] else None
        t.add_row(r["concept"], str(r["value"]), _fmt(r["steerability"]), _fmt(r["negative_rate"]), str(r["eligible"]),
                  _fmt(r["mean_side_effect"]), f"{worst[0]} {worst[1]:.3f}" if worst else "-", _fmt(r["mean_pixel_change"]))
    t.add_section()
    t.add_row("mean", "", _fmt(doc["mean_steerability"]), _fmt(doc["mean_negative_rate"]), "", _fmt(doc["mean_side_effect"]), "", "")
    Console(highlight=False).print(t)


@evaluate_app.command("steerability")
@command
def steerability(
    gen: GenOpt = "toyfaces", cbae: CbaeOpt = None, cc: CcOpt = None, config: ConfigOpt = None, classifiers: ClassifiersOpt = None,
    concept: Annotated[Optional[List[str]], typer.Option("--concept", "-c", help="Concept to edit (repeatable), or all.")] = None,
    value: Annotated[str, typer.Option("--value", "-v", help="Target value: 0, 1 or both.")] = "both",
    method: Annotated[str, typer.Option("--method", "-m", help="swap, optimize or interfacegan (a linear direction per concept).")] = "optimize",
    eps: Annotated[Optional[float], typer.Option("--eps", help="optimize: L-inf radius of the latent perturbation (default: the bottleneck's recommendation, else 0.1; 1.0 on a DDPM).")] = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="optimize: signed-gradient steps.")] = 50,
    alpha: Annotated[float, typer.Option("--alpha", help="Blend of the edited latent with the original (1: edit only).")] = 1.0,
    optimize_on: Annotated[str, typer.Option("--optimize-on", help="optimize with a CB-AE: decoder or latent.")] = "decoder",
    stop_at: Annotated[Optional[float], typer.Option("--stop-at", help="optimize: stop a sample once its targets reach this probability (1: never; default: the bottleneck's recommendation, else 0.99).")] = None,
    fit_classifiers: Annotated[Optional[str], typer.Option("--fit-classifiers", help="interfacegan: labels for fitting the boundaries (default: the bottleneck's pseudo-labeler set).")] = None,
    fit_samples: Annotated[int, typer.Option("--fit-samples", min=2, help="interfacegan: labelled latents per fit.")] = 2000,
    margin: Annotated[float, typer.Option("--margin", help="interfacegan: distance beyond the boundary, in projection stds.")] = 1.0,
    strength: Annotated[Optional[float], typer.Option("--strength", help="interfacegan: a fixed move in projection stds instead.")] = None,
    samples: SamplesOpt = 200, batch_size: BatchOpt = 50, seed: SeedOpt = 0, trunc: TruncOpt = 1.0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for grids of successful and failed edits per row.")] = None,
    device: DeviceOpt = "auto", force: ForceOpt = False, scheduler: SchedulerOpt = "ddim", steps: DdpmStepsOpt = None,
    eta: EtaOpt = 0.0, intervene_below: IntervenBelowOpt = None, json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Steerability, negative rate and side effects per (concept, value), by the original's protocol."""
    apply_common(quiet, debug)
    from engine.bottleneck.interventions import EditSettings
    from engine.evaluate.steerability import SteerabilityConfig, evaluate_steerability

    values = {"0": (0,), "1": (1,), "both": (0, 1)}.get(value.strip().lower())
    if values is None:
        raise typer.BadParameter(f"must be 0, 1 or both (got {value!r})", param_hint="--value")
    names = tuple(concept or ("all",))
    if any(n.lower() == "all" for n in names):
        names = ("all",)
    cfg = SteerabilityConfig(
        gen=gen, cbae=cbae, cc=cc, config=str(config) if config else None, classifiers=classifiers, concepts=names, values=values,
        method=method, settings=EditSettings(eps=eps, iters=iters, alpha=alpha, on=optimize_on, stop_at=stop_at),
        fit_classifiers=fit_classifiers, fit_samples=fit_samples, margin=margin, strength=strength, samples=samples,
        batch_size=batch_size, seed=seed, truncation_psi=trunc, out_dir=str(out) if out else None, device=device, force=force,
        sampling=sampling(scheduler, steps, eta, intervene_below),
    )
    with progress_bar(f"steerability ({method})", 1) as update:
        doc = evaluate_steerability(cfg, progress=update, log=info)
    if json_out:
        print_json(doc)
    else:
        _table(doc)


@evaluate_app.command("accuracy")
@command
def accuracy(
    gen: GenOpt = "toyfaces", cbae: CbaeOpt = None, cc: CcOpt = None, config: ConfigOpt = None, classifiers: ClassifiersOpt = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Generated samples.")] = 1000,
    batch_size: BatchOpt = 100, seed: SeedOpt = 0, trunc: TruncOpt = 1.0, device: DeviceOpt = "auto", force: ForceOpt = False,
    scheduler: SchedulerOpt = "ddim", steps: DdpmStepsOpt = None, eta: EtaOpt = 0.0, intervene_below: IntervenBelowOpt = None,
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Agreement of the bottleneck's concept predictions with the evaluator (and ground truth on toyfaces)."""
    apply_common(quiet, debug)
    from engine.evaluate.accuracy import AccuracyConfig, evaluate_accuracy

    cfg = AccuracyConfig(gen=gen, cbae=cbae, cc=cc, config=str(config) if config else None, classifiers=classifiers, samples=samples,
                         batch_size=batch_size, seed=seed, truncation_psi=trunc, device=device, force=force,
                         sampling=sampling(scheduler, steps, eta, intervene_below))
    with progress_bar("accuracy", samples) as update:
        doc = evaluate_accuracy(cfg, progress=update)
    if json_out:
        print_json(doc)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"concept accuracy of the {doc['kind']} on {doc['generator']} ({doc['samples']} samples)")
    cols = [("agreement_with_evaluator", f"vs {doc['evaluator']}"), ("agreement_with_ground_truth", "vs ground truth"),
            ("evaluator_vs_ground_truth", f"{doc['evaluator']} vs ground truth")]
    cols = [(k, title) for k, title in cols if any(k in r for r in doc["rows"])]
    t.add_column("concept")
    for _, title in cols:
        t.add_column(title, justify="right")
    for r in doc["rows"]:
        t.add_row(r["concept"], *[_fmt(r.get(k)) for k, _ in cols])
    Console(highlight=False).print(t)


@evaluate_app.command("fid")
@command
def fid(
    gen: GenOpt = "toyfaces", cbae: CbaeOpt = None, config: ConfigOpt = None,
    real: Annotated[Optional[Path], typer.Option("--real", help="Folder of real images.")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Real images from a dataset instead: toyfaces, celebahq, celeba64, cub, cub64.")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="The dataset's folder.")] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split for the real images.")] = "train",
    real_limit: Annotated[Optional[int], typer.Option("--real-limit", min=2, help="Use at most this many real images.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="base (G(w)), recon (through the CB-AE) or edit (a concept intervention).")] = "base",
    concept: Annotated[Optional[str], typer.Option("--concept", "-c", help="--kind edit: the concept.")] = None,
    value: Annotated[Optional[int], typer.Option("--value", "-v", help="--kind edit: the target value.")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="--kind edit: swap or optimize.")] = "swap",
    eps: Annotated[Optional[float], typer.Option("--eps", help="optimize: L-inf radius (default: the bottleneck's recommendation, else 0.1).")] = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="optimize: steps.")] = 50,
    alpha: Annotated[float, typer.Option("--alpha", help="Blend of the edited latent with the original.")] = 1.0,
    samples: Annotated[int, typer.Option("--samples", "-n", min=2, help="Generated images.")] = 10000,
    batch_size: BatchOpt = 32, seed: SeedOpt = 0, trunc: TruncOpt = 1.0, device: DeviceOpt = "auto",
    scheduler: SchedulerOpt = "ddim", steps: DdpmStepsOpt = None, eta: EtaOpt = 0.0, intervene_below: IntervenBelowOpt = None,
    json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """FID of generated (base, reconstructed or edited) images against real ones, from streamed Inception features."""
    apply_common(quiet, debug)
    from engine.evaluate.fid import FidConfig, evaluate_fid

    cfg = FidConfig(gen=gen, cbae=cbae, config=str(config) if config else None, kind=kind, concept=concept, value=value, method=method,
                    eps=eps, iters=iters, alpha=alpha, real=str(real) if real else None, dataset=dataset,
                    data_root=str(data_root) if data_root else None, split=split, samples=samples, real_limit=real_limit,
                    batch_size=batch_size, seed=seed, truncation_psi=trunc, device=device,
                    sampling=sampling(scheduler, steps, eta, intervene_below))
    with progress_bar(f"fid ({kind})", samples) as update:
        doc = evaluate_fid(cfg, progress=update)
    if json_out:
        print_json(doc)
    else:
        typer.echo(f"{doc['fid']:.4f}")
