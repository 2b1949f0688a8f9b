"""The artifact store: where downloaded models, converted generators and kernels live."""

from engine.store.atomic import atomic_path, atomic_write_bytes
from engine.store.paths import artifact_dir, converted_dir, find_artifact, home

__all__ = ["artifact_dir", "atomic_path", "atomic_write_bytes", "converted_dir", "find_artifact", "home"]
