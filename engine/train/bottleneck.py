"""Train a CB-AE or CC on a frozen generator's latent from generated images and pseudo-labels.

Kulkarni et al., "Interpretable Generative Models through Post-hoc Concept Bottlenecks", CVPR 2025.
One step, with z ~ N(0, I), w = g1(z), x = g2(w) and pseudo-labels (p, y) = M(x):

  CB-AE, optimiser 1:  MSE(D(E(w)), w) + MSE(g2(D(E(w))), x) + sum_k CE(E(w)_k, y_k)
  CB-AE, optimiser 2:  a random concept k and value v; c' = E(w) with k's logits swapped so that v
                       wins; w' = D(c'); y' = y with y'_k = v;
                       sum_j CE(M(g2(w'))_j, y'_j) + sum_j CE(E(w')_j, y'_j)
  CC:                  sum_k CE(E(w)_k, y_k)

Pseudo-labels whose top-1 probability is below the threshold are ignored in the first concept
loss; when a concept has none left in a batch its term is skipped (no NaN). Both optimisers are
Adam (lr 2e-4, betas (0.5, 0.99) by default, as the original). g1, g2 and M stay frozen; gradients
flow through g2 and M into the bottleneck.

Files for `--out RUN.safetensors`: the checkpoint itself (also written every `checkpoint_every`
steps, atomically), `RUN.train-state.pt` (optimisers, step and RNG states for `--resume`),
`RUN.metrics.jsonl` (one JSON line per logged step) and `RUN-samples/stepNNNNNN.png` (generated
images annotated with the encoder's concept predictions, the original's sanity-check images).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from engine.bottleneck.modules import swap_logits
from engine.errors import Interrupted, UsageError
from engine.pseudolabel.factory import LabelerConfig

KINDS = ("cbae", "cc")


@dataclass(frozen=True)
class TrainBottleneckConfig:
    kind: str = "cbae"  # cbae (encoder + decoder, with the intervention loss) or cc (encoder, concept loss only)
    gen: str = "toyfaces"  # generator: registry name, built-in name or file
    config: str | None = None  # the original project's YAML: concepts, unknown dims, lr, betas, threshold
    labeler: LabelerConfig = field(default_factory=LabelerConfig)  # the pseudo-label source M
    concepts: tuple[str, ...] = ()  # concepts to learn; (): the config's, else every concept of the classifier set
    unknown_dims: int | None = None  # extra unconstrained dims; None: the config's, else CB-AE w_dim // 4 (max 40), CC 0
    hidden: int | None = None  # hidden width; None: w_dim
    depth: int = 3  # hidden blocks
    steps: int = 2000  # optimisation steps in all (a resumed run continues up to this)
    batch_size: int = 32  # generated images per step
    lr: float = 2e-4  # Adam learning rate (both optimisers)
    betas: tuple[float, float] = (0.5, 0.99)  # Adam betas
    threshold: float = 0.9  # ignore pseudo-labels whose top-1 probability is below this
    truncation_psi: float = 1.0  # truncation when sampling w (1: none)
    train_images: str | None = None  # DDPM: a folder of training images (pre-generated with `gencbm generate`)
    real: str | None = None  # DDPM: a folder of real images instead
    dataset: str | None = None  # DDPM: a known dataset's train split instead (celebahq, celeba64, cub, cub64, toyfaces)
    data_root: str | None = None  # DDPM: the --dataset's folder
    max_t: int = 400  # DDPM: t is drawn from [1, max_t) per batch
    mixed_precision: bool = True  # DDPM on CUDA: run the UNet in float16 autocast
    out: str = "gencbm-out/train/run.safetensors"  # the checkpoint; the other run files sit beside it
    resume: bool = False  # continue the run saved at `out`
    overwrite: bool = False  # start over even when `out` exists
    device: str = "auto"  # auto | cpu | cuda[:N]
    seed: int = 0  # initialisation, z sampling and the random interventions
    log_every: int = 10  # steps between metric lines
    checkpoint_every: int = 250  # steps between checkpoints (and at the end)
    sample_every: int = 500  # steps between sanity-check grids (0: never)
    sample_count: int = 16  # images per grid (seeds 0..N-1)
    force: bool = False  # resume / load despite a generator mismatch
    intervention_eps: float | None = None  # recommended --eps for optimize edits with this bottleneck, saved in the checkpoint
    intervention_stop_at: float | None = None  # recommended --stop-at for optimize edits, saved in the checkpoint

    def check(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        for name, value, low in (("--steps", self.steps, 1), ("--batch-size", self.batch_size, 2), ("--depth", self.depth, 0),
                                 ("--log-every", self.log_every, 1), ("--checkpoint-every", self.checkpoint_every, 1),
                                 ("--sample-every", self.sample_every, 0), ("--sample-count", self.sample_count, 1)):
            if value < low:
                raise UsageError(f"{name} must be at least {low} (got {value})")
        if not 0.0 <= self.threshold < 1.0:
            raise UsageError(f"--threshold must be in [0, 1) (got {self.threshold})")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UsageError(f"--lr must be positive (got {self.lr})")
        if self.unknown_dims is not None and self.unknown_dims < 0:
            raise UsageError(f"--unknown-dims must be >= 0 (got {self.unknown_dims})")
        if self.hidden is not None and self.hidden < 1:
            raise UsageError(f"--hidden must be >= 1 (got {self.hidden})")
        if self.intervention_eps is not None and not self.intervention_eps > 0:
            raise UsageError(f"--intervention-eps must be positive (got {self.intervention_eps})")
        if self.intervention_stop_at is not None and not 0.0 < self.intervention_stop_at <= 1.0:
            raise UsageError(f"--intervention-stop-at must be in (0, 1] (got {self.intervention_stop_at})")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        if sum(x is not None for x in (self.train_images, self.real, self.dataset)) > 1:
            raise UsageError("pass only one of --train-images, --real and --dataset")
        self.labeler.check()

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["betas"] = list(self.betas)
        doc["concepts"] = list(self.concepts)
        doc["labeler"]["prompts"] = list(self.labeler.prompts)
        return doc


@dataclass
class TrainResult:
    out: str  # the checkpoint
    kind: str
    steps: int  # steps done in all
    concepts: list[str]
    metrics: dict[str, float]  # the last logged metrics
    pseudo_label_agreement: dict[str, float]  # encoder vs pseudo-labeler on the last logged batches, per concept
    samples: list[str]  # sanity-check grids written
    seconds: float  # this invocation's training time
    resumed_from: int | None  # the step a resumed run started at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_files(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return {
        "checkpoint": out,
        "state": out.with_name(stem + ".train-state.pt"),
        "metrics": out.with_name(stem + ".metrics.jsonl"),
        "samples": out.with_name(stem + "-samples"),
    }


def concept_loss(logits: torch.Tensor, spec, labels: torch.Tensor, probs: torch.Tensor | None,
                 threshold: float) -> tuple[torch.Tensor | None, list[float]]:
    """Sum over concepts of the cross-entropy against pseudo-labels [B, K], skipping labels whose
    probability [B, K] is below `threshold`; a concept with no label left contributes nothing.
    Returns (loss or None when nothing was left, share of labels used per concept)."""
    total = None
    used = []
    for k in range(len(spec.names)):
        keep = probs[:, k] >= threshold if probs is not None else torch.ones_like(labels[:, k], dtype=torch.bool)
        used.append(float(keep.float().mean()))
        if not bool(keep.any()):
            continue
        term = F.cross_entropy(logits[keep][:, spec.group(k)], labels[keep, k])
        total = term if total is None else total + term
    return total, used


class LossRunner(torch.nn.Module):
    """Runs a loss closure on the bottleneck inside forward(), so that DistributedDataParallel can wrap
    it: every forward is followed by exactly one backward, and DDP averages the bottleneck's gradients
    over the ranks. `forward(closure)` returns `closure(bottleneck)`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, closure):
        return closure(self.model)


def optimise(runner, opt, closure, *, distributed: bool = False, backward=None):
    """Run `closure(model) -> (loss or None, aux)` through `runner` (a LossRunner, DDP-wrapped when
    distributed) and take one optimiser step on its loss. A None loss skips the step in one process;
    across ranks every rank must take part, so it becomes a zero loss there. Returns aux."""
    loss, aux = runner(closure)
    if loss is None and distributed:
        loss = sum(p.sum() for p in runner.parameters()) * 0.0
    if loss is not None:
        if backward is not None:
            backward(loss, opt)
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return aux


def train_step(model, lg, labeler, opt, opt_int, zgen: torch.Generator, batch_size: int,
               threshold: float, runner=None, distributed: bool = False) -> tuple[dict[str, float], torch.Tensor]:
    """One optimisation step (two for a CB-AE: reconstruction + concepts, then the intervention).
    Returns (metrics, the encoder's agreement with the pseudo-labels per concept [K])."""
    runner = runner if runner is not None else LossRunner(model)
    spec = model.spec
    z = lg.sample_z(batch_size, zgen)
    with torch.no_grad():
        w = lg.g1(z)  # [B, num_ws, w_dim]
        x = lg.g2(w)  # [B, C, R, R]
        probs, labels = labeler.label(x)  # [B, K] each
    m: dict[str, float] = {}

    def first(mod):
        logits = mod.enc(w)
        l_concept, used = concept_loss(logits, spec, labels, probs, threshold)
        if mod.kind == "cbae":
            w_rec = mod.dec(logits)
            l_lat = F.mse_loss(w_rec, w)
            l_img = F.mse_loss(lg.g2(w_rec), x)
            loss = l_lat + l_img + (l_concept if l_concept is not None else 0.0)
            m.update(latent_mse=float(l_lat.detach()), image_mse=float(l_img.detach()))
        else:
            loss = l_concept
        return loss, (logits.detach(), l_concept, used)

    return concept_and_intervention_steps(runner, opt, opt_int, first, latent=w, render=lg.g2, labels=labels, labeler=labeler,
                                          spec=spec, zgen=zgen, metrics=m, distributed=distributed)


def concept_and_intervention_steps(runner, opt, opt_int, first, *, latent: torch.Tensor, render, labels: torch.Tensor, labeler,
                                   spec, zgen: torch.Generator, metrics: dict[str, float], distributed: bool,
                                   backward=None) -> tuple[dict[str, float], torch.Tensor]:
    """The part of a step every generator family shares: optimiser 1 on `first` (the family's
    reconstruction + concept losses, returning (loss, (logits, concept loss, labels used))), then for
    a CB-AE the intervention step: a random concept k and value v, latent' = D(swap(E(latent), k, v)),
    CE of the pseudo-labeler on render(latent') and of the encoder on latent' against the labels with
    k set to v. Returns (metrics, the encoder's agreement with the pseudo-labels per concept [K])."""
    m = metrics
    logits, l_concept, used = optimise(runner, opt, first, distributed=distributed, backward=backward)
    m["concept_ce"] = float(l_concept.detach()) if l_concept is not None else float("nan")
    m["pseudo_labels_used"] = sum(used) / len(used)
    with torch.no_grad():
        pred = torch.stack([logits[:, spec.group(k)].argmax(dim=1) for k in range(len(spec.names))], dim=1)
        batch_agree = (pred == labels).float().mean(dim=0).cpu()
    if opt_int is not None:
        k = int(torch.randint(len(spec.names), (1,), generator=zgen))
        v = int(torch.randint(spec.sizes[k], (1,), generator=zgen))

        def intervention(mod):
            with torch.no_grad():
                swapped = swap_logits(mod.enc(latent), spec, k, v)
                target = labels.clone()
                target[:, k] = v
            latent_int = mod.dec(swapped)
            pl_logits = labeler.logits(render(latent_int))
            l_pl = sum(F.cross_entropy(pl_logits[j], target[:, j]) for j in range(len(spec.names)))
            re = mod.enc(latent_int)
            l_enc = sum(F.cross_entropy(re[:, spec.group(j)], target[:, j]) for j in range(len(spec.names)))
            m.update(intervention_pl_ce=float(l_pl.detach()), intervention_enc_ce=float(l_enc.detach()))
            return l_pl + l_enc, None

        optimise(runner, opt_int, intervention, distributed=distributed, backward=backward)
    return m, batch_agree


def _resolve_concepts(cfg: TrainBottleneckConfig, original, world) -> list[str] | None:
    """Concept names to ask the labeler for; None: the whole classifier set."""
    if cfg.concepts:
        return list(cfg.concepts)
    if original is not None:
        return list(original.spec.names)
    if world is not None:
        from engine.toyfaces.world import CONCEPTS

        return list(CONCEPTS)
    return None


def _registry_dataset(gen: str) -> str | None:
    from engine.store.registry import load_registry

    art = load_registry().find(str(gen))
    return (art.settings or {}).get("dataset") if art is not None else None


def _default_classifiers(cfg: TrainBottleneckConfig, original, world) -> str | None:
    if cfg.labeler.classifiers:
        return cfg.labeler.classifiers
    if world is not None:
        return "toyfaces-pseudo"
    dataset = (original.dataset if original is not None else None) or _registry_dataset(cfg.gen) or ""
    return {"celebahq": "classifiers-celebahq-rn18", "celeba64": "classifiers-celeba64-rn18",
            "cub": "classifiers-cub-rn50", "cub64": "classifiers-cub64-rn50"}.get(dataset)


def _grid(model, lg, z: torch.Tensor, path: Path) -> Path:
    """Generated images (and for a CB-AE their reconstructions) captioned with E's predictions."""
    from engine.images import annotated_grid, save_png, to_uint8

    was_training = model.training
    model.eval()
    with torch.no_grad():
        w = lg.g1(z)
        img = lg.g2(w)
        logits = model.enc(w)
        probs = model.concept_probs(logits)
        arrays = list(to_uint8(img))
        captions = []
        for i in range(z.shape[0]):
            lines = []
            for k, name in enumerate(model.spec.names):
                v = int(probs[k][i].argmax())
                lines.append(f"{name.replace('_', '')[:10]} {v} {float(probs[k][i, v]):.2f}")
            captions.append(lines)
        if model.kind == "cbae":
            rec = lg.g2(model.dec(logits))
            arrays += list(to_uint8(rec))
            captions += [["reconstruction"] for _ in range(z.shape[0])]
    model.train(was_training)
    cols = min(8, z.shape[0])
    return save_png(annotated_grid(arrays, captions, cols=cols), path)


def train_bottleneck(
    cfg: TrainBottleneckConfig,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,  # (step, steps, last metrics)
    log: Callable[[str], None] | None = None,  # human-readable notes (stderr in the CLI)
) -> TrainResult:
    """Train (or resume) and return where the checkpoint is and how the run ended.

    SIGINT/SIGTERM save a checkpoint and the resume state, then raise Interrupted (exit 130).
    Under torchrun every process trains on its own batches (`batch_size` per process) with per-rank
    seeds; the bottleneck is wrapped in DistributedDataParallel; rank 0 alone writes files; a signal on
    any rank stops every rank at the same step, which saves once."""
    from engine import distributed as D
    from engine.bottleneck.io import build_for, read_original_config, save_bottleneck
    from engine.bottleneck.spec import ConceptSpec
    from engine.device import resolve_device
    from engine.generators.latent import generator_identity_of, open_generator
    from engine.pseudolabel.factory import build_labeler
    from engine.signals import stop_on_signals
    from engine.store.atomic import atomic_path
    from engine.store.checkpoint import GeneratorIdentity, check_generator, load_model_checkpoint

    cfg.check()
    note = log or (lambda msg: None)
    files = run_files(cfg.out)
    if files["checkpoint"].exists() and not (cfg.resume or cfg.overwrite):
        raise UsageError(f"{files['checkpoint']} exists: pass --resume to continue that run or --overwrite to start over")
    if cfg.resume and not files["state"].exists():
        raise UsageError(f"nothing to resume: {files['state']} does not exist")

    original = read_original_config(cfg.config) if cfg.config else None
    if original is not None:
        if original.kind is not None and original.kind != cfg.kind:
            note(f"note: {original.path} is a {original.kind} config; training a {cfg.kind} with its concepts")
        cfg = replace(cfg, threshold=original.pl_prob_thresh if original.pl_prob_thresh is not None else cfg.threshold)

    dist = D.setup(cfg.device)
    main = dist.is_main
    device = resolve_device(D.rank_device(cfg.device, dist))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    lg = open_generator(cfg.gen, device=device, truncation_psi=cfg.truncation_psi)
    identity = generator_identity_of(cfg.gen)
    world = lg.world
    ddpm = lg.family == "ddpm"
    if not ddpm and (cfg.train_images or cfg.real or cfg.dataset):
        raise UsageError("--train-images, --real and --dataset are for a DDPM; a StyleGAN2 trains on its own samples")
    if ddpm and original is not None and original.latent_shape and tuple(original.latent_shape) != tuple(lg.latent_shape):
        raise UsageError(f"{original.path} is for a latent {list(original.latent_shape)}; {cfg.gen} has {list(lg.latent_shape)}")
    if not ddpm and original is not None and original.num_ws is not None and original.num_ws != lg.num_ws:
        raise UsageError(f"{original.path} is for a generator with num_ws {original.num_ws}; {cfg.gen} has {lg.num_ws}")
    labeler_cfg = replace(cfg.labeler, classifiers=_default_classifiers(cfg, original, world))
    if labeler_cfg.source == "tipzs" and not labeler_cfg.tip_dataset and world is not None:
        labeler_cfg = replace(labeler_cfg, tip_dataset="toyfaces")
    labeler = build_labeler(labeler_cfg, _resolve_concepts(cfg, original, world), device).to(device)

    if cfg.unknown_dims is not None:
        unknown = cfg.unknown_dims
    elif original is not None:
        unknown = original.spec.unknown
    elif ddpm:
        unknown = 40 if cfg.kind == "cbae" else 0
    else:
        unknown = min(40, lg.w_dim // 4) if cfg.kind == "cbae" else 0
    values = ()
    if original is not None and original.spec.values:
        values = original.spec.values
    spec = ConceptSpec(names=tuple(labeler.concepts), sizes=tuple(labeler.num_classes), unknown=unknown, values=values,
                       aliases=original.spec.aliases if original is not None and len(original.spec.aliases) == len(labeler.concepts) else ())
    hidden = cfg.hidden or (original.w_dim if ddpm and original is not None else None)  # DDPM configs: latent_noise_dim is the width
    model = build_for(cfg.kind, spec, tuple(lg.latent_shape), hidden=hidden, depth=cfg.depth).to(device).train()
    trainer = images = None
    data_info: dict = {}
    if ddpm:
        from engine.train.ddpm import DDPMTrainer, open_training_images

        trainer = DDPMTrainer(lg, max_t=cfg.max_t, mixed_precision=cfg.mixed_precision)
        images, data_info = open_training_images(cfg.train_images or cfg.real, cfg.dataset, cfg.data_root, lg.resolution, cfg.seed,
                                                 rank=dist.rank, world_size=dist.world_size)
        if cfg.batch_size * dist.world_size > len(images):
            raise UsageError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(images)} images)"
                             if dist.world_size == 1 else
                             f"--batch-size {cfg.batch_size} x {dist.world_size} processes is larger than the training set ({len(images)} images)")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_int = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas)) if cfg.kind == "cbae" else None
    zgen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * dist.rank)  # rank 0 draws what a single process draws
    runner = LossRunner(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None)
    step = 0
    resumed_from = None
    if cfg.resume:
        tensors, meta = load_model_checkpoint(files["checkpoint"], kind=cfg.kind)
        check_generator(meta, identity, path=files["checkpoint"], force=cfg.force)
        saved_spec = ConceptSpec.from_json(meta["concepts"])
        if saved_spec.names != spec.names or saved_spec.total != spec.total:
            raise UsageError(f"{files['checkpoint']} was trained on concepts {', '.join(saved_spec.names)} "
                             f"({saved_spec.total} logits); this run has {', '.join(spec.names)} ({spec.total})")
        model.load_state_dict(tensors)
        state = torch.load(files["state"], map_location="cpu", weights_only=True)
        if int(state["step"]) != int((meta.get("training") or {}).get("step", state["step"])):
            raise UsageError(f"{files['state']} does not belong to {files['checkpoint']} (steps differ); start over with --overwrite")
        opt.load_state_dict(state["opt"])
        if opt_int is not None:
            opt_int.load_state_dict(state["opt_int"])
        ranks = state.get("ranks") or [{k: state[k] for k in ("zgen", "torch_rng", "images", "trainer") if k in state}]
        if len(ranks) != dist.world_size:
            raise UsageError(f"{files['state']} was saved by {len(ranks)} process(es); resume it with --nproc-per-node "
                             f"{len(ranks)} (this run has {dist.world_size})")
        mine = ranks[dist.rank]
        zgen.set_state(mine["zgen"])
        torch.set_rng_state(mine["torch_rng"])
        if images is not None:
            images.load_state(mine["images"])
            trainer.load_state_dict(mine.get("trainer") or {})
        step = resumed_from = int(state["step"])
        note(f"resuming {files['checkpoint']} at step {step} of {cfg.steps}")

    gen_identity = identity if isinstance(identity, GeneratorIdentity) else None
    if ddpm:
        from engine.train.ddpm import ImageStream, ddpm_grid, ddpm_train_step

        fixed = ImageStream(images.source, images.size, 0, flip=False)
        grid_images = torch.stack([fixed._read(i) for i in range(min(cfg.sample_count, len(fixed)))]).float() / 127.5 - 1.0
        make_grid = lambda path: ddpm_grid(model, trainer, grid_images, path)  # noqa: E731
    else:
        sample_z = lg.z_from_seeds(range(cfg.sample_count))
        make_grid = lambda path: _grid(model, lg, sample_z, path)  # noqa: E731
    files["metrics"].parent.mkdir(parents=True, exist_ok=True)
    samples: list[str] = []
    last: dict[str, float] = {}
    agreement = None  # [K] running mean (EMA 0.98) of the encoder's agreement with the pseudo-labels

    def save() -> None:
        """Every rank takes part (its RNG and data positions are gathered); rank 0 writes."""
        mine = {"zgen": zgen.get_state(), "torch_rng": torch.get_rng_state()}
        if images is not None:
            mine["images"] = images.state()
            mine["trainer"] = trainer.state_dict()
        ranks = D.gather_objects(mine, dist)
        if not main:
            return
        training = {**cfg.to_json(), "labeler": {**asdict(labeler_cfg), "prompts": list(labeler_cfg.prompts)},
                    "step": step, "pseudo_labeler": labeler.describe(), "processes": dist.world_size}
        if ddpm:
            training["data"] = data_info
            training["generator"] = {k: v for k, v in lg.describe().items() if k in ("family", "latent_shape")}
        rec = {k: v for k, v in (("eps", cfg.intervention_eps), ("stop_at", cfg.intervention_stop_at)) if v is not None}
        if ddpm:
            rec.setdefault("intervene_below", cfg.max_t)
        extra = {"intervention": rec} if rec else None
        save_bottleneck(files["checkpoint"], model, generator=gen_identity, training=training, extra=extra)
        state = {"step": step, "opt": opt.state_dict(), **ranks[0], "ranks": ranks}
        if opt_int is not None:
            state["opt_int"] = opt_int.state_dict()
        with atomic_path(files["state"]) as tmp:
            torch.save(state, tmp)

    t0 = time.time()
    mode = "a" if cfg.resume else "w"
    metrics_path = files["metrics"] if main else os.devnull  # rank 0 alone logs
    with stop_on_signals() as stop, open(metrics_path, mode) as metrics_file:
        if progress is not None:
            progress(step, cfg.steps, last)
        while step < cfg.steps:
            if ddpm:
                m, batch_agree = ddpm_train_step(model, trainer, labeler, opt, opt_int, images, zgen, cfg.batch_size, cfg.threshold,
                                                 runner=runner, distributed=dist.enabled)
            else:
                m, batch_agree = train_step(model, lg, labeler, opt, opt_int, zgen, cfg.batch_size, cfg.threshold,
                                            runner=runner, distributed=dist.enabled)
            agreement = batch_agree if agreement is None else 0.98 * agreement + 0.02 * batch_agree
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                last = {"step": step, **{k: round(v, 6) for k, v in m.items()}, "seconds": round(time.time() - t0, 2)}
                metrics_file.write(json.dumps(last) + "\n")
                metrics_file.flush()
            if progress is not None:
                progress(step, cfg.steps, {"step": step, **m})
            if main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                samples.append(str(make_grid(files["samples"] / f"step{step:06d}.png")))
            stopping = D.any_rank(bool(stop), dist) if dist.enabled else bool(stop)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                save()
            if stopping:
                D.barrier(dist)
                raise Interrupted(f"interrupted at step {step}: saved {files['checkpoint']}; continue with --resume")
    D.barrier(dist)  # rank 0 has written everything before any rank returns
    agreement = agreement.tolist() if agreement is not None else [float("nan")] * len(spec.names)
    if resumed_from is not None and resumed_from >= cfg.steps:
        note(f"{files['checkpoint']} already has {resumed_from} steps (--steps {cfg.steps}): nothing to do")
    return TrainResult(
        out=str(files["checkpoint"]), kind=cfg.kind, steps=step, concepts=list(spec.names), metrics=last,
        pseudo_label_agreement={n: round(a, 4) for n, a in zip(spec.names, agreement)}, samples=samples,
        seconds=round(time.time() - t0, 2), resumed_from=resumed_from,
    )
