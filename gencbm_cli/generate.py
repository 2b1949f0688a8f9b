"""`gencbm generate`: images from seeds."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from gencbm_cli.common import (DdpmStepsOpt, DebugOpt, EtaOpt, JsonOpt, QuietOpt, SchedulerOpt, apply_common, command, info, print_json,
                               progress_bar, sampling)


def _seeds(value: str) -> str:
    from engine.errors import UsageError
    from engine.seeds import parse_seeds

    try:
        parse_seeds(value)
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@command
def generate(
    gen: Annotated[str, typer.Option("--gen", "-g", help="Generator: artifact name (e.g. stylegan2-celebahq-256, ddpm-celebahq-256) or path: .pkl NVIDIA pickle, .safetensors, or a diffusers UNet2DModel folder / pipeline folder with unet/ (a DDPM).")],
    seeds: Annotated[str, typer.Option("--seeds", "-s", callback=_seeds, help="Seeds, e.g. 0-3,7 (z as NVIDIA's gen_images.py).")] = "0-3",
    class_idx: Annotated[Optional[int], typer.Option("--class", help="Class label for conditional generators.")] = None,
    trunc: Annotated[float, typer.Option("--trunc", help="Truncation psi (1 = none).")] = 1.0,
    trunc_cutoff: Annotated[Optional[int], typer.Option("--trunc-cutoff", help="Truncate only the first N ws.")] = None,
    noise_mode: Annotated[str, typer.Option("--noise-mode", help="Noise inputs: const, random or none.")] = "const",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for seedNNNN.png.")] = Path("out"),
    grid: Annotated[bool, typer.Option("--grid", help="Also write grid.png.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    pickle_key: Annotated[str, typer.Option("--pickle-key", help="Network to read from an NVIDIA pickle (G_ema, G).")] = "G_ema",
    classifiers: Annotated[Optional[List[str]], typer.Option("--classifiers", help="Classifier set (name or folder) whose predictions join the manifest and an annotated grid; repeatable.")] = None,
    cbae: Annotated[Optional[str], typer.Option("--cbae", help="CB-AE whose concept probabilities explain each image (manifest and annotated grid).")] = None,
    cc: Annotated[Optional[str], typer.Option("--cc", help="CC whose concept probabilities explain each image.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="The original YAML config of an original --cbae/--cc checkpoint.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Use a bottleneck trained for another generator anyway.")] = False,
    scheduler: SchedulerOpt = "ddim",
    steps: DdpmStepsOpt = None,
    eta: EtaOpt = 0.0,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Keep seeds whose seedNNNN.png is already in --out (resume an interrupted run).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Generate images from seeds; prints their paths (or a JSON manifest with --json)."""
    apply_common(quiet, debug)
    from engine.generate import GenerateConfig
    from engine.generate import generate as run_generate
    from engine.seeds import parse_seeds

    if noise_mode not in ("const", "random", "none"):
        raise typer.BadParameter(f"must be const, random or none (got {noise_mode!r})", param_hint="--noise-mode")
    ddpm = sampling(scheduler, steps, eta, None)  # checks --scheduler
    config = GenerateConfig(
        gen=gen, seeds=tuple(parse_seeds(seeds)), out_dir=out, class_idx=class_idx, truncation_psi=trunc,
        truncation_cutoff=trunc_cutoff, noise_mode=noise_mode, grid=grid, batch_size=batch_size,
        device=device, pickle_key=pickle_key, classifiers=tuple(classifiers or ()),
        cbae=cbae, cc=cc, config=str(config) if config else None, force=force,
        scheduler=ddpm.scheduler, steps=ddpm.steps, eta=ddpm.eta, skip_existing=skip_existing,
    )
    with progress_bar("generating", len(config.seeds)) as update:
        result = run_generate(config, progress=update)
    if json_out:
        print_json(result.to_json())
        return
    skipped = sum(1 for image in result.images if image.get("skipped"))
    for image in result.images:
        typer.echo(image["path"])
    if result.grid:
        typer.echo(result.grid)
    if result.settings.get("annotated_grid"):
        typer.echo(result.settings["annotated_grid"])
    info(f"{len(result.images)} image(s) in {out}" + (f" ({skipped} already there, skipped)" if skipped else ""))
