"""Writer of official-format NVIDIA network pickles, for tests.

NVIDIA's training loops (stylegan2-ada-pytorch, stylegan3) save
`pickle.dump(dict(G, D, G_ema, augment_pipe, training_set_kwargs))`. Each network is an
instance of a class decorated by `torch_utils.persistence.persistent_class`, whose
`__reduce__` returns `(torch_utils.persistence._reconstruct_persistent_obj, (meta,), None)` with
`meta = dict(type='class', version=6, module_src=<source of the defining module>,
class_name=<class name>, state=<the module's __dict__>)`. The `__dict__` of a torch module holds
`training`, `_parameters`, `_buffers`, `_non_persistent_buffers_set`, the hook OrderedDicts and
`_modules` (from `nn.Module.__init__`), then the plain attributes the class's `__init__` assigned
in order, then `_init_args` / `_init_kwargs` (deep copies of the constructor arguments) added by
the decorator. Tensors are pickled plainly, so every storage goes through
`torch.storage._load_from_bytes`.

This module builds such files from one of gencbm's own `Generator`s without any NVIDIA code:
`NvObject` stands in for a persistent object, and while a file is being written stand-in
modules `torch_utils.persistence` and `dnnlib.util` are installed in `sys.modules` (so that
pickle names the same globals NVIDIA's files name) and removed again afterwards.

Two flavours:
- `fmt="stylegan3"`: stylegan3's `training/networks_stylegan2.py` (protocol 4; Generator kwargs
  with the synthesis kwargs flattened; per-layer `in_channels`/`out_channels`/... attributes;
  `fused_modconv_default` on blocks; `num_fp16_res` on the synthesis network).
- `fmt="ada"`: stylegan2-ada-pytorch's `training/networks.py` (protocol 3; a `synthesis_kwargs`
  dict; fewer stored attributes; `mapping_kwargs`/`synthesis_kwargs`/`training_set_kwargs` as
  `dnnlib.util.EasyDict`).
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from engine.generators import stylegan2 as sg2
from engine.generators.stylegan2 import Generator

PERSISTENCE_MODULE = "torch_utils.persistence"
PERSISTENCE_VERSION = 6  # torch_utils.persistence._version in both code bases
MODULE_SRC = "# module source omitted: written by gencbm's test helper\n"
FORMATS = ("stylegan3", "ada")
PROTOCOLS = {"stylegan3": 4, "ada": 3}

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_STYLEGAN2 = (REPO_ROOT / ".." / "shared" / "fixtures" / "stylegan2").resolve()

_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_NETWORK_KEYS = ("channel_base", "channel_max", "num_fp16_res")  # consumed by SynthesisNetwork
_BLOCK_KEYS = ("architecture", "resample_filter", "conv_clamp", "use_fp16", "fp16_channels_last", "fused_modconv_default")
_DEFAULT_FILTER = [1, 3, 3, 1]  # NVIDIA's default resample_filter (a list)


# --------------------------------------------------------------------------------------------
# Stand-ins for the NVIDIA globals a network pickle names.


def _reconstruct_persistent_obj(meta: Any) -> Any:  # only its qualified name ends up in files
    raise RuntimeError("the test helper never unpickles NVIDIA persistent objects itself")


_reconstruct_persistent_obj.__module__ = PERSISTENCE_MODULE


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict with attribute access, pickled as that class."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"

_MISSING = object()


@contextlib.contextmanager
def nvidia_modules() -> Iterator[None]:
    """Install stand-in `torch_utils.persistence` and `dnnlib.util` modules while writing."""
    tu = types.ModuleType("torch_utils")
    persistence = types.ModuleType(PERSISTENCE_MODULE)
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    persistence._version = PERSISTENCE_VERSION
    tu.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    dnnlib.util = util
    dnnlib.EasyDict = EasyDict
    stand_ins = {"torch_utils": tu, PERSISTENCE_MODULE: persistence, "dnnlib": dnnlib, "dnnlib.util": util}
    saved = {name: sys.modules.get(name, _MISSING) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


class NvObject:
    """One persistent object as NVIDIA's persistence module pickles it (data only)."""

    def __init__(self, class_name: str, state: dict, version: int = PERSISTENCE_VERSION, module_src: str = MODULE_SRC):
        self.class_name = class_name
        self.state = state
        self.version = version
        self.module_src = module_src

    def __reduce__(self):
        meta = dict(type="class", version=self.version, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return (_reconstruct_persistent_obj, (meta,), None)

    # Navigation, for tests that damage a record before writing it.
    @property
    def modules(self) -> dict:
        return self.state["_modules"]

    def sub(self, dotted: str) -> "NvObject":
        obj = self
        for part in dotted.split("."):
            obj = obj.modules[part]
        return obj

    def __repr__(self) -> str:
        return f"NvObject({self.class_name}, {len(self.state)} state entries)"


def _module_state(module: torch.nn.Module | None = None, params: dict | None = None, buffers: dict | None = None,
                  modules: dict | None = None) -> dict:
    """The `nn.Module.__init__` part of a module __dict__ (this torch's layout), in eval mode."""
    state = {}
    for key, value in torch.nn.Module().__dict__.items():
        state[key] = type(value)() if isinstance(value, (dict, set)) else value
    state["training"] = False
    if module is not None:
        params = {n: (None if p is None else torch.nn.Parameter(p.detach().clone(), requires_grad=False)) for n, p in module._parameters.items()}
        buffers = {n: (None if b is None else b.detach().clone()) for n, b in module._buffers.items()}
    state["_parameters"] = dict(params or {})
    state["_buffers"] = dict(buffers or {})
    state["_modules"] = dict(modules or {})
    return state


def _record(class_name: str, state: dict, attrs: list[tuple[str, Any]], args: tuple, kwargs: dict) -> NvObject:
    for key, value in attrs:
        state[key] = value
    state["_init_args"] = tuple(args)
    state["_init_kwargs"] = dict(kwargs)
    return NvObject(class_name, state)


def _gain(value: float) -> Any:
    """NVIDIA's activation def_gain: the int 1, or np.sqrt(2) (a numpy float64)."""
    return 1 if value == 1 else np.float64(value)


# --------------------------------------------------------------------------------------------
# Generator records, built top-down with the arguments NVIDIA's constructors pass on.


class _Writer:
    def __init__(self, fmt: str):
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS} (got {fmt!r})")
        self.fmt = fmt
        self.sg3 = fmt == "stylegan3"

    def fc(self, m: sg2.FullyConnectedLayer, args: tuple, kwargs: dict) -> NvObject:
        lr = kwargs.get("lr_multiplier", 1)
        if abs(float(lr) - float(m.bias_gain)) > 0:
            raise ValueError(f"lr_multiplier {lr} disagrees with the module's bias_gain {m.bias_gain}")
        attrs = [("in_features", m.in_features), ("out_features", m.out_features)] if self.sg3 else []
        attrs += [("activation", m.activation), ("weight_gain", lr / np.sqrt(m.in_features)), ("bias_gain", lr)]
        if m.bias is None:
            attrs.append(("bias", None))
        return _record("FullyConnectedLayer", _module_state(m), attrs, args, kwargs)

    def conv2d(self, m: sg2.Conv2dLayer, args: tuple, kwargs: dict) -> NvObject:
        k = m.weight.shape[-1]
        attrs = [("in_channels", m.in_channels), ("out_channels", m.out_channels)] if self.sg3 else []
        attrs += [("activation", m.activation), ("up", m.up), ("down", m.down), ("conv_clamp", m.conv_clamp), ("padding", m.padding),
                  ("weight_gain", 1 / np.sqrt(m.in_channels * (k**2))), ("act_gain", _gain(m.act_gain))]
        if m.bias is None:
            attrs.append(("bias", None))
        return _record("Conv2dLayer", _module_state(m), attrs, args, kwargs)

    def layer(self, m: sg2.SynthesisLayer, args: tuple, kwargs: dict) -> NvObject:
        state = _module_state(m)
        state["_modules"] = {"affine": self.fc(m.affine, (m.w_dim, m.in_channels), {"bias_init": 1})}
        attrs = [("in_channels", m.in_channels), ("out_channels", m.out_channels), ("w_dim", m.w_dim)] if self.sg3 else []
        attrs += [("resolution", m.resolution), ("up", m.up), ("use_noise", m.use_noise), ("activation", m.activation),
                  ("conv_clamp", m.conv_clamp), ("padding", m.padding), ("act_gain", _gain(m.act_gain))]
        return _record("SynthesisLayer", state, attrs, args, kwargs)

    def torgb(self, m: sg2.ToRGBLayer, args: tuple, kwargs: dict) -> NvObject:
        state = _module_state(m)
        state["_modules"] = {"affine": self.fc(m.affine, (m.w_dim, m.in_channels), {"bias_init": 1})}
        k = m.weight.shape[-1]
        attrs = [("in_channels", m.in_channels), ("out_channels", m.out_channels), ("w_dim", m.w_dim)] if self.sg3 else []
        attrs += [("conv_clamp", m.conv_clamp), ("weight_gain", 1 / np.sqrt(m.in_channels * (k**2)))]
        return _record("ToRGBLayer", state, attrs, args, kwargs)

    def block(self, m: sg2.SynthesisBlock, out_channels: int, block_kwargs: dict) -> NvObject:
        layer_kwargs = {k: v for k, v in block_kwargs.items() if k not in _BLOCK_KEYS}
        rf = block_kwargs.get("resample_filter", _DEFAULT_FILTER)
        conv_clamp = m.conv1.conv_clamp  # the value the block received (given or its default)
        mods = {}
        if m.in_channels != 0:
            mods["conv0"] = self.layer(m.conv0, (m.in_channels, out_channels), dict(
                w_dim=m.w_dim, resolution=m.resolution, up=2, resample_filter=rf, conv_clamp=conv_clamp,
                channels_last=m.channels_last, **layer_kwargs))
        mods["conv1"] = self.layer(m.conv1, (out_channels, out_channels), dict(
            w_dim=m.w_dim, resolution=m.resolution, conv_clamp=conv_clamp, channels_last=m.channels_last, **layer_kwargs))
        if hasattr(m, "torgb"):
            mods["torgb"] = self.torgb(m.torgb, (out_channels, m.img_channels), dict(
                w_dim=m.w_dim, conv_clamp=conv_clamp, channels_last=m.channels_last))
        if hasattr(m, "skip"):
            mods["skip"] = self.conv2d(m.skip, (m.in_channels, out_channels), dict(
                kernel_size=1, bias=False, up=2, resample_filter=rf, channels_last=m.channels_last))
        if list(mods) != [n for n in m._modules]:
            raise AssertionError(f"unexpected submodules of block {m.resolution}: {list(m._modules)}")
        state = _module_state(m)
        state["_modules"] = mods
        attrs = [("in_channels", m.in_channels), ("w_dim", m.w_dim), ("resolution", m.resolution), ("img_channels", m.img_channels),
                 ("is_last", m.is_last), ("architecture", m.architecture), ("use_fp16", m.use_fp16), ("channels_last", m.channels_last)]
        if self.sg3:
            attrs.append(("fused_modconv_default", m.fused_modconv_default))
        attrs += [("num_conv", m.num_conv), ("num_torgb", m.num_torgb)]
        kwargs = dict(w_dim=m.w_dim, resolution=m.resolution, img_channels=m.img_channels, is_last=m.is_last, use_fp16=m.use_fp16, **block_kwargs)
        return _record("SynthesisBlock", state, attrs, (m.in_channels, out_channels), kwargs)

    def synthesis(self, m: sg2.SynthesisNetwork, synthesis_kwargs: dict) -> NvObject:
        block_kwargs = {k: v for k, v in synthesis_kwargs.items() if k not in _NETWORK_KEYS}
        mods = {}
        for res in m.block_resolutions:
            b = getattr(m, f"b{res}")
            mods[f"b{res}"] = self.block(b, b.conv1.out_channels, block_kwargs)
        state = _module_state(m)
        state["_modules"] = mods
        attrs = [("w_dim", m.w_dim), ("img_resolution", m.img_resolution), ("img_resolution_log2", m.img_resolution_log2),
                 ("img_channels", m.img_channels)]
        if self.sg3:
            attrs.append(("num_fp16_res", m.num_fp16_res))
        attrs += [("block_resolutions", list(m.block_resolutions)), ("num_ws", m.num_ws)]
        kwargs = dict(w_dim=m.w_dim, img_resolution=m.img_resolution, img_channels=m.img_channels, **synthesis_kwargs)
        return _record("SynthesisNetwork", state, attrs, (), kwargs)

    def mapping(self, m: sg2.MappingNetwork, mapping_kwargs: dict) -> NvObject:
        lr = mapping_kwargs.get("lr_multiplier", 0.01)
        activation = mapping_kwargs.get("activation", "lrelu")
        mods = {}
        if m.c_dim > 0:
            mods["embed"] = self.fc(m.embed, (m.c_dim, m.embed.out_features), {})
        for idx in range(m.num_layers):
            fc = getattr(m, f"fc{idx}")
            mods[f"fc{idx}"] = self.fc(fc, (fc.in_features, fc.out_features), dict(activation=activation, lr_multiplier=lr))
        state = _module_state(m)
        state["_modules"] = mods
        attrs = [("z_dim", m.z_dim), ("c_dim", m.c_dim), ("w_dim", m.w_dim), ("num_ws", m.num_ws), ("num_layers", m.num_layers),
                 ("w_avg_beta", m.w_avg_beta)]
        kwargs = dict(z_dim=m.z_dim, c_dim=m.c_dim, w_dim=m.w_dim, num_ws=m.num_ws, **mapping_kwargs)
        return _record("MappingNetwork", state, attrs, (), kwargs)


def generator_record(
    G: Generator,  # the module whose weights and options are written
    fmt: str = "stylegan3",  # "stylegan3" | "ada"
    easydict: bool | None = None,  # mapping/synthesis kwargs as dnnlib.util.EasyDict; None: ada yes, stylegan3 no
    drop_kwargs: tuple[str, ...] = (),  # constructor kwargs to leave out (as if the caller relied on NVIDIA's default)
    extra_kwargs: dict | None = None,  # added to the Generator's _init_kwargs (e.g. an unknown option)
) -> NvObject:
    """The persistent Generator record NVIDIA's code would pickle for a generator like `G`."""
    w = _Writer(fmt)
    if easydict is None:
        easydict = fmt == "ada"
    wrap = EasyDict if easydict else dict
    given = dict(G.init_kwargs)
    mapping_kwargs = dict(given.pop("mapping_kwargs", None) or {})
    positional = {name: given.pop(name) for name in _POSITIONAL}
    synthesis_kwargs = given
    if fmt == "ada":
        if "fused_modconv_default" in synthesis_kwargs:
            raise ValueError("stylegan2-ada-pytorch has no fused_modconv_default")
        # Where ada's defaults differ from ours, a generator built like G states the value explicitly
        # (ada's train.py always passes num_fp16_res and conv_clamp anyway).
        synthesis_kwargs.setdefault("num_fp16_res", G.synthesis.num_fp16_res)
        synthesis_kwargs.setdefault("conv_clamp", G.synthesis.b4.conv1.conv_clamp)
        if G.mapping.w_avg_beta != 0.995:
            mapping_kwargs.setdefault("w_avg_beta", G.mapping.w_avg_beta)
    for key in drop_kwargs:
        synthesis_kwargs.pop(key, None)
        mapping_kwargs.pop(key, None)
    state = _module_state(G)
    state["_modules"] = {"synthesis": w.synthesis(G.synthesis, synthesis_kwargs), "mapping": w.mapping(G.mapping, mapping_kwargs)}
    attrs = [(name, getattr(G, name)) for name in _POSITIONAL] + [("num_ws", G.num_ws)]
    if fmt == "ada":
        kwargs = dict(positional, mapping_kwargs=wrap(mapping_kwargs), synthesis_kwargs=wrap(synthesis_kwargs))
    else:
        kwargs = dict(positional, mapping_kwargs=wrap(mapping_kwargs), **synthesis_kwargs)
    kwargs.update(extra_kwargs or {})
    return _record("Generator", state, attrs, (), kwargs)


# --------------------------------------------------------------------------------------------
# Small stand-ins for the other entries of a training snapshot.


def _conv_record(fmt: str, cin: int, cout: int, k: int, activation: str = "lrelu", bias: bool = True, up: int = 1, down: int = 1,
                 conv_clamp: Any = None, gen: torch.Generator | None = None) -> NvObject:
    from engine.ops import setup_filter

    params = {"weight": torch.nn.Parameter(torch.randn([cout, cin, k, k], generator=gen), requires_grad=False)}
    if bias:
        params["bias"] = torch.nn.Parameter(torch.zeros([cout]), requires_grad=False)
    state = _module_state(params=params, buffers={"resample_filter": setup_filter(_DEFAULT_FILTER)})
    attrs = [("in_channels", cin), ("out_channels", cout)] if fmt == "stylegan3" else []
    attrs += [("activation", activation), ("up", up), ("down", down), ("conv_clamp", conv_clamp), ("padding", k // 2),
              ("weight_gain", 1 / np.sqrt(cin * (k**2))), ("act_gain", np.sqrt(2) if activation == "lrelu" else 1)]
    if not bias:
        attrs.append(("bias", None))
    kwargs = dict(kernel_size=k, activation=activation, conv_clamp=conv_clamp, channels_last=False)
    if not bias:
        kwargs["bias"] = False
    if down != 1:
        kwargs["down"] = down
    return _record("Conv2dLayer", state, attrs, (cin, cout), kwargs)


def _fc_record(fmt: str, cin: int, cout: int, activation: str = "linear", gen: torch.Generator | None = None) -> NvObject:
    params = {"weight": torch.nn.Parameter(torch.randn([cout, cin], generator=gen), requires_grad=False),
              "bias": torch.nn.Parameter(torch.zeros([cout]), requires_grad=False)}
    attrs = [("in_features", cin), ("out_features", cout)] if fmt == "stylegan3" else []
    attrs += [("activation", activation), ("weight_gain", 1 / np.sqrt(cin)), ("bias_gain", 1)]
    return _record("FullyConnectedLayer", _module_state(params=params), attrs, (cin, cout), {"activation": activation})


def discriminator_record(img_resolution: int, img_channels: int = 3, c_dim: int = 0, fmt: str = "stylegan3", channels: int = 4,
                         seed: int = 0) -> NvObject:
    """A small Discriminator record (resnet blocks down to 8x8, then the 4x4 epilogue)."""
    from engine.ops import setup_filter

    gen = torch.Generator().manual_seed(seed)
    log2 = int(np.log2(img_resolution))
    resolutions = [2**i for i in range(log2, 2, -1)]
    mods = {}
    for idx, res in enumerate(resolutions):
        cin = 0 if res == img_resolution else channels
        sub = {}
        if cin == 0:
            sub["fromrgb"] = _conv_record(fmt, img_channels, channels, 1, conv_clamp=256, gen=gen)
        sub["conv0"] = _conv_record(fmt, channels, channels, 3, conv_clamp=256, gen=gen)
        sub["conv1"] = _conv_record(fmt, channels, channels, 3, down=2, conv_clamp=256, gen=gen)
        sub["skip"] = _conv_record(fmt, channels, channels, 1, activation="linear", bias=False, down=2, gen=gen)
        state = _module_state(buffers={"resample_filter": setup_filter(_DEFAULT_FILTER)}, modules=sub)
        attrs = [("in_channels", cin), ("resolution", res), ("img_channels", img_channels), ("first_layer_idx", 4 * idx),
                 ("architecture", "resnet"), ("use_fp16", False), ("channels_last", False), ("num_layers", len(sub))]
        mods[f"b{res}"] = _record("DiscriminatorBlock", state, attrs, (cin, channels, channels),
                                  dict(resolution=res, first_layer_idx=4 * idx, use_fp16=False, img_channels=img_channels, architecture="resnet"))
    cmap_dim = channels if c_dim > 0 else 0
    if c_dim > 0:
        mapping_state = _module_state(modules={"embed": _fc_record(fmt, c_dim, cmap_dim, gen=gen), "fc0": _fc_record(fmt, cmap_dim, cmap_dim, "lrelu", gen=gen)})
        mods["mapping"] = _record("MappingNetwork", mapping_state,
                                  [("z_dim", 0), ("c_dim", c_dim), ("w_dim", cmap_dim), ("num_ws", None), ("num_layers", 1), ("w_avg_beta", None)],
                                  (), dict(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, num_layers=1))
    mbstd = _record("MinibatchStdLayer", _module_state(), [("group_size", 4), ("num_channels", 1)], (), dict(group_size=4, num_channels=1))
    epilogue = _module_state(modules={
        "mbstd": mbstd,
        "conv": _conv_record(fmt, channels + 1, channels, 3, conv_clamp=256, gen=gen),
        "fc": _fc_record(fmt, channels * 16, channels, "lrelu", gen=gen),
        "out": _fc_record(fmt, channels, cmap_dim or 1, gen=gen),
    })
    mods["b4"] = _record("DiscriminatorEpilogue", epilogue,
                         [("in_channels", channels), ("cmap_dim", cmap_dim), ("resolution", 4), ("img_channels", img_channels), ("architecture", "resnet")],
                         (channels,), dict(cmap_dim=cmap_dim, resolution=4, img_channels=img_channels, architecture="resnet"))
    attrs = [("c_dim", c_dim), ("img_resolution", img_resolution), ("img_resolution_log2", log2), ("img_channels", img_channels),
             ("block_resolutions", resolutions)]
    return _record("Discriminator", _module_state(modules=mods), attrs, (),
                   dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, channel_base=channels * img_resolution, channel_max=channels))


AUGMENT_ATTRS = (
    "xflip", "rotate90", "xint", "xint_max", "scale", "rotate", "aniso", "xfrac", "scale_std", "rotate_max", "aniso_std", "xfrac_std",
    "brightness", "contrast", "lumaflip", "hue", "saturation", "brightness_std", "contrast_std", "hue_max", "saturation_std",
    "imgfilter", "imgfilter_bands", "imgfilter_std", "noise", "cutout", "noise_std", "cutout_size",
)


def augment_pipe_record(seed: int = 0) -> NvObject:
    """An AugmentPipe record ('bgc' style): probability buffer, filter banks, the knob attributes."""
    gen = torch.Generator().manual_seed(seed)
    buffers = {"p": torch.tensor(0.25), "Hz_geom": torch.randn([12], generator=gen), "Hz_fbank": torch.randn([4, 43], generator=gen)}
    values = {"xflip": 1.0, "rotate90": 1.0, "xint": 1.0, "xint_max": 0.125, "scale_std": 0.2, "rotate_max": 1.0, "aniso_std": 0.2,
              "xfrac_std": 0.125, "brightness_std": 0.2, "contrast_std": 0.5, "hue_max": 1.0, "saturation_std": 1.0,
              "imgfilter_bands": [1, 1, 1, 1], "imgfilter_std": 1.0, "noise_std": 0.1, "cutout_size": 0.5}
    attrs = [(name, values.get(name, 0.0)) for name in AUGMENT_ATTRS]
    return _record("AugmentPipe", _module_state(buffers=buffers), attrs, (), dict(xflip=1, rotate90=1, xint=1))


def training_set_kwargs(fmt: str, resolution: int, use_labels: bool) -> dict:
    kw = dict(class_name="training.dataset.ImageFolderDataset", path="datasets/tiny.zip", use_labels=use_labels, max_size=1000,
              xflip=False, resolution=resolution)
    return EasyDict(kw) if fmt == "ada" else kw


# --------------------------------------------------------------------------------------------
# Whole files.


def snapshot(
    G_ema: Generator | NvObject,  # the generator stored under G_ema (a module or an already built record)
    G: Generator | NvObject | None = None,  # the training generator stored under G; None: a copy of G_ema's record
    fmt: str = "stylegan3",
    augment_pipe: bool = True,  # an AugmentPipe record, or None as when training without ADA
    **record_kwargs: Any,  # passed to generator_record
) -> dict:
    """The dict NVIDIA's training loop pickles: G, D, G_ema, augment_pipe, training_set_kwargs."""
    ema = G_ema if isinstance(G_ema, NvObject) else generator_record(G_ema, fmt, **record_kwargs)
    if G is None:
        train = generator_record(G_ema, fmt, **record_kwargs) if isinstance(G_ema, Generator) else ema
    else:
        train = G if isinstance(G, NvObject) else generator_record(G, fmt, **record_kwargs)
    attrs = ema.state
    return dict(
        G=train,
        D=discriminator_record(attrs["img_resolution"], attrs["img_channels"], attrs["c_dim"], fmt),
        G_ema=ema,
        augment_pipe=augment_pipe_record() if augment_pipe else None,
        training_set_kwargs=training_set_kwargs(fmt, attrs["img_resolution"], attrs["c_dim"] > 0),
    )


def pickle_bytes(obj: Any, fmt: str = "stylegan3", protocol: int | None = None) -> bytes:
    """pickle.dumps with the NVIDIA stand-in modules installed (protocol: 4 for stylegan3, 3 for ada)."""
    with nvidia_modules():
        return pickle.dumps(obj, protocol=PROTOCOLS[fmt] if protocol is None else protocol)


def dump_pickle(obj: Any, path: str | Path, fmt: str = "stylegan3", protocol: int | None = None) -> Path:
    path = Path(path)
    path.write_bytes(pickle_bytes(obj, fmt, protocol))
    return path


def write_network_pickle(path: str | Path, G_ema: Generator | NvObject, G: Generator | NvObject | None = None, fmt: str = "stylegan3",
                         augment_pipe: bool = True, protocol: int | None = None, **record_kwargs: Any) -> Path:
    """Write an official-format training snapshot holding G_ema (and G) to `path`."""
    return dump_pickle(snapshot(G_ema, G, fmt, augment_pipe, **record_kwargs), path, fmt, protocol)


# --------------------------------------------------------------------------------------------
# Tiny random generators and structure summaries.


def tiny_generator(
    seed: int = 0,
    z_dim: int = 16,
    c_dim: int = 0,
    w_dim: int = 16,
    img_resolution: int = 16,
    img_channels: int = 3,
    mapping_kwargs: dict | None = None,
    channel_base: int = 256,
    channel_max: int = 16,
    **synthesis_kwargs: Any,
) -> Generator:
    """A small Generator with every tensor random (biases, noise strengths, w_avg too), in eval mode.

    toRGB weights are scaled down so that images mostly stay inside [-1, 1].
    """
    torch.manual_seed(seed)
    G = Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=dict(mapping_kwargs or {}),
                  channel_base=channel_base, channel_max=channel_max, **synthesis_kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "resample_filter":
                continue
            if leaf == "noise_strength":
                t.copy_(torch.rand([], generator=gen) * 0.5 + 0.1)
            elif leaf == "w_avg":
                t.copy_(torch.randn(t.shape, generator=gen))
            elif leaf == "bias":
                owner = G.get_submodule(name.rsplit(".", 1)[0])
                t.add_(torch.randn(t.shape, generator=gen) * 0.2 / float(getattr(owner, "bias_gain", 1)))
            elif "torgb" in name and leaf == "weight":
                t.mul_(0.15)
    return G.eval().requires_grad_(False)


def effective_structure(G: Generator) -> dict:
    """What determines G's function besides its tensors: per-module options, for comparisons."""
    out: dict[str, Any] = {name: getattr(G, name) for name in (*_POSITIONAL, "num_ws")}
    m = G.mapping
    out["mapping"] = dict(num_layers=m.num_layers, w_avg_beta=m.w_avg_beta, num_ws=m.num_ws, has_w_avg=hasattr(m, "w_avg"),
                          embed=(m.embed.in_features, m.embed.out_features) if m.c_dim else None,
                          layers=[(getattr(m, f"fc{i}").in_features, getattr(m, f"fc{i}").out_features, getattr(m, f"fc{i}").activation,
                                   float(getattr(m, f"fc{i}").bias_gain), float(getattr(m, f"fc{i}").weight_gain)) for i in range(m.num_layers)])
    for b in G.synthesis.blocks():
        layers = {}
        for name, sub in b.named_children():
            entry = {k: getattr(sub, k) for k in ("in_channels", "out_channels", "conv_clamp", "up", "use_noise", "activation", "padding")
                     if hasattr(sub, k)}
            for k in ("act_gain", "weight_gain"):
                if hasattr(sub, k):
                    entry[k] = float(getattr(sub, k))
            layers[name] = entry
        out[f"b{b.resolution}"] = dict(in_channels=b.in_channels, architecture=b.architecture, use_fp16=b.use_fp16,
                                       channels_last=b.channels_last, is_last=b.is_last, num_conv=b.num_conv, num_torgb=b.num_torgb,
                                       layers=layers)
    return out


def attribute_keys(record: Any) -> dict[str, list[tuple[str, ...]]]:
    """{class name: the distinct state-key layouts (in order)} over a record tree (NvObject or the
    loader's PersistentRecord). A class can have two layouts, e.g. Conv2dLayer with bias=False."""
    out: dict[str, list[tuple[str, ...]]] = {}
    for _, r in iter_records(record):
        layouts = out.setdefault(r.class_name, [])
        keys = tuple(r.state)
        if keys not in layouts:
            layouts.append(keys)
    return out


def iter_records(record: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, record) for a record tree, depth first."""
    yield prefix, record
    for name, sub in (record.state.get("_modules") or {}).items():
        if sub is not None:
            yield from iter_records(sub, f"{prefix}.{name}" if prefix else name)


__all__ = [
    "EasyDict", "FORMATS", "NvObject", "PROTOCOLS", "SHARED_STYLEGAN2", "attribute_keys", "augment_pipe_record", "discriminator_record",
    "dump_pickle", "effective_structure", "generator_record", "iter_records", "nvidia_modules", "pickle_bytes", "snapshot",
    "tiny_generator", "training_set_kwargs", "write_network_pickle",
]
