"""`gencbm train-classifier`: binary concept classifiers, one per concept (pseudo-labelers and oracles)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from gencbm_cli.common import DebugOpt, JsonOpt, QuietOpt, apply_common, command, info, print_json, progress_bar

DATASETS = ("toyfaces", "celebahq", "celeba64", "cub", "cub64")
DEFAULT_ARCH = {"toyfaces": "small-cnn", "celebahq": "resnet18", "celeba64": "resnet18", "cub": "resnet50", "cub64": "resnet50"}


class _Bars:
    """One rich progress bar per label (rendering a split, each epoch), the previous one closed first."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.context: Any = None
        self.update: Callable[[int, int], None] | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != self.label:
            self.close()
            self.context = progress_bar(label, total)
            self.update = self.context.__enter__()
            self.label = label
        assert self.update is not None
        self.update(done, total)

    def close(self) -> None:
        if self.context is not None:
            context, self.context, self.update, self.label = self.context, None, None, None
            context.__exit__(None, None, None)


def _concept_list(concept: list[str] | None, concepts: str | None) -> tuple[str, ...]:
    if concept and concepts:
        raise typer.BadParameter("give --concept NAME (repeatable) or --concepts all|A,B, not both", param_hint="--concepts")
    if concepts:
        names = [c.strip() for c in concepts.split(",") if c.strip()]
        if not names:
            raise typer.BadParameter("expected `all` or a comma-separated list of concepts", param_hint="--concepts")
        return tuple(names)
    if concept:
        return tuple(concept)
    raise typer.BadParameter("name the concepts: --concept NAME [--concept ...] or --concepts all", param_hint="--concept")


def _dataset(value: str) -> str:
    from engine.concepts import match_concept
    from engine.errors import UsageError

    try:
        return match_concept(value, DATASETS, what="dataset")
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from None


@command
def train_classifier(
    dataset: Annotated[str, typer.Option("--dataset", "-d", callback=_dataset, help="toyfaces, celebahq, celeba64, cub or cub64.")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="The dataset's folder (every dataset but toyfaces).")] = None,
    concept: Annotated[Optional[List[str]], typer.Option("--concept", "-c", help="A concept to train (repeatable), e.g. Smiling.")] = None,
    concepts: Annotated[Optional[str], typer.Option("--concepts", help="`all` (the dataset's concept set) or A,B,C.")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", "-m", help="resnet18, resnet50, vit_l_16 or small-cnn (default: small-cnn for toyfaces, resnet18 for CelebA, resnet50 for CUB).")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="imagenet (torchvision weights from the store) or none (default: imagenet, none for small-cnn).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", "-n", min=1, help="Epochs (the best on the test split is kept).")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")] = 64,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 0.001).")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd (momentum 0.9, the original's), adam, or auto (adam for small-cnn, else sgd).")] = "auto",
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, help="Image-loading worker processes.")] = 0,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use only the first N samples of each split.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (or FILE.safetensors for one concept); default classifiers/DATASET_ARCH.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialisation, shuffling and flips.")] = 0,
    width: Annotated[Optional[int], typer.Option("--width", min=1, help="small-cnn only: channels of the first stage (default 32).")] = None,
    blur_prob: Annotated[float, typer.Option("--blur-prob", min=0.0, max=1.0, help="Share of training images blurred (Gaussian, sigma 0.3-1.2 px), for robustness to soft generated images.")] = 0.0,
    export_original: Annotated[bool, typer.Option("--export-original", help="Also write {dataset}_{Concept}_{arch}_conclsf.pth (the original project's format).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train one binary concept classifier per concept; prints the checkpoint paths (JSON with --json)."""
    apply_common(quiet, debug)
    names = _concept_list(concept, concepts)
    if init is not None and init not in ("imagenet", "none"):
        raise typer.BadParameter(f"must be imagenet or none (got {init!r})", param_hint="--init")
    if optimizer not in ("auto", "sgd", "adam"):
        raise typer.BadParameter(f"must be auto, sgd or adam (got {optimizer!r})", param_hint="--optimizer")
    from engine.errors import UsageError
    from engine.train.classifier import TrainClassifierConfig, train_classifiers

    if dataset != "toyfaces" and data_root is None:
        raise UsageError(f"--dataset {dataset} needs --data-root DIR (the folder holding the dataset's files)")
    config = TrainClassifierConfig(
        dataset=dataset, data_root=str(data_root) if data_root is not None else None, concepts=names,
        arch=arch or DEFAULT_ARCH[dataset], init=init or "auto", epochs=epochs, batch_size=batch_size, lr=lr,
        optimizer=optimizer, workers=workers, limit=limit, device=device, out=str(out) if out is not None else None, width=width,
        seed=seed, export_original=export_original, blur_prob=blur_prob,
    )
    bars = _Bars()

    def log(message: str) -> None:
        bars.close()
        info(message)

    with contextlib.ExitStack() as stack:
        stack.callback(bars.close)
        results = train_classifiers(config, progress=bars, info=log)
    if json_out:
        print_json(results[0] if len(results) == 1 else results)
        return
    for r in results:
        typer.echo(r["path"])
        if r.get("original_path"):
            typer.echo(r["original_path"])
