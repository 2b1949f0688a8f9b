"""Built-in toyfaces artifacts shipped inside the package: no download, no network.

- generator `toyfaces`: the toy StyleGAN2 (engine.toyfaces.train_generator);
- generator `toyfaces-ddpm`: a small diffusers UNet folder (engine.toyfaces.train_ddpm);
- bottlenecks `toyfaces-cbae` and `toyfaces-cc`, trained with `gencbm train-cbae` / `train-cc`;
- classifier sets `toyfaces-pseudo` (to supervise bottleneck training) and `oracle` (to evaluate),
  made with `gencbm train-classifier --dataset toyfaces` (see weights/README.json for the commands).
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ArtifactMissingError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
GENERATORS = {"toyfaces": "toyfaces-generator.safetensors"}
CLASSIFIER_SETS = {"toyfaces-pseudo": "toyfaces-pseudo", "oracle": "oracle"}
DDPMS = {"toyfaces-ddpm": "toyfaces-ddpm"}
BOTTLENECKS = {"toyfaces-cbae": "toyfaces-cbae.safetensors", "toyfaces-cc": "toyfaces-cc.safetensors"}


def _check(path: Path, name: str) -> Path:
    if not path.exists():
        raise ArtifactMissingError(f"the built-in {name!r} weights are missing from this installation ({path}); reinstall gencbm")
    return path


def builtin_generator(name: str) -> Path | None:
    """Path of a built-in generator, None when `name` is not one."""
    file = GENERATORS.get(name.strip().lower())
    return _check(WEIGHTS_DIR / file, name) if file else None


def builtin_classifier_set(name: str) -> Path | None:
    """Folder of a built-in classifier set, None when `name` is not one."""
    folder = CLASSIFIER_SETS.get(name.strip().lower())
    return _check(WEIGHTS_DIR / folder, name) if folder else None


def builtin_bottleneck(name: str) -> Path | None:
    """Path of a built-in bottleneck (toyfaces-cbae, toyfaces-cc), None when `name` is not one."""
    file = BOTTLENECKS.get(name.strip().lower())
    return _check(WEIGHTS_DIR / file, name) if file else None


def builtin_ddpm(name: str) -> Path | None:
    """Folder of a built-in diffusers UNet (toyfaces-ddpm), None when `name` is not one."""
    folder = DDPMS.get(str(name).strip().lower())
    return _check(WEIGHTS_DIR / folder, name) if folder else None
