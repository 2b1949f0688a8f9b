"""Concept classifier files: ours (safetensors + metadata) and the original project's `.pth`.

Ours: `save_model_checkpoint` with kind "concept-classifier"; the tensors are the network's state
dict in the original's layout (`fc.*` / `heads.*` heads) and the metadata holds the concept,
class names ["not X", "X"], arch, input size, normalisation, test accuracy, dataset, epochs, seed
and the gencbm version.

The original's: `{dataset}_{Concept}_{token}_conclsf.pth`, a plain torchvision state dict saved
with torch.save (token rn18, rn50 or vit_l_16; Concept with `_` for spaces, e.g.
`celebahq_Wearing_Lipstick_rn18_conclsf.pth`, `cub_Small_size_5_to_9_inches_rn50_conclsf.pth`).
Read with torch.load(weights_only=True): nothing in the file is executed. What the name does not
say (input size, normalisation) comes from the dataset: celebahq / cub 256 px, celeba64 / cub64
64 px, ViT-L/16 512 px, ImageNet mean/std.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from engine.classifiers.concept import ConceptClassifier, classifier_from_meta
from engine.classifiers.networks import TOKEN_TO_ARCH, arch_spec, infer_arch, network_from_state
from engine.concepts import match_concept, normalize_concept_name
from engine.errors import ArtifactMissingError, CorruptFileError, UsageError

KIND = "concept-classifier"
ORIGINAL_SUFFIX = "_conclsf.pth"
DATASET_SIZES = {"celebahq": 256, "celebahq40": 256, "celeba64": 64, "cub": 256, "cub64": 64, "toyfaces": 32}
_NAME_RE = re.compile(r"^(?P<dataset>[A-Za-z0-9]+)_(?P<concept>.+)_(?P<token>rn18|rn50|vit_l_16|smallcnn)_conclsf\.pth$")


# ------------------------------------------------------------------------------------------------
# Names.


def file_token(concept: str) -> str:
    """A concept as it appears in file names: spaces -> `_`, anything but letters, digits, `-` -> `_`."""
    token = "_".join(str(concept).split())
    token = re.sub(r"[^A-Za-z0-9_\-]+", "_", token).strip("_")
    return token or "concept"


def original_name(dataset: str, concept: str, arch: str) -> str:
    """`{dataset}_{Concept}_{token}_conclsf.pth`, as the original project names its classifiers."""
    return f"{dataset}_{file_token(concept)}_{arch_spec(arch).token}{ORIGINAL_SUFFIX}"


def our_name(dataset: str, concept: str, arch: str) -> str:
    """`{dataset}_{Concept}_{token}_conclsf.safetensors`: the original's name with our format's suffix."""
    return original_name(dataset, concept, arch)[: -len(".pth")] + ".safetensors"


def parse_original_name(filename: str) -> tuple[str, str, str] | None:
    """(dataset, concept token, arch) of `{dataset}_{Concept}_{token}_conclsf.pth`; None if it is not one."""
    m = _NAME_RE.match(Path(filename).name)
    if m is None:
        return None
    return m.group("dataset"), m.group("concept"), TOKEN_TO_ARCH[m.group("token")]


def _concept_from_token(dataset: str, token: str) -> str:
    """CUB's ten concepts get back the original's spelling with spaces; other tokens stay as they are."""
    if dataset in ("cub", "cub64"):
        from engine.data.cub import ORIGINAL_ATTRIBUTES

        for _, name in ORIGINAL_ATTRIBUTES:
            if normalize_concept_name(name) == normalize_concept_name(token):
                return name
    return token


# ------------------------------------------------------------------------------------------------
# Writing.


def classifier_meta(clf: ConceptClassifier, *, dataset: str, test_accuracy: float | None, epochs: int | None,
                    seed: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata document of a classifier (also what load_classifier returns)."""
    spec = arch_spec(clf.arch)
    meta: dict[str, Any] = {
        "kind": KIND,
        "concept": clf.concept,
        "class_names": list(clf.class_names),
        "arch": spec.name,
        "arch_token": spec.token,
        "input_size": clf.input_size,
        "normalize": {"mean": [float(v) for v in clf.mean.flatten()], "std": [float(v) for v in clf.std.flatten()]},
        "resize_mode": clf.resize_mode,
        "num_outputs": len(clf.class_names),
        "test_accuracy": test_accuracy,
        "dataset": dataset,
        "epochs": epochs,
        "seed": seed,
    }
    if spec.name == "small-cnn":
        first = clf.net.state_dict()["features.0.weight"]
        convs = sum(1 for m in clf.net.modules() if isinstance(m, torch.nn.Conv2d))
        meta["arch_kwargs"] = {"width": int(first.shape[0]), "stages": convs // 2, "in_channels": int(first.shape[1])}
    if extra:
        meta.update(extra)
    return meta


def _usual_mode(path: Path) -> Path:
    """Give a file written through a temporary file (created 0600) the permissions of a new file."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


def save_classifier(path: str | os.PathLike, clf: ConceptClassifier, meta: dict[str, Any]) -> Path:
    """Write our format atomically (safetensors: the network's state dict + the metadata)."""
    from engine.store.checkpoint import save_model_checkpoint

    extra = {k: v for k, v in meta.items() if k != "kind"}
    path = save_model_checkpoint(path, clf.net.state_dict(), kind=KIND, generator=None, concepts=[clf.concept],
                                 training=meta.get("training"), extra=extra)
    return _usual_mode(Path(path))


def export_original(path: str | os.PathLike, clf: ConceptClassifier) -> Path:
    """Write the network's plain state dict with torch.save, atomically (the original's .pth format)."""
    from engine.store.atomic import atomic_path

    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in clf.net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return _usual_mode(path)


# ------------------------------------------------------------------------------------------------
# Reading.


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _load_ours(path: Path, device: str | torch.device) -> tuple[ConceptClassifier, dict[str, Any]]:
    from engine.store.checkpoint import load_model_checkpoint

    tensors, meta = load_model_checkpoint(path, kind=KIND)
    for key in ("arch", "input_size"):
        if key not in meta:
            raise CorruptFileError(f"{path}: concept-classifier metadata without {key!r}")
    net = network_from_state(str(meta["arch"]), tensors, arch_kwargs=meta.get("arch_kwargs"),
                             num_outputs=int(meta.get("num_outputs", 2)), where=str(path))
    clf = classifier_from_meta(net, meta)
    meta = {**meta, "path": str(path), "format": "gencbm"}
    return clf.to(device).eval(), meta


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptFileError(f"{path}: not a plain torch state dict, refused by torch.load(weights_only=True) ({first})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # a wrapped state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CorruptFileError(f"{path}: expected a state dict of tensors")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_original(path: Path, device: str | torch.device) -> tuple[ConceptClassifier, dict[str, Any]]:
    state = _read_state_dict(path)
    arch, arch_kwargs, num_outputs = infer_arch(state, where=str(path))
    parsed = parse_original_name(path.name)
    if parsed is not None:
        dataset, token, _ = parsed
        concept = _concept_from_token(dataset, token)
    else:
        dataset, concept = None, path.stem.removesuffix("_conclsf")
    spec = arch_spec(arch)
    size = spec.input_size or DATASET_SIZES.get(dataset or "", 256)
    meta: dict[str, Any] = {
        "kind": KIND,
        "format": "original",
        "concept": concept,
        "class_names": [f"not {concept}", concept] if num_outputs == 2 else [f"class {i}" for i in range(num_outputs)],
        "arch": arch,
        "arch_token": spec.token,
        "arch_kwargs": arch_kwargs or None,
        "input_size": size,
        "normalize": {"mean": list(spec.mean), "std": list(spec.std)},
        "resize_mode": spec.resize_mode,
        "num_outputs": num_outputs,
        "test_accuracy": None,
        "dataset": dataset,
        "path": str(path),
    }
    net = network_from_state(arch, state, arch_kwargs=arch_kwargs or None, num_outputs=num_outputs, where=str(path))
    return classifier_from_meta(net, meta).to(device).eval(), meta


def load_classifier_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ConceptClassifier, dict[str, Any]]:
    """(classifier in eval mode, metadata) of one file in either format."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ArtifactMissingError(f"no such classifier file: {path}")
    if _is_safetensors(path):
        return _load_ours(path, device)
    return _load_original(path, device)


def classifier_files(folder: Path) -> list[Path]:
    """Classifier files in a folder (recursive): ours first, then the original's `*_conclsf.pth`."""
    ours = sorted(p for p in folder.rglob("*.safetensors") if p.is_file() and not p.name.startswith("."))
    orig = sorted(p for p in folder.rglob(f"*{ORIGINAL_SUFFIX}") if p.is_file() and not p.name.startswith("."))
    return ours + orig


def _resolve(value: str | os.PathLike) -> Path:
    from engine.store.artifacts import resolve
    from engine.toyfaces.builtin import builtin_classifier_set

    if not Path(value).exists():
        builtin = builtin_classifier_set(str(value))  # oracle, toyfaces-pseudo: shipped in the package
        if builtin is not None:
            return builtin

    return resolve(value, kinds=("classifiers", "classifier"), what="classifier or classifier set")


def load_classifier_set(dir_or_name: str | os.PathLike, device: str | torch.device = "cpu",
                        concepts: list[str] | None = None) -> dict[str, tuple[ConceptClassifier, dict[str, Any]]]:
    """{concept: (classifier, metadata)} of every classifier in a folder, a stored set (registry name,
    e.g. `classifiers-celebahq-rn18`) or a single file. Where a concept has a file in both formats,
    ours (with its metadata) wins. `concepts`: load only these (matched forgivingly)."""
    folder = _resolve(dir_or_name)
    if folder.is_file():
        clf, meta = load_classifier_file(folder, device)
        return {meta["concept"]: (clf, meta)}
    files = classifier_files(folder)
    if not files:
        raise ArtifactMissingError(f"no classifier files (*.safetensors, *{ORIGINAL_SUFFIX}) in {folder}")
    # Which concept each file holds, without loading the weights yet.
    keyed: dict[str, Path] = {}
    for f in files:
        concept = _peek_concept(f)
        keyed.setdefault(concept, f)
    wanted = list(keyed)
    if concepts:
        wanted = [match_concept(c, list(keyed), what=f"concept in {folder}") for c in concepts]
    return {c: load_classifier_file(keyed[c], device) for c in wanted}


def _peek_concept(path: Path) -> str:
    """The concept a file holds, from our metadata header or the original's file name (no weights read)."""
    if _is_safetensors(path):
        import json

        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("gencbm", "{}"))
        except Exception:
            raise CorruptFileError(f"{path}: not a readable safetensors file") from None
        if meta.get("kind") == KIND and meta.get("concept"):
            return str(meta["concept"])
        return path.stem
    parsed = parse_original_name(path.name)
    if parsed is not None:
        return _concept_from_token(parsed[0], parsed[1])
    return path.stem.removesuffix("_conclsf")


def load_classifier(path_or_name: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ConceptClassifier, dict[str, Any]]:
    """(classifier in eval mode, metadata) from a file in either format, a folder or stored set holding
    exactly one classifier, or `SET:CONCEPT` (e.g. `classifiers-celebahq-rn18:Smiling`)."""
    text = str(path_or_name)
    if not Path(text).expanduser().exists() and ":" in text:
        set_name, concept = text.rsplit(":", 1)
        found = load_classifier_set(set_name, device, concepts=[concept])
        return next(iter(found.values()))
    target = _resolve(path_or_name)
    if target.is_file():
        return load_classifier_file(target, device)
    files = classifier_files(target)
    concepts = {_peek_concept(f) for f in files}
    if len(concepts) != 1:
        listed = ", ".join(sorted(concepts)) or "none"
        raise UsageError(f"{target} holds {len(concepts)} classifiers ({listed}); name one as {text}:CONCEPT or load the set")
    return next(iter(load_classifier_set(target, device).values()))
