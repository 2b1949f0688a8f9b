"""Safe import of NVIDIA StyleGAN2 network pickles (stylegan2-ada-pytorch and stylegan3 formats).

NVIDIA's training loop pickles `dict(G, D, G_ema, augment_pipe, training_set_kwargs)`, each network a
`torch_utils.persistence` object: `_reconstruct_persistent_obj(meta)` with
`meta = {type: "class", version, module_src, class_name, state}`, where `module_src` is the Python
source of the defining module (NVIDIA's loader executes it) and `state` is the module's `__dict__`
(`_parameters`, `_buffers`, `_modules`, plain attributes, `_init_args`, `_init_kwargs`).

This reader never executes anything from the file: a restricted unpickler resolves only the globals
such files need, persistent objects become inert `PersistentRecord`s, storages are read with
`torch.load(weights_only=True)`, and the engine's own `Generator` is rebuilt from the recorded
constructor arguments and filled with the stored tensors, every one of which must be consumed with
the right shape.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from engine.errors import CorruptFileError
from engine.generators.stylegan2 import Generator

PERSISTENCE_MODULE = "torch_utils.persistence"


@dataclass
class PersistentRecord:
    """What NVIDIA's persistence module stored for one object; holds data only."""

    class_name: str  # e.g. "Generator", "SynthesisBlock"
    version: int  # persistence format version
    state: dict  # the object's __dict__
    module_src_chars: int = 0  # length of the embedded (never executed) module source

    @property
    def parameters(self) -> dict:
        return self.state.get("_parameters") or {}

    @property
    def buffers(self) -> dict:
        return self.state.get("_buffers") or {}

    @property
    def modules(self) -> dict:
        return self.state.get("_modules") or {}

    def child(self, name: str) -> "PersistentRecord":
        sub = self.modules.get(name)
        if not isinstance(sub, PersistentRecord):
            raise CorruptFileError(f"network {self.class_name} has no submodule {name!r}")
        return sub


def _reconstruct_persistent(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise CorruptFileError("malformed persistent object in network pickle (expected a class record with a state dict)")
    src = meta.get("module_src")
    return PersistentRecord(
        class_name=str(meta.get("class_name")),
        version=int(meta.get("version", 0)),
        state=meta["state"],
        module_src_chars=len(src) if isinstance(src, str) else 0,
    )


def _storage_from_bytes(data: bytes) -> Any:
    """Storages inside a plain pickle are nested torch.save archives; read them without code execution."""
    if not isinstance(data, (bytes, bytearray)):
        raise CorruptFileError("malformed tensor storage in network pickle")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # the nested archive is corrupt or not weights-only
        raise CorruptFileError(f"unreadable tensor storage in network pickle: {str(exc).splitlines()[0]}") from None


def _storage_numel(storage: Any) -> int:
    if hasattr(storage, "_size"):  # TypedStorage: elements
        return int(storage._size())
    if hasattr(storage, "nbytes"):
        return int(storage.nbytes())
    return int(storage.size())


def _check_view(storage: Any, offset: int, size: Any, stride: Any) -> None:
    """Refuse a tensor view reaching past its storage (torch would grow it with uninitialised memory)."""
    try:
        size = tuple(int(v) for v in size)
        stride = tuple(int(v) for v in stride)
        offset = int(offset)
    except (TypeError, ValueError):
        raise CorruptFileError("malformed tensor record in network pickle") from None
    if len(size) != len(stride) or offset < 0 or any(v < 0 for v in size) or any(v < 0 for v in stride):
        raise CorruptFileError("malformed tensor record in network pickle")
    if 0 in size:
        return
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= _storage_numel(storage):
        raise CorruptFileError(f"tensor of shape {size} reaches past its stored data ({_storage_numel(storage)} elements)")


def _rebuild_tensor_checked(storage, storage_offset, size, stride, *args, **kwargs):
    import torch._utils as tu

    _check_view(storage, storage_offset, size, stride)
    return tu._rebuild_tensor_v2(storage, storage_offset, size, stride, *args, **kwargs)


def _rebuild_tensor_v1_checked(storage, storage_offset, size, stride):
    import torch._utils as tu

    _check_view(storage, storage_offset, size, stride)
    return tu._rebuild_tensor(storage, storage_offset, size, stride)


class EasyDictRecord(dict):
    """Stand-in for dnnlib's EasyDict (a plain dict subclass) found in training_set_kwargs."""

    def __setstate__(self, state: Any) -> None:  # pickled dict subclasses may carry a __dict__
        if isinstance(state, dict):
            self.update(state)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import torch._utils as tu

    allowed: dict[tuple[str, str], Any] = {
        (PERSISTENCE_MODULE, "_reconstruct_persistent_obj"): _reconstruct_persistent,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,
        ("dnnlib.util", "EasyDict"): EasyDictRecord,
        ("dnnlib", "EasyDict"): EasyDictRecord,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    allowed[("torch._utils", "_rebuild_tensor_v2")] = _rebuild_tensor_checked
    allowed[("torch._utils", "_rebuild_tensor")] = _rebuild_tensor_v1_checked
    for name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(tu, name):
            allowed[("torch._utils", name)] = getattr(tu, name)
    # numpy moved numpy.core to numpy._core in 2.0; pickles name whichever wrote them.
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = ma.scalar
        allowed[(mod, "_reconstruct")] = ma._reconstruct
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals an NVIDIA network pickle needs; anything else is refused."""

    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file)
        self._allowed = _allowed_globals()
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise CorruptFileError(f"{self._source}: refusing to load global {module}.{name} (not allowed in a network pickle)")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise CorruptFileError(f"{self._source}: unexpected persistent id in a network pickle")


def read_network_pickle(path: str | Path) -> dict:
    """Unpickle an NVIDIA network pickle safely; returns the top-level dict with PersistentRecords."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = RestrictedUnpickler(f, str(path)).load()
    except CorruptFileError:
        raise
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptFileError(f"{path}: not a readable network pickle ({type(exc).__name__}: {msg})") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path}: expected a dict of networks at the top level, found {type(data).__name__}")
    return data


# Constructor keywords of NVIDIA's SynthesisNetwork / SynthesisBlock / SynthesisLayer that ours accept.
_SYNTHESIS_KEYS = {
    "channel_base", "channel_max", "num_fp16_res",  # SynthesisNetwork
    "architecture", "resample_filter", "conv_clamp", "fp16_channels_last", "fused_modconv_default",  # SynthesisBlock
    "kernel_size", "use_noise", "activation",  # SynthesisLayer
}
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _plain(value: Any) -> Any:
    """numpy scalars and containers as plain Python values (for JSON configs)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def generator_config(record: PersistentRecord, source: str = "network pickle") -> dict:
    """Our Generator's constructor kwargs for an NVIDIA StyleGAN2 generator record.

    Reads `_init_args`/`_init_kwargs` (stylegan3: synthesis kwargs flattened; stylegan2-ada: a
    `synthesis_kwargs` dict), then checks them against the attributes the blocks stored, which are
    authoritative (e.g. defaults that differ between the two code bases, like num_fp16_res).
    """
    if record.class_name != "Generator":
        raise CorruptFileError(f"{source}: expected a StyleGAN2 Generator, found class {record.class_name!r}")
    state = record.state
    args = list(state.get("_init_args") or ())
    kwargs = dict(state.get("_init_kwargs") or {})
    for name, value in zip(_POSITIONAL, args):
        kwargs.setdefault(name, value)
    for name in _POSITIONAL:
        if name not in kwargs and name in state:
            kwargs[name] = state[name]
    missing = [n for n in _POSITIONAL if n not in kwargs]
    if missing:
        raise CorruptFileError(f"{source}: generator record lacks {', '.join(missing)}")
    synthesis_kwargs = dict(kwargs.pop("synthesis_kwargs", None) or {})
    mapping_kwargs = dict(kwargs.pop("mapping_kwargs", None) or {})
    for key in list(kwargs):
        if key in _SYNTHESIS_KEYS:
            synthesis_kwargs[key] = kwargs.pop(key)
    kwargs.pop("epochs", None)  # bookkeeping in some stylegan2-ada forks
    unknown = set(kwargs) - set(_POSITIONAL)
    unknown |= set(synthesis_kwargs) - _SYNTHESIS_KEYS
    unknown |= set(mapping_kwargs) - _MAPPING_KEYS
    if unknown:
        raise CorruptFileError(f"{source}: generator uses options this StyleGAN2 implementation does not know: {', '.join(sorted(unknown))}")

    # Authoritative per-block facts.
    synthesis = record.child("synthesis")
    res_log2 = int(round(math.log2(int(kwargs["img_resolution"]))))
    blocks = {}
    for i in range(2, res_log2 + 1):
        blocks[2**i] = synthesis.child(f"b{2**i}")
    fp16_res = [res for res, b in blocks.items() if bool(b.state.get("use_fp16", False))]
    if fp16_res:
        lowest = min(fp16_res)
        num_fp16_res = res_log2 + 1 - int(round(math.log2(lowest)))
        if lowest == 8:  # the fp16 threshold never goes below 8: any count reaching it gives the same blocks
            num_fp16_res = max(num_fp16_res, int(synthesis_kwargs.get("num_fp16_res", 0)))
        synthesis_kwargs["num_fp16_res"] = num_fp16_res
    else:
        synthesis_kwargs["num_fp16_res"] = 0
    last = blocks[2**res_log2]
    if "architecture" in last.state:
        synthesis_kwargs["architecture"] = str(last.state["architecture"])
    layer = last.modules.get("conv1")
    if isinstance(layer, PersistentRecord) and "conv_clamp" in layer.state:  # defaults differ between code bases
        clamp = layer.state["conv_clamp"]
        synthesis_kwargs["conv_clamp"] = None if clamp is None else float(clamp)
    if "fused_modconv_default" not in synthesis_kwargs and "fused_modconv_default" in last.state:
        synthesis_kwargs["fused_modconv_default"] = last.state["fused_modconv_default"]

    mapping = record.child("mapping")
    for key in ("num_layers", "w_avg_beta"):
        if key in mapping.state:
            mapping_kwargs[key] = mapping.state[key]
    fc0 = mapping.child("fc0")
    if "bias_gain" in fc0.state:  # bias_gain == lr_multiplier
        mapping_kwargs["lr_multiplier"] = float(fc0.state["bias_gain"])

    config = {name: int(kwargs[name]) for name in _POSITIONAL}
    config["mapping_kwargs"] = _plain(mapping_kwargs)
    config.update(_plain(synthesis_kwargs))
    return config


def record_tensors(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flattened parameters and buffers of a record tree, named as in a state dict."""
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (record.state.get(kind) or {}).items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise CorruptFileError(f"{prefix}{name} is not a tensor in the network pickle")
            out[prefix + name] = value.detach()
    for name, sub in record.modules.items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise CorruptFileError(f"submodule {prefix}{name} is not a persistent network object")
        out.update(record_tensors(sub, prefix + name + "."))
    return out


def fill_generator(G: Generator, tensors: dict[str, torch.Tensor], source: str) -> Generator:
    """Copy stored tensors into G; every tensor of G must be supplied and every stored one used."""
    own = G.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing:
        raise CorruptFileError(f"{source}: missing {len(missing)} tensor(s) for this generator, e.g. {missing[0]}")
    if extra:
        raise CorruptFileError(f"{source}: {len(extra)} stored tensor(s) not used by this generator, e.g. {extra[0]}")
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise CorruptFileError(f"{source}: tensor {name} has shape {tuple(value.shape)}, expected {tuple(own[name].shape)}")
        if not value.is_floating_point():
            raise CorruptFileError(f"{source}: tensor {name} has dtype {value.dtype}, expected floating point")
    G.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return G


# Bounds on stored settings, so a malformed file cannot make us allocate absurd networks.
_LIMITS = {"z_dim": 1 << 14, "c_dim": 1 << 16, "w_dim": 1 << 14, "img_resolution": 1 << 13, "img_channels": 16}


def _check_config(config: dict, source: str) -> None:
    for name, hi in _LIMITS.items():
        v = config.get(name)
        lo = 0 if name in ("z_dim", "c_dim") else 1
        if not isinstance(v, int) or not lo <= v <= hi:
            raise CorruptFileError(f"{source}: implausible {name} = {v!r} in the generator record")
    res = config["img_resolution"]
    if res < 4 or res & (res - 1):
        raise CorruptFileError(f"{source}: img_resolution {res} is not a power of two >= 4")
    for name in ("channel_base", "channel_max"):
        v = config.get(name)
        if v is not None and not (isinstance(v, int) and 1 <= v <= 1 << 20):
            raise CorruptFileError(f"{source}: implausible {name} = {v!r} in the generator record")


def import_network_pickle(path: str | Path, key: str = "G_ema") -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of the generator stored under `key` in an NVIDIA network pickle."""
    data = read_network_pickle(path)
    if key not in data:
        keys = ", ".join(sorted(str(k) for k in data))
        raise CorruptFileError(f"{path}: no {key!r} in the network pickle (keys: {keys})")
    record = data[key]
    if not isinstance(record, PersistentRecord):
        raise CorruptFileError(f"{path}: {key!r} is not a persistent network object")
    try:
        config = generator_config(record, source=str(path))
        _check_config(config, str(path))
        tensors = record_tensors(record)
    except CorruptFileError as exc:
        msg = str(exc)
        raise CorruptFileError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        raise CorruptFileError(f"{path}: malformed generator record ({type(exc).__name__}: {exc})") from None
    return config, tensors


def load_network_pickle(path: str | Path, key: str = "G_ema") -> Generator:
    """Build the engine's Generator from an NVIDIA network pickle, without executing its code."""
    config, tensors = import_network_pickle(path, key)
    try:
        G = Generator(**config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, OverflowError, MemoryError) as exc:
        raise CorruptFileError(f"{path}: cannot build a generator from its stored settings ({type(exc).__name__}: {exc})") from None
    return fill_generator(G, tensors, str(path)).eval().requires_grad_(False)
