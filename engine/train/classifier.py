"""Train binary concept classifiers, one per concept, as the original project's train_conclsf.py.

The original fine-tunes an ImageNet torchvision network per concept with cross-entropy over two
logits ("not X", "X"), SGD (lr 0.001, momentum 0.9), batch 512, 5 epochs, random horizontal flips,
ImageNet normalisation, evaluates on the test split after every epoch and keeps the epoch with the
best test accuracy. Here the same, with two additions: `small-cnn` (trained from scratch with Adam,
the default optimiser for it) for the toyfaces world, and a smaller default batch for CPUs.

Every improvement is written at once (atomically), so an interrupted run keeps its best epoch;
on KeyboardInterrupt the best so far is rewritten with `"interrupted": true` and the interrupt
propagates. With the same seed a CPU run is deterministic (initialisation, shuffling and flips
come from seeded generators; flips are drawn in the main process, so --workers does not matter).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from engine.errors import GencbmError, UsageError

ProgressFn = Callable[[str, int, int], None]  # (label, done, total)
InfoFn = Callable[[str], None]  # one-line log messages


@dataclass(frozen=True)
class TrainClassifierConfig:
    dataset: str = "toyfaces"  # toyfaces, celebahq, celeba64, cub or cub64
    data_root: str | None = None  # the dataset's folder; required for every dataset but toyfaces
    concepts: tuple[str, ...] = ("all",)  # concept names (forgiving), or ("all",): the dataset's concept set
    arch: str = "small-cnn"  # resnet18, resnet50, vit_l_16 or small-cnn
    init: str = "auto"  # imagenet (torchvision weights from the store), none (random), auto: imagenet except small-cnn
    epochs: int = 5  # passes over the train split (the original: 5)
    batch_size: int = 64  # images per step (the original: 512)
    lr: float | None = None  # learning rate; None: 0.001 (the original's)
    optimizer: str = "auto"  # sgd (momentum 0.9, the original's), adam, auto: adam for small-cnn, else sgd
    workers: int = 0  # DataLoader worker processes for image files (0: load in the main process)
    limit: int | None = None  # use only the first N samples of each split (None: all)
    device: str = "auto"  # auto, cpu or cuda[:N]
    out: str | None = None  # output folder (or a .safetensors file for one concept); None: classifiers/{dataset}_{arch}
    seed: int = 0  # seed of initialisation, shuffling and flips
    width: int | None = None  # small-cnn only: channels of the first stage; None: 32
    export_original: bool = False  # also write {dataset}_{Concept}_{arch}_conclsf.pth (the original's format)
    blur_prob: float = 0.0  # share of training images blurred (Gaussian, sigma 0.3-1.2 px): robustness to soft, generated images

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["concepts"] = list(self.concepts)
        return doc


DEFAULT_LR = 1e-3


def arch_spec_name(arch: str) -> str:
    from engine.classifiers.networks import arch_spec

    return arch_spec(arch).name


def random_blur(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """x [B, C, H, W] with a share `prob` of the images blurred by a Gaussian of random sigma in
    [0.3, 1.2] px (5-tap separable kernel, reflect padding); the others unchanged."""
    if prob <= 0:
        return x
    b = x.shape[0]
    pick = torch.rand(b, generator=gen) < prob
    sigma = 0.3 + 0.9 * torch.rand(b, generator=gen)
    if not bool(pick.any()):
        return x
    taps = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # [B, 5]
    c = x.shape[1]
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    h = sum(k[:, i].view(b, 1, 1, 1) * xp[:, :, :, i : i + x.shape[3]] for i in range(5))
    v = sum(k[:, i].view(b, 1, 1, 1) * h[:, :, i : i + x.shape[2], :] for i in range(5))
    return torch.where(pick.view(b, 1, 1, 1), v.to(x.dtype), x)


def _check(config: TrainClassifierConfig) -> None:
    if config.width is not None and (config.width < 1 or arch_spec_name(config.arch) != "small-cnn"):
        raise UsageError("--width applies to --arch small-cnn only and must be >= 1")
    if not 0.0 <= config.blur_prob <= 1.0:
        raise UsageError(f"--blur-prob must be in [0, 1] (got {config.blur_prob})")
    if config.epochs < 1:
        raise UsageError(f"--epochs must be at least 1 (got {config.epochs})")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {config.batch_size})")
    if config.lr is not None and not (config.lr > 0 and math.isfinite(config.lr)):
        raise UsageError(f"--lr must be a positive number (got {config.lr})")
    if config.workers < 0:
        raise UsageError(f"--workers must be 0 or more (got {config.workers})")
    if config.limit is not None and config.limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {config.limit})")
    if config.optimizer not in ("auto", "sgd", "adam"):
        raise UsageError(f"--optimizer must be auto, sgd or adam (got {config.optimizer!r})")
    if not config.concepts:
        raise UsageError("name at least one concept (--concept NAME) or --concepts all")


def _resolve_init(init: str, arch: str) -> str:
    if init == "auto":
        return "none" if arch == "small-cnn" else "imagenet"
    if init not in ("imagenet", "none"):
        raise UsageError(f"--init must be imagenet or none (got {init!r})")
    return init


def _make_optimizer(name: str, arch: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "auto":
        name = "adam" if arch == "small-cnn" else "sgd"
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _output_paths(config: TrainClassifierConfig, dataset: str, concepts: list[str], arch: str) -> list[Path]:
    from engine.classifiers.io import our_name
    from engine.classifiers.networks import arch_spec

    if config.out is not None and str(config.out).endswith(".safetensors"):
        if len(concepts) != 1:
            raise UsageError(f"--out {config.out} is one file but {len(concepts)} concepts are trained; give a folder")
        return [Path(config.out).expanduser()]
    folder = Path(config.out).expanduser() if config.out else Path("classifiers") / f"{dataset}_{arch_spec(arch).token}"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} exists and is not a folder")
    return [folder / our_name(dataset, c, arch) for c in concepts]


def _batches(ds, order: torch.Tensor, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images [b, 3, S, S], labels [b, K]) in the given sample order."""
    held = ds.in_memory()
    if held is not None:
        images, labels = held
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield images[idx], labels[idx]
        return
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=order.tolist(), num_workers=workers,
                                         persistent_workers=False)
    yield from loader


def evaluate(clf: nn.Module, ds, column: int, batch_size: int, workers: int, device: torch.device) -> float:
    """Accuracy of argmax(logits) against labels[:, column] over a whole split (under torchrun each
    rank judges every world_size-th sample and the counts are summed)."""
    from engine import distributed as D
    from engine.data import to_unit_range

    if len(ds) == 0:
        raise GencbmError(f"the {ds.info.name} {ds.split} split is empty: nothing to evaluate on")
    clf.eval()
    correct = 0
    mine = torch.tensor(D.shard(range(len(ds))), dtype=torch.long)
    with torch.no_grad():
        for images, labels in _batches(ds, mine, batch_size, workers):
            logits = clf(to_unit_range(images).to(device))
            correct += int((logits.argmax(dim=1).cpu() == labels[:, column]).sum())
    return float(D.all_reduce_sum([correct])[0]) / len(ds)


def train_classifiers(
    config: TrainClassifierConfig,
    progress: ProgressFn | None = None,  # (label, done, total): rendering, then the steps of each epoch
    info: InfoFn | None = None,  # one line per epoch and per saved file
) -> list[dict[str, Any]]:
    """Train one classifier per concept; returns, per concept, its test accuracy and paths."""
    from engine import distributed as D
    from engine.classifiers.networks import arch_spec
    from engine.data import dataset_info, open_dataset
    from engine.device import resolve_device

    _check(config)
    say = info or (lambda message: None)
    data = dataset_info(config.dataset)
    spec = arch_spec(config.arch)
    init = _resolve_init(config.init, spec.name)
    if init == "imagenet" and spec.name == "small-cnn":
        raise UsageError("--init imagenet: small-cnn has no ImageNet weights; use --init none")
    dist = D.setup(config.device)
    device = resolve_device(D.rank_device(config.device, dist))
    size = spec.input_size if (spec.input_size and data.name != "toyfaces") else data.native_size
    input_size = spec.input_size or data.native_size
    wanted = None if [c.lower() for c in config.concepts] == ["all"] else list(config.concepts)
    if wanted is not None and any(c.lower() == "all" for c in wanted):
        raise UsageError("--concepts all cannot be combined with concept names")

    train_ds = open_dataset(data.name, root=config.data_root, split="train", concepts=wanted, limit=config.limit, size=size)
    test_ds = open_dataset(data.name, root=config.data_root, split=data.eval_split, concepts=train_ds.concepts,
                           limit=config.limit, size=size)
    concepts = list(train_ds.concepts)
    paths = _output_paths(config, data.name, concepts, spec.name)
    if init == "imagenet" and spec.weights_artifact:  # fail before any slow work when the weights are missing
        from engine.store.artifacts import resolve_artifact

        resolve_artifact(spec.weights_artifact)
    train_ds.prepare(progress)
    test_ds.prepare(progress)
    if len(train_ds) == 0:
        raise GencbmError(f"the {data.name} train split is empty")
    if len(test_ds) == 0:
        raise GencbmError(f"the {data.name} {data.eval_split} split is empty: nothing to evaluate on")

    results = []
    for column, (concept, path) in enumerate(zip(concepts, paths)):
        results.append(_train_one(config, data, spec, init, device, input_size, train_ds, test_ds, column, concept,
                                  path, progress, say))
    return results


def _train_one(config, data, spec, init, device, input_size, train_ds, test_ds, column, concept, path,
               progress, say) -> dict[str, Any]:
    from engine import distributed as D
    from engine.classifiers.concept import ConceptClassifier
    from engine.classifiers.io import classifier_meta, export_original, original_name, save_classifier
    from engine.classifiers.networks import build_network
    from engine.data import to_unit_range
    from engine.errors import Interrupted
    from engine.signals import stop_on_signals

    dist = D.current()

    started = time.monotonic()
    positives = float(train_ds.labels[:, column].float().mean())
    if positives in (0.0, 1.0):
        say(f"{concept}: every training sample is {'positive' if positives else 'negative'}; the classifier cannot learn it")
    torch.manual_seed(config.seed)
    arch_kwargs = {"width": config.width} if spec.name == "small-cnn" and config.width is not None else None
    net = build_network(spec.name, num_outputs=2, init=init, arch_kwargs=arch_kwargs)
    clf = ConceptClassifier(net, arch=spec.name, input_size=input_size, mean=spec.mean, std=spec.std,
                            resize_mode=spec.resize_mode, concept=concept, class_names=[f"not {concept}", concept]).to(device)
    lr = config.lr if config.lr is not None else DEFAULT_LR
    optimizer = _make_optimizer(config.optimizer, spec.name, clf.parameters(), lr)
    criterion = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(config.seed)  # the same order on every rank; each takes its share
    flip_gen = torch.Generator().manual_seed(config.seed + 1 + 1_000_003 * dist.rank)
    model = clf
    if dist.enabled:  # gradients averaged over the ranks; batch_size is per process
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(clf, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(train_ds)
    per_rank = n // dist.world_size if dist.enabled else n  # equal shares, so every rank takes the same number of steps
    steps = math.ceil(per_rank / config.batch_size)
    export_path = path.with_name(original_name(data.name, concept, spec.name)) if config.export_original else None

    best: dict[str, Any] = {"acc": -1.0, "epoch": 0, "state": None}
    epochs_done = 0

    def meta_for(interrupted: bool) -> dict[str, Any]:
        return classifier_meta(clf, dataset=data.name, test_accuracy=round(best["acc"], 6), epochs=config.epochs, seed=config.seed,
                               extra={"best_epoch": best["epoch"], "epochs_completed": epochs_done, "interrupted": interrupted,
                                      "init": init, "train_samples": n, "test_samples": len(test_ds),
                                      "test_split": test_ds.split, "positive_rate": round(positives, 6),
                                      "training": config.to_json()})

    def write(interrupted: bool) -> None:
        if not dist.is_main:
            return
        current = copy.deepcopy(clf.net.state_dict())
        clf.net.load_state_dict(best["state"])
        try:
            save_classifier(path, clf, meta_for(interrupted))
            if export_path is not None:
                export_original(export_path, clf)
        finally:
            clf.net.load_state_dict(current)

    signals = stop_on_signals()  # SIGINT/SIGTERM set the flag; every rank stops at the same step
    stop = signals.__enter__()
    try:
        for epoch in range(1, config.epochs + 1):
            clf.train()
            order = torch.randperm(n, generator=order_gen)
            if dist.enabled:
                order = order[: per_rank * dist.world_size][dist.rank :: dist.world_size]
            label = f"{concept} epoch {epoch}/{config.epochs}"
            seen, loss_sum, correct, step = 0, 0.0, 0, 0
            for images, labels in _batches(train_ds, order, config.batch_size, config.workers):
                if (D.any_rank(bool(stop), dist) if dist.enabled else bool(stop)):
                    raise KeyboardInterrupt
                step += 1
                if images.shape[0] == 1 and n > 1:  # BatchNorm cannot train on a single sample
                    continue
                x = to_unit_range(images)
                flip = torch.rand(x.shape[0], generator=flip_gen) < 0.5  # random horizontal flips
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                x = random_blur(x, config.blur_prob, flip_gen).to(device)
                y = labels[:, column].to(device)
                logits = model(x)
                loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += x.shape[0]
                loss_sum += float(loss.detach()) * x.shape[0]
                correct += int((logits.detach().argmax(dim=1) == y).sum())
                if progress is not None:
                    progress(label, step, steps)
            acc = evaluate(clf, test_ds, column, max(config.batch_size, 256), config.workers, device)
            epochs_done = epoch
            say(f"{concept}: epoch {epoch}/{config.epochs} loss {loss_sum / max(seen, 1):.4f} "
                f"train acc {100 * correct / max(seen, 1):.2f}% {test_ds.split} acc {100 * acc:.2f}%")
            if acc > best["acc"]:
                best.update(acc=acc, epoch=epoch, state=copy.deepcopy(clf.net.state_dict()))
                write(interrupted=False)
    except KeyboardInterrupt:
        if best["state"] is not None:
            write(interrupted=True)
            say(f"{concept}: interrupted; kept epoch {best['epoch']} ({100 * best['acc']:.2f}% {test_ds.split} accuracy) in {path}")
        else:
            say(f"{concept}: interrupted before the first epoch ended; nothing saved")
        if bool(stop):
            raise Interrupted(f"{concept}: interrupted by a signal") from None
        raise
    finally:
        signals.__exit__(None, None, None)
    if best["epoch"] != epochs_done:  # record how many epochs ran in the kept file
        write(interrupted=False)
    say(f"{concept}: kept epoch {best['epoch']} ({100 * best['acc']:.2f}% {test_ds.split} accuracy): {path}")
    result = {
        "concept": concept,
        "test_accuracy": round(best["acc"], 6),
        "path": str(path),
        "best_epoch": best["epoch"],
        "epochs": config.epochs,
        "dataset": data.name,
        "arch": spec.name,
        "test_split": test_ds.split,
        "train_samples": n,
        "test_samples": len(test_ds),
        "seconds": round(time.monotonic() - started, 2),
    }
    if export_path is not None:
        result["original_path"] = str(export_path)
    return result
