"""StyleGAN2 generator, written for gencbm from the paper and the documented behaviour of NVIDIA's
networks (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020).

Parameter and buffer names, constructor arguments and numerics follow NVIDIA's released networks
(stylegan2-ada-pytorch / stylegan3 `networks_stylegan2.py`), so that their state dicts load as
they are and the same w gives the same image. Differences that do not change the function:
- On CPU, layers marked fp16 run in fp32 (as NVIDIA's code does off CUDA).
- The modulated convolution modulates activations (scale the input by the styles, one
  shared-weight convolution, scale the output by the demodulation coefficients) instead of a
  per-sample grouped convolution when that is faster (`modconv="auto"`): the same math, batched.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from engine.ops import bias_act, conv2d_resample, setup_filter, upsample2d
from engine.ops.bias_act import ACTIVATIONS

ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("const", "random", "none")
MODCONV_PATHS = ("auto", "fused", "grouped", "activations")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x divided by its root mean square along `dim` (StyleGAN's pixel norm on z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: weights stored at scale 1/lr_multiplier."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        bias: bool = True,  # learn a bias
        activation: str = "linear",  # activation after the bias
        lr_multiplier: float = 1.0,  # learning-rate multiplier (scales the stored parameters)
        bias_init: float = 0.0,  # initial bias value
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in] -> [B, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, activation={self.activation}"


class MappingNetwork(nn.Module):
    """z (and class label c) -> w, broadcast to num_ws copies, with truncation towards w_avg."""

    def __init__(
        self,
        z_dim: int,  # latent z width; 0: no z (class-only)
        c_dim: int,  # conditioning label width; 0: unconditional
        w_dim: int,  # intermediate latent w width
        num_ws: int | None,  # number of w copies to output; None: return [B, w_dim]
        num_layers: int = 8,  # number of fully connected layers
        embed_features: int | None = None,  # label embedding width; None: w_dim (0 when c_dim == 0)
        layer_features: int | None = None,  # hidden width; None: w_dim
        activation: str = "lrelu",  # hidden activation
        lr_multiplier: float = 0.01,  # learning-rate multiplier of the layers
        w_avg_beta: float | None = 0.998,  # decay of the running mean of w; None: no w_avg
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,  # [B, z_dim]
        c: torch.Tensor | None,  # [B, c_dim]
        truncation_psi: float = 1.0,  # 1: no truncation; 0: every w is w_avg
        truncation_cutoff: int | None = None,  # truncate only the first N ws; None: all
        update_emas: bool = False,  # update w_avg from this batch (training only)
    ) -> torch.Tensor:  # [B, num_ws, w_dim]
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [B, {self.z_dim}] (got {None if z is None else tuple(z.shape)})")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must be [B, {self.c_dim}] for this conditional model (got {None if c is None else tuple(c.shape)})")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg, which this mapping network does not track")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


def modulated_conv2d(
    x: torch.Tensor,  # [B, in, H, W]
    weight: torch.Tensor,  # [out, in, kh, kw]
    styles: torch.Tensor,  # [B, in]
    noise: torch.Tensor | None = None,  # added to the output, broadcastable to [B, out, H', W']
    up: int = 1,  # integer upsampling factor
    down: int = 1,  # integer downsampling factor
    padding: int = 0,  # padding, as in conv2d_resample
    resample_filter: torch.Tensor | None = None,  # FIR filter for resampling
    demodulate: bool = True,  # normalise each output channel's effective weight
    flip_weight: bool = True,  # False for upsampling layers (true convolution)
    fused_modconv: bool = True,  # True: per-sample weights (grouped conv); False: modulate activations
    impl: str = "auto",  # implementation of the FIR steps
) -> torch.Tensor:  # [B, out, H', W']
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if styles.shape != (batch, in_ch):
        raise ValueError(f"styles must be [{batch}, {in_ch}] (got {tuple(styles.shape)})")

    # In fp16, pre-normalise to keep the products in range (cancels out after demodulation).
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # [B, out, in, kh, kw]
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [B, out]
            w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    elif demodulate:
        # sum_{i,k} (W[o,i,k] s[b,i])^2 = sum_i s[b,i]^2 sum_k W[o,i,k]^2: no per-sample weights needed.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B, out]

    if not fused_modconv:
        # Modulate activations: one convolution with the shared weight for the whole batch.
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight, impl=impl)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    # Fused: a grouped convolution with one group per sample.
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=batch, flip_weight=flip_weight, impl=impl)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def _choose_fused(mode: str | bool | None, default: bool | str, training: bool, x: torch.Tensor) -> bool:
    """Resolve the modulated-convolution path for one call.

    mode: True/"fused"/"grouped" -> per-sample grouped conv; False/"activations" -> modulate
    activations; None/"auto" -> the block's default, where "inference_only" means fused in eval.
    On CPU the activation path is faster for batches above 1, so "auto" picks it there.
    """
    if mode in (True, "fused", "grouped"):
        return True
    if mode in (False, "activations"):
        return False
    if mode not in (None, "auto"):
        raise ValueError(f"fused_modconv must be one of {', '.join(MODCONV_PATHS)} (got {mode!r})")
    if x.device.type != "cuda":
        return x.shape[0] == 1
    if default == "inference_only":
        return not training
    return bool(default)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling), noise, bias, activation."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        w_dim: int,  # w width
        resolution: int,  # output resolution
        kernel_size: int = 3,  # convolution kernel size
        up: int = 1,  # 2: upsample the input
        use_noise: bool = True,  # add per-pixel noise
        activation: str = "lrelu",  # activation
        resample_filter: Sequence[int] = (1, 3, 3, 1),  # low-pass filter for upsampling
        conv_clamp: float | None = None,  # clamp the output to +-conv_clamp; None: no clamp
        channels_last: bool = False,  # store the weight channels-last (speed only)
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,  # [B, in, R/up, R/up]
        w: torch.Tensor,  # [B, w_dim]
        noise_mode: str = "random",  # "random" | "const" | "none"
        fused_modconv: bool = True,  # see modulated_conv2d
        gain: float = 1,  # extra output gain (resnet blocks pass sqrt(0.5))
        impl: str = "auto",
    ) -> torch.Tensor:  # [B, out, R, R]
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)} (got {noise_mode!r})")
        in_res = self.resolution // self.up
        if x.shape[1:] != (self.in_channels, in_res, in_res):
            raise ValueError(f"SynthesisLayer expects [B, {self.in_channels}, {in_res}, {in_res}] (got {tuple(x.shape)})")
        styles = self.affine(w)  # [B, in]
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv, impl=impl,
        )
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=impl)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # image channels
        w_dim: int,  # w width
        kernel_size: int = 1,  # kernel size
        conv_clamp: float | None = None,  # output clamp; None: none
        channels_last: bool = False,  # weight memory format (speed only)
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True, impl: str = "auto") -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # [B, in]
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, impl=impl)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=impl)


class Conv2dLayer(nn.Module):
    """Plain convolution with equalized learning rate (the resnet skip path of the generator)."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        kernel_size: int,  # kernel size
        bias: bool = True,  # learn a bias
        activation: str = "linear",  # activation
        up: int = 1,  # upsampling factor
        down: int = 1,  # downsampling factor
        resample_filter: Sequence[int] = (1, 3, 3, 1),  # FIR filter for resampling
        conv_clamp: float | None = None,  # output clamp; None: none
        channels_last: bool = False,  # weight memory format (speed only)
        trainable: bool = True,  # False: weight and bias are buffers
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", weight)
            if b is not None:
                self.register_buffer("bias", b)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1, impl: str = "auto") -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down, padding=self.padding, flip_weight=(self.up == 1), impl=impl)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=impl)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [const |] conv0 (up) -> conv1 [-> toRGB]."""

    def __init__(
        self,
        in_channels: int,  # input channels; 0: this is the 4x4 block with a learned constant
        out_channels: int,  # output channels
        w_dim: int,  # w width
        resolution: int,  # resolution of this block
        img_channels: int,  # image channels
        is_last: bool,  # the last (highest-resolution) block
        architecture: str = "skip",  # "orig" | "skip" | "resnet"
        resample_filter: Sequence[int] = (1, 3, 3, 1),  # low-pass filter for upsampling
        conv_clamp: float | None = 256,  # activation clamp; None: none
        use_fp16: bool = False,  # run in fp16 on CUDA (fp32 elsewhere)
        fp16_channels_last: bool = False,  # channels-last when in fp16 (speed only)
        fused_modconv_default: bool | str = True,  # default modconv path on CUDA: True | False | "inference_only"
        **layer_kwargs: Any,  # passed to SynthesisLayer (kernel_size, use_noise, activation)
    ):
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)} (got {architecture!r})")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(
        self,
        x: torch.Tensor | None,  # [B, in, R/2, R/2], or None for the first block
        img: torch.Tensor | None,  # [B, img_channels, R/2, R/2], or None
        ws: torch.Tensor,  # [B, num_conv + num_torgb, w_dim]
        force_fp32: bool = False,  # never run in fp16
        fused_modconv: bool | str | None = None,  # modconv path; None: the block default
        noise_mode: str = "random",
        impl: str = "auto",
        update_emas: bool = False,  # accepted for NVIDIA compatibility; unused in the generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if ws.ndim != 3 or ws.shape[1] != self.num_conv + self.num_torgb or ws.shape[2] != self.w_dim:
            raise ValueError(f"block {self.resolution} expects ws [B, {self.num_conv + self.num_torgb}, {self.w_dim}] (got {tuple(ws.shape)})")
        w_iter = iter(ws.unbind(dim=1))
        if ws.device.type != "cuda":
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            if x is None or x.shape[1:] != (self.in_channels, self.resolution // 2, self.resolution // 2):
                raise ValueError(f"block {self.resolution} expects x [B, {self.in_channels}, {self.resolution // 2}, {self.resolution // 2}]")
            x = x.to(dtype=dtype, memory_format=memory_format)
        fused = _choose_fused(fused_modconv, self.fused_modconv_default, self.training, x)
        kw = dict(fused_modconv=fused, noise_mode=noise_mode, impl=impl)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **kw)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5), impl=impl)
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **kw)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), **kw)

        if img is not None:
            img = upsample2d(img, self.resample_filter, impl=impl)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused, impl=impl)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, img_channels, R, R], one block per power-of-two resolution."""

    def __init__(
        self,
        w_dim: int,  # w width
        img_resolution: int,  # output resolution, a power of two from 4 to 1024 (or more)
        img_channels: int,  # image channels
        channel_base: int = 32768,  # channels at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # maximum channels of a block
        num_fp16_res: int = 4,  # run the N highest resolutions in fp16 (on CUDA)
        **block_kwargs: Any,  # passed to SynthesisBlock
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"img_resolution must be a power of two >= 4 (got {img_resolution})")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   is_last=is_last, use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def blocks(self) -> Iterable[SynthesisBlock]:
        for res in self.block_resolutions:
            yield getattr(self, f"b{res}")

    def forward(self, ws: torch.Tensor, **block_kwargs: Any) -> torch.Tensor:  # [B, num_ws, w_dim] -> [B, C, R, R]
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}] (got {tuple(ws.shape)})")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur, **block_kwargs)
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: mapping (g1: z -> w) then synthesis (g2: w -> image in [-1, 1])."""

    def __init__(
        self,
        z_dim: int,  # latent z width
        c_dim: int,  # conditioning label width; 0: unconditional
        w_dim: int,  # intermediate latent w width
        img_resolution: int,  # output resolution
        img_channels: int,  # image channels
        mapping_kwargs: dict | None = None,  # passed to MappingNetwork
        **synthesis_kwargs: Any,  # passed to SynthesisNetwork
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                mapping_kwargs=dict(mapping_kwargs or {}), **synthesis_kwargs)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {}))

    @property
    def latent_shape(self) -> tuple[int, int]:
        """Shape of one intermediate latent (the CB-AE's input): (num_ws, w_dim)."""
        return (self.num_ws, self.w_dim)

    def forward(
        self,
        z: torch.Tensor,  # [B, z_dim]
        c: torch.Tensor | None = None,  # [B, c_dim] one-hot class labels, or None for unconditional models
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs: Any,  # noise_mode, force_fp32, fused_modconv, impl
    ) -> torch.Tensor:  # [B, C, R, R] in [-1, 1]
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)


def z_from_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """[len(seeds), z_dim] float32 latents, seed -> z exactly as NVIDIA's gen_images.py:
    `np.random.RandomState(seed).randn(1, z_dim)` (DESIGN rule 7)."""
    rows = [np.random.RandomState(int(seed)).randn(1, z_dim) for seed in seeds]
    if not rows:
        return torch.zeros([0, z_dim])
    return torch.from_numpy(np.concatenate(rows, axis=0)).to(torch.float32)


def one_hot(class_idx: int | None, c_dim: int, batch: int) -> torch.Tensor | None:
    """[batch, c_dim] one-hot labels for a conditional model, or None when c_dim == 0."""
    if c_dim == 0:
        return None
    if class_idx is None or not 0 <= class_idx < c_dim:
        raise ValueError(f"class index must be in 0..{c_dim - 1} (got {class_idx})")
    c = torch.zeros([batch, c_dim])
    c[:, class_idx] = 1
    return c
