"""`gencbm train-cbae` and `gencbm train-cc`: a concept bottleneck on a frozen generator's latent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from gencbm_cli.common import DebugOpt, JsonOpt, QuietOpt, apply_common, command, info, print_json, progress_bar

GenOpt = Annotated[str, typer.Option("--gen", "-g", help="Generator: registry name (stylegan2-celebahq-256, ddpm-celebahq-256), built-in name (toyfaces), StyleGAN2 file, or diffusers UNet / pipeline folder.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="The original project's YAML config (concepts, unknown dims, threshold).")]
PseudoOpt = Annotated[str, typer.Option("--pseudo-label", "-p", help="Pseudo-label source: supervised, clipzs (CLIP zero-shot) or tipzs (TIP-Adapter).")]
ClassifiersOpt = Annotated[Optional[str], typer.Option("--classifiers", help="supervised: classifier set, name or folder (default: toyfaces-pseudo on toyfaces, the original's ResNets for its configs).")]
ConceptsOpt = Annotated[Optional[List[str]], typer.Option("--concepts", "--concept", "-c", help="Concepts to learn (repeatable or A,B,C; default: the config's or the classifier set's).")]
UnknownOpt = Annotated[Optional[int], typer.Option("--unknown-dims", min=0, help="Unconstrained latent dims beside the concepts (default: the config's; CB-AE min(40, w_dim/4), 40 on a DDPM; CC 0).")]
StepsOpt = Annotated[int, typer.Option("--steps", "-n", min=1, help="Optimisation steps in all (a resumed run continues to this).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=2, help="Images per step (generated; DDPM: training images).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
BetasOpt = Annotated[str, typer.Option("--betas", help="Adam betas, as B1,B2.")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", help="Ignore pseudo-labels whose top-1 probability is below this (a --config sets its own).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Checkpoint to write (.safetensors); run files go beside it. Default gencbm-out/train/GEN-KIND-SOURCE.safetensors.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run saved at --out (weights, optimisers, step, RNG state).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Start over even though --out exists.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of initialisation, sampling and interventions.")]
HiddenOpt = Annotated[Optional[int], typer.Option("--hidden", min=1, help="Hidden width (default: w_dim on StyleGAN2, 512 on a DDPM, as the original).")]
DepthOpt = Annotated[int, typer.Option("--depth", min=0, help="Hidden blocks (Linear, LeakyReLU, BatchNorm).")]
TruncOpt = Annotated[float, typer.Option("--trunc", help="Truncation psi when sampling training latents (1: none).")]
LogEveryOpt = Annotated[int, typer.Option("--log-every", min=1, help="Steps between metric lines in RUN.metrics.jsonl.")]
CkptEveryOpt = Annotated[int, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints.")]
SampleEveryOpt = Annotated[int, typer.Option("--sample-every", min=0, help="Steps between annotated sample grids in RUN-samples/ (0: never).")]
ClipModelOpt = Annotated[str, typer.Option("--clip-model", help="clipzs/tipzs: open_clip architecture.")]
ClipPretrainedOpt = Annotated[str, typer.Option("--clip-pretrained", help="clipzs/tipzs: pretrained tag (weights from the store) or a weights file.")]
PromptOpt = Annotated[Optional[List[str]], typer.Option("--prompt", help="clipzs/tipzs: 'Concept=prompt for 0|prompt for 1' (repeatable; default 'NOT X' / 'X').")]
TipDatasetOpt = Annotated[Optional[str], typer.Option("--tip-dataset", help="tipzs: labelled dataset for the cache (default toyfaces on toyfaces).")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", help="The folder of --dataset (DDPM) or of --tip-dataset (tipzs).")]
TrainImagesOpt = Annotated[Optional[Path], typer.Option("--train-images", help="DDPM: folder of training images, made with `gencbm generate --gen DDPM --seeds 0-31999 --out DIR --skip-existing`.")]
RealOpt = Annotated[Optional[Path], typer.Option("--real", help="DDPM: train on a folder of real images instead.")]
DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="DDPM: train on a dataset's train split instead (celebahq, celeba64, cub, cub64, toyfaces; folder from --data-root).")]
MaxTOpt = Annotated[int, typer.Option("--max-t", min=2, help="DDPM: t is drawn from [1, max_t) per batch (the original: 400).")]
MixedOpt = Annotated[bool, typer.Option("--mixed-precision/--no-mixed-precision", help="DDPM on CUDA: run the UNet in float16 autocast.")]
ShotsOpt = Annotated[int, typer.Option("--tip-shots", min=1, help="tipzs: labelled images per concept.")]
AlphaOpt = Annotated[float, typer.Option("--tip-alpha", help="tipzs: weight of the cache logits.")]
BetaOpt = Annotated[float, typer.Option("--tip-beta", help="tipzs: sharpness of the cache affinities.")]
InterventionEpsOpt = Annotated[Optional[float], typer.Option("--intervention-eps", help="Recommended --eps for optimize edits with this bottleneck (latent units differ between generators), saved in the checkpoint.")]
InterventionStopOpt = Annotated[Optional[float], typer.Option("--intervention-stop-at", help="Recommended --stop-at for optimize edits with this bottleneck (1: never stop early), saved in the checkpoint.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Resume even if the generator differs from the one the run started with.")]


def _betas(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.replace("(", "").replace(")", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2 or not all(0.0 <= b < 1.0 for b in parts):
        raise typer.BadParameter(f"expected two numbers in [0, 1) as B1,B2 (got {text!r})", param_hint="--betas")
    return parts[0], parts[1]


def _split(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return tuple(out)


def _fmt(metrics: dict) -> str:
    keys = (("latent_mse", "lat"), ("image_mse", "img"), ("concept_ce", "ce"), ("intervention_pl_ce", "int"))
    return " ".join(f"{short} {metrics[k]:.3f}" for k, short in keys if k in metrics and not math.isnan(metrics[k]))


def _run(kind: str, **o) -> None:
    from engine.pseudolabel.factory import LabelerConfig
    from engine.train.bottleneck import TrainBottleneckConfig, train_bottleneck

    gen = o["gen"]
    source = o["pseudo_label"]
    out = o["out"]
    if out is None:
        stem = Path(gen).stem if Path(gen).exists() else gen
        out = Path("gencbm-out") / "train" / f"{stem}-{kind}-{source}.safetensors"
    labeler = LabelerConfig(
        source=source, classifiers=o["classifiers"], clip_model=o["clip_model"], clip_pretrained=o["clip_pretrained"],
        prompts=tuple(o["prompt"] or ()), tip_dataset=o["tip_dataset"], tip_data_root=str(o["data_root"]) if o["data_root"] else None,
        tip_shots=o["tip_shots"], tip_alpha=o["tip_alpha"], tip_beta=o["tip_beta"],
    )
    cfg = TrainBottleneckConfig(
        kind=kind, gen=gen, config=str(o["config"]) if o["config"] else None, labeler=labeler, concepts=_split(o["concepts"]),
        unknown_dims=o["unknown_dims"], hidden=o["hidden"], depth=o["depth"], steps=o["steps"], batch_size=o["batch_size"],
        lr=o["lr"], betas=_betas(o["betas"]), threshold=o["threshold"], truncation_psi=o["trunc"], out=str(out),
        resume=o["resume"], overwrite=o["overwrite"], device=o["device"], seed=o["seed"], log_every=o["log_every"],
        checkpoint_every=o["checkpoint_every"], sample_every=o["sample_every"], force=o["force"],
        intervention_eps=o["intervention_eps"], intervention_stop_at=o["intervention_stop_at"],
        train_images=str(o["train_images"]) if o["train_images"] else None, real=str(o["real"]) if o["real"] else None,
        dataset=o["dataset"], data_root=str(o["data_root"]) if o["data_root"] else None, max_t=o["max_t"],
        mixed_precision=o["mixed_precision"],
    )
    with progress_bar(f"train-{kind}", cfg.steps) as update:
        result = train_bottleneck(cfg, progress=lambda step, total, m: update(step, total, _fmt(m)), log=info)
    if o["json_out"]:
        print_json(result.to_json())
    else:
        typer.echo(result.out)


def _make_command(kind: str, doc: str):
    """train-cbae and train-cc take the same options; only the kind differs."""

    def train(
        gen: GenOpt = "toyfaces", config: ConfigOpt = None, pseudo_label: PseudoOpt = "supervised", classifiers: ClassifiersOpt = None,
        concepts: ConceptsOpt = None, unknown_dims: UnknownOpt = None, steps: StepsOpt = 2000, batch_size: BatchOpt = 32,
        lr: LrOpt = 2e-4, betas: BetasOpt = "0.5,0.99", threshold: ThresholdOpt = 0.9, out: OutOpt = None, resume: ResumeOpt = False,
        overwrite: OverwriteOpt = False, device: DeviceOpt = "auto", seed: SeedOpt = 0, hidden: HiddenOpt = None, depth: DepthOpt = 3,
        trunc: TruncOpt = 1.0, log_every: LogEveryOpt = 10, checkpoint_every: CkptEveryOpt = 250, sample_every: SampleEveryOpt = 500,
        clip_model: ClipModelOpt = "ViT-B-16", clip_pretrained: ClipPretrainedOpt = "openai", prompt: PromptOpt = None,
        tip_dataset: TipDatasetOpt = None, data_root: DataRootOpt = None, tip_shots: ShotsOpt = 128, tip_alpha: AlphaOpt = 1.0,
        tip_beta: BetaOpt = 5.5, train_images: TrainImagesOpt = None, real: RealOpt = None, dataset: DatasetOpt = None,
        max_t: MaxTOpt = 400, mixed_precision: MixedOpt = True, intervention_eps: InterventionEpsOpt = None, intervention_stop_at: InterventionStopOpt = None, force: ForceOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False, debug: DebugOpt = False,
    ) -> None:
        apply_common(quiet, debug)
        _run(kind, **{k: v for k, v in locals().items() if k not in ("quiet", "debug", "kind")})

    train.__doc__ = doc
    train.__name__ = train.__qualname__ = f"train_{kind}"
    return command(train)


train_cbae = _make_command("cbae", "Train a CB-AE (concept encoder + decoder) on a frozen generator; prints the checkpoint path.")
train_cc = _make_command("cc", "Train a CC (concept encoder only, concept loss only) on a frozen generator; prints the checkpoint path.")
