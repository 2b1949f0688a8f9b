"""`gencbm intervene`: steer generated images through a concept bottleneck ("make this face smile")."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from gencbm_cli.common import (DdpmStepsOpt, DebugOpt, EtaOpt, IntervenBelowOpt, JsonOpt, QuietOpt, SchedulerOpt, apply_common, command,
                               info, print_json, progress_bar, sampling)
from gencbm_cli.generate import _seeds


@command
def intervene(
    concept: Annotated[List[str], typer.Option("--concept", "-c", help="Concept to edit (repeatable; pairs with --value in order).")],
    value: Annotated[List[int], typer.Option("--value", "-v", help="Target value of the concept (1: present, 0: absent for binary concepts).")],
    gen: Annotated[Optional[str], typer.Option("--gen", "-g", help="Generator: StyleGAN2 (name or file) or DDPM (diffusers UNet / pipeline folder, ddpm-celebahq-256); default: the built-in toyfaces world and its CB-AE.")] = None,
    cbae: Annotated[Optional[str], typer.Option("--cbae", help="CB-AE checkpoint: ours (.safetensors), the original's (.pt) or a registry name.")] = None,
    cc: Annotated[Optional[str], typer.Option("--cc", help="CC checkpoint: ours, the original's or a registry name.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="The original YAML config of an original checkpoint.")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="swap (CB-AE logit swap) or optimize (signed-gradient steps on the latent).")] = "swap",
    eps: Annotated[Optional[float], typer.Option("--eps", help="optimize: L-inf radius of the latent perturbation (default: the bottleneck's recommendation, else 0.1; 1.0 on a DDPM).")] = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="optimize: signed-gradient steps.")] = 50,
    step: Annotated[Optional[float], typer.Option("--step", help="optimize: step size (default 2.5 * eps / iters).")] = None,
    stop_at: Annotated[Optional[float], typer.Option("--stop-at", help="optimize: stop a sample once every target has this probability (1: never stop early; default: the bottleneck's recommendation, else 0.99).")] = None,
    optimize_on: Annotated[str, typer.Option("--optimize-on", help="optimize with a CB-AE: decoder (edit D(E(w+d))) or latent (edit w+d).")] = "decoder",
    alpha: Annotated[float, typer.Option("--alpha", help="Blend of the edited latent with the original (1: edit only).")] = 1.0,
    seeds: Annotated[str, typer.Option("--seeds", "-s", callback=_seeds, help="Seeds, e.g. 0-7.")] = "0-7",
    trunc: Annotated[float, typer.Option("--trunc", help="Truncation psi (1 = none).")] = 1.0,
    trunc_cutoff: Annotated[Optional[int], typer.Option("--trunc-cutoff", help="Truncate only the first N ws.")] = None,
    noise_mode: Annotated[str, typer.Option("--noise-mode", help="Noise inputs: const, random or none.")] = "const",
    class_idx: Annotated[Optional[int], typer.Option("--class", help="Class label for conditional generators.")] = None,
    classifiers: Annotated[Optional[List[str]], typer.Option("--classifiers", help="Classifier set judging each image too (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default ./gencbm-out).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Seeds per batch.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Use a bottleneck trained for another generator anyway.")] = False,
    scheduler: SchedulerOpt = "ddim",
    steps: DdpmStepsOpt = None,
    eta: EtaOpt = 0.0,
    intervene_below: IntervenBelowOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Edit concepts of generated images; writes orig/recon/edit PNGs, grid.png and results.json."""
    apply_common(quiet, debug)
    from engine.bottleneck.interventions import EditSettings
    from engine.errors import UsageError
    from engine.intervene import DEFAULT_OUT, InterveneConfig
    from engine.intervene import intervene as run
    from engine.seeds import parse_seeds

    if len(concept) != len(value):
        raise UsageError(f"give one --value per --concept ({len(concept)} concept(s), {len(value)} value(s))")
    cfg = InterveneConfig(
        edits=tuple(zip(concept, value)), gen=gen, cbae=cbae, cc=cc, config=str(config) if config else None,
        settings=EditSettings(method=method, eps=eps, iters=iters, step=step, stop_at=stop_at, on=optimize_on, alpha=alpha),
        seeds=tuple(parse_seeds(seeds)), truncation_psi=trunc, truncation_cutoff=trunc_cutoff, noise_mode=noise_mode,
        class_idx=class_idx, classifiers=tuple(classifiers or ()), out_dir=out, batch_size=batch_size, device=device, force=force,
        sampling=sampling(scheduler, steps, eta, intervene_below),
    )
    with progress_bar("intervening", len(cfg.seeds)) as update:
        result = run(cfg, progress=update)
    if json_out:
        print_json(result.to_json())
        return
    typer.echo(result.grid)
    typer.echo(result.results)
    where = out if out is not None else DEFAULT_OUT
    info(f"{len(result.images)} edit(s) written to {where}{'' if out is not None else ' (default folder; choose another with --out)'}")
