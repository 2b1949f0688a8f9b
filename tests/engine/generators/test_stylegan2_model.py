"""Model-level behaviour of the StyleGAN2 generator on tiny configurations (8-16 px, a few channels)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.generators.stylegan2 import Generator, MappingNetwork, SynthesisLayer, modulated_conv2d

Z_DIM = 8
W_DIM = 8
ARCHS = ["orig", "skip", "resnet"]


def make_generator(
    architecture: str = "skip",
    img_resolution: int = 16,
    c_dim: int = 0,
    use_noise: bool = True,
    seed: int = 0,
    **kwargs,
) -> Generator:
    """A tiny generator with every parameter non-trivial (noise strengths, biases and w_avg non-zero)."""
    torch.manual_seed(seed)
    g = Generator(
        z_dim=Z_DIM,
        c_dim=c_dim,
        w_dim=W_DIM,
        img_resolution=img_resolution,
        img_channels=3,
        channel_base=128,
        channel_max=16,
        mapping_kwargs=dict(num_layers=2),
        architecture=architecture,
        use_noise=use_noise,
        **kwargs,
    )
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(0.5 + torch.rand([]))
            elif name.endswith("bias") and "affine" not in name:
                p.add_(0.1 * torch.randn_like(p))
        g.mapping.w_avg.copy_(torch.randn([W_DIM]))
    return g.eval()


def random_ws(g: Generator, batch: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn([batch, g.num_ws, g.w_dim], generator=gen)


def random_z(batch: int, seed: int = 2) -> torch.Tensor:
    return torch.randn([batch, Z_DIM], generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# The two modulated-convolution paths compute the same function.


@pytest.mark.parametrize("architecture", ARCHS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("noise", ["const", "none", "no_noise_layers"])
def test_fused_and_activation_modulation_agree(architecture, batch, noise):
    g = make_generator(architecture, use_noise=(noise != "no_noise_layers"))
    ws = random_ws(g, batch)
    noise_mode = "const" if noise == "const" else "none"
    with torch.no_grad():
        fused = g.synthesis(ws, noise_mode=noise_mode, fused_modconv=True)
        acts = g.synthesis(ws, noise_mode=noise_mode, fused_modconv=False)
        auto = g.synthesis(ws, noise_mode=noise_mode)
    assert fused.shape == (batch, 3, 16, 16)
    assert fused.abs().max() > 1e-3  # a real image, not all zeros
    torch.testing.assert_close(acts, fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(auto, fused, rtol=1e-5, atol=1e-5)
    # The named spellings select the same paths.
    with torch.no_grad():
        torch.testing.assert_close(g.synthesis(ws, noise_mode=noise_mode, fused_modconv="grouped"), fused, rtol=0, atol=0)
        torch.testing.assert_close(g.synthesis(ws, noise_mode=noise_mode, fused_modconv="activations"), acts, rtol=0, atol=0)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv2d_paths_agree_with_a_per_sample_loop(up, demodulate):
    torch.manual_seed(3)
    x = torch.randn([3, 4, 5, 5], dtype=torch.float64)
    weight = torch.randn([6, 4, 3, 3], dtype=torch.float64)
    styles = torch.randn([3, 4], dtype=torch.float64)
    f = torch.tensor([[1.0, 3, 3, 1]]).T @ torch.tensor([[1.0, 3, 3, 1]]) / 64
    kw = dict(up=up, padding=1, resample_filter=f, demodulate=demodulate, flip_weight=(up == 1))
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kw)
    acts = modulated_conv2d(x, weight, styles, fused_modconv=False, **kw)
    # Per sample: scale the weight's input channels by the styles, optionally normalise each output channel.
    for i in range(3):
        wi = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            wi = wi / wi.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        one = modulated_conv2d(x[i : i + 1], wi, torch.ones([1, 4], dtype=torch.float64), demodulate=False, fused_modconv=True, **{k: v for k, v in kw.items() if k != "demodulate"})
        torch.testing.assert_close(fused[i : i + 1], one, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(acts, fused, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Mapping network: truncation, conditioning, w_avg.


def test_truncation_psi_zero_gives_w_avg():
    g = make_generator()
    z = random_z(4)
    ws = g.mapping(z, None, truncation_psi=0)
    assert ws.shape == (4, g.num_ws, W_DIM)
    torch.testing.assert_close(ws, g.mapping.w_avg.expand_as(ws), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("psi", [0.5, 0.7, 1.5])
def test_truncation_psi_interpolates_towards_w_avg(psi):
    g = make_generator()
    z = random_z(3)
    w = g.mapping(z, None)
    # Every one of the num_ws copies is the same w.
    assert torch.equal(w, w[:, :1].expand_as(w))
    wt = g.mapping(z, None, truncation_psi=psi)
    expected = g.mapping.w_avg + psi * (w - g.mapping.w_avg)
    torch.testing.assert_close(wt, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cutoff", [0, 1, 3, 6])
def test_truncation_cutoff_only_changes_the_first_ws(cutoff):
    g = make_generator()
    z = random_z(2)
    w = g.mapping(z, None)
    wt = g.mapping(z, None, truncation_psi=0.5, truncation_cutoff=cutoff)
    torch.testing.assert_close(wt[:, cutoff:], w[:, cutoff:], rtol=0, atol=0)
    torch.testing.assert_close(wt[:, :cutoff], g.mapping.w_avg.lerp(w[:, :cutoff], 0.5), rtol=1e-6, atol=1e-6)
    if cutoff > 0:
        assert not torch.allclose(wt[:, :cutoff], w[:, :cutoff])
    # psi = 1 ignores the cutoff.
    assert torch.equal(g.mapping(z, None, truncation_psi=1, truncation_cutoff=cutoff), w)


def test_truncation_reaches_the_image():
    g = make_generator()
    z = random_z(2)
    with torch.no_grad():
        a = g(z, truncation_psi=0, noise_mode="const")
        b = g(random_z(2, seed=9), truncation_psi=0, noise_mode="const")
        c = g(z, truncation_psi=1, noise_mode="const")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # every z gives the average image
    assert not torch.allclose(a, c, atol=1e-3)


def test_update_emas_moves_w_avg_towards_the_batch_mean():
    g = make_generator()
    z = random_z(5)
    old = g.mapping.w_avg.clone()
    w = g.mapping(z, None)[:, 0]
    g.mapping(z, None, update_emas=True)
    beta = g.mapping.w_avg_beta
    torch.testing.assert_close(g.mapping.w_avg, beta * old + (1 - beta) * w.mean(dim=0), rtol=1e-6, atol=1e-6)
    # Without update_emas nothing moves.
    cur = g.mapping.w_avg.clone()
    g.mapping(z, None)
    assert torch.equal(g.mapping.w_avg, cur)


def test_conditional_model_requires_c_and_uses_it():
    g = make_generator(c_dim=4)
    assert "mapping.embed.weight" in g.state_dict()
    z = random_z(2)
    with pytest.raises(ValueError, match=r"c must be \[B, 4\]"):
        g.mapping(z, None)
    with pytest.raises(ValueError, match=r"c must be \[B, 4\]"):
        g.mapping(z, torch.zeros([2, 3]))
    c0 = torch.nn.functional.one_hot(torch.tensor([0, 0]), 4).float()
    c1 = torch.nn.functional.one_hot(torch.tensor([1, 1]), 4).float()
    w0 = g.mapping(z, c0)
    w1 = g.mapping(z, c1)
    assert w0.shape == (2, g.num_ws, W_DIM)
    assert (w0 - w1).abs().max() > 1e-4
    assert torch.equal(g.mapping(z, c0), w0)
    with torch.no_grad():
        assert g(z, c1, noise_mode="const").shape == (2, 3, 16, 16)


def test_unconditional_model_ignores_c_and_has_no_embedding():
    g = make_generator()
    assert not any(k.startswith("mapping.embed") for k in g.state_dict())
    z = random_z(2)
    assert torch.equal(g.mapping(z, None), g.mapping(z, torch.zeros([2, 0])))


def test_mapping_without_w_avg_rejects_truncation():
    m = MappingNetwork(z_dim=4, c_dim=0, w_dim=4, num_ws=3, num_layers=1, w_avg_beta=None)
    assert "w_avg" not in m.state_dict()
    with pytest.raises(ValueError, match="w_avg"):
        m(torch.randn([1, 4]), None, truncation_psi=0.5)


# --------------------------------------------------------------------------------------------
# num_ws and the use of every w.


@pytest.mark.parametrize("architecture", ARCHS)
@pytest.mark.parametrize("resolution", [4, 8, 16, 32, 64])
def test_num_ws(architecture, resolution):
    g = make_generator(architecture, img_resolution=resolution)
    expected = 2 * int(math.log2(resolution)) - 2  # two convs per block (one at 4x4) plus the last toRGB
    assert g.num_ws == g.synthesis.num_ws == g.mapping.num_ws == expected
    assert g.latent_shape == (expected, W_DIM)
    with torch.no_grad():
        img = g(random_z(2), noise_mode="const")
    assert img.shape == (2, 3, resolution, resolution)


@pytest.mark.parametrize("architecture", ARCHS)
def test_every_w_changes_the_image(architecture):
    g = make_generator(architecture)
    ws = random_ws(g, 1)
    with torch.no_grad():
        base = g.synthesis(ws, noise_mode="const")
        for i in range(g.num_ws):
            ws2 = ws.clone()
            ws2[:, i] += 1.0
            assert (g.synthesis(ws2, noise_mode="const") - base).abs().max() > 1e-5, f"w {i} has no effect"


# --------------------------------------------------------------------------------------------
# Noise modes.


@pytest.mark.parametrize("fused", [True, False])
def test_noise_modes(fused):
    g = make_generator()
    ws = random_ws(g, 2)
    run = lambda mode: g.synthesis(ws, noise_mode=mode, fused_modconv=fused)  # noqa: E731
    with torch.no_grad():
        const_a, const_b = run("const"), run("const")
        assert torch.equal(const_a, const_b)
        rand_a, rand_b = run("random"), run("random")
        assert (rand_a - rand_b).abs().max() > 1e-4
        torch.manual_seed(123)
        rand_c = run("random")
        torch.manual_seed(123)
        assert torch.equal(run("random"), rand_c)
        none = run("none")
        assert (none - const_a).abs().max() > 1e-4
        # "none" ignores noise_const; "const" follows it.
        for name, buf in g.named_buffers():
            if name.endswith("noise_const"):
                buf.mul_(-2.0).add_(1.0)
        assert torch.equal(run("none"), none)
        assert (run("const") - const_a).abs().max() > 1e-4
        # "none" is the same as zero noise strength.
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        torch.testing.assert_close(run("const"), none, rtol=0, atol=0)
        torch.testing.assert_close(run("random"), none, rtol=0, atol=0)


def test_model_without_noise_layers_ignores_noise_mode():
    g = make_generator(use_noise=False)
    assert not any("noise" in k for k in g.state_dict())
    ws = random_ws(g, 2)
    with torch.no_grad():
        a = g.synthesis(ws, noise_mode="random")
        assert torch.equal(a, g.synthesis(ws, noise_mode="random"))
        assert torch.equal(a, g.synthesis(ws, noise_mode="const"))
        assert torch.equal(a, g.synthesis(ws, noise_mode="none"))


# --------------------------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("architecture", ARCHS)
def test_gradients_reach_ws_and_every_parameter(architecture):
    g = make_generator(architecture).train()
    z = random_z(2)
    grads = {}
    for fused in (True, False):
        g.zero_grad(set_to_none=True)
        ws = g.mapping(z, None)
        ws.retain_grad()
        img = g.synthesis(ws, noise_mode="const", fused_modconv=fused)
        probe = torch.randn(img.shape, generator=torch.Generator().manual_seed(4))
        (img * probe).sum().backward()
        assert ws.grad is not None and ws.grad.abs().sum() > 0
        for name, p in g.named_parameters():
            assert p.grad is not None, f"{name} got no gradient"
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
            assert torch.isfinite(p.grad).all(), name
        grads[fused] = (ws.grad.clone(), {n: p.grad.clone() for n, p in g.named_parameters()})
    # Both paths give the same gradients.
    torch.testing.assert_close(grads[False][0], grads[True][0], rtol=1e-4, atol=1e-5)
    for name, gr in grads[True][1].items():
        torch.testing.assert_close(grads[False][1][name], gr, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_gradient_with_respect_to_ws_matches_finite_differences():
    # The synthesis network runs in float32 (it casts ws, as NVIDIA's does), so use a moderate step
    # and compare directional derivatives relative to |grad| * |direction|.
    g = make_generator("skip")
    ws = random_ws(g, 1).requires_grad_(True)
    probe = torch.randn([1, 3, 16, 16], generator=torch.Generator().manual_seed(5))
    loss = lambda w: (g.synthesis(w, noise_mode="const", fused_modconv=False) * probe).sum()  # noqa: E731
    (grad,) = torch.autograd.grad(loss(ws), ws)
    random_dir = torch.randn(ws.shape, generator=torch.Generator().manual_seed(6))
    eps = 1e-3
    for direction in (grad / grad.norm(), random_dir / random_dir.norm()):
        with torch.no_grad():
            fd = (loss(ws + eps * direction) - loss(ws - eps * direction)) / (2 * eps)
        analytic = (grad * direction).sum()
        assert abs(float(fd - analytic)) < 1e-2 * float(grad.norm()), (float(fd), float(analytic), float(grad.norm()))


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
def test_synthesis_layer_gradcheck(up, fused):
    torch.manual_seed(8)
    layer = SynthesisLayer(3, 2, w_dim=4, resolution=4 * up, up=up).double()
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.normal_()
    x = torch.randn([2, 3, 4, 4], dtype=torch.float64, requires_grad=True)
    w = torch.randn([2, 4], dtype=torch.float64, requires_grad=True)
    weight = layer.weight  # a fixed seed keeps the lrelu pre-activations off the kink at 0
    fn = lambda x, w, weight: layer(x, w, noise_mode="const", fused_modconv=fused)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, weight), atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# State dict names (NVIDIA's scheme, so their weights load as they are).


def _layer_keys(prefix: str, noise: bool = True) -> list[str]:
    keys = [f"{prefix}.weight", f"{prefix}.bias", f"{prefix}.resample_filter", f"{prefix}.affine.weight", f"{prefix}.affine.bias"]
    if noise:
        keys += [f"{prefix}.noise_strength", f"{prefix}.noise_const"]
    return keys


def _torgb_keys(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias", f"{prefix}.affine.weight", f"{prefix}.affine.bias"]


def expected_keys(architecture: str, resolution: int = 16, num_mapping_layers: int = 2) -> set[str]:
    keys = ["mapping.w_avg"]
    for i in range(num_mapping_layers):
        keys += [f"mapping.fc{i}.weight", f"mapping.fc{i}.bias"]
    res = 4
    while res <= resolution:
        b = f"synthesis.b{res}"
        keys.append(f"{b}.resample_filter")
        if res == 4:
            keys.append(f"{b}.const")
        else:
            keys += _layer_keys(f"{b}.conv0")
        keys += _layer_keys(f"{b}.conv1")
        if architecture == "skip" or res == resolution:
            keys += _torgb_keys(f"{b}.torgb")
        if architecture == "resnet" and res > 4:
            keys += [f"{b}.skip.weight", f"{b}.skip.resample_filter"]
        res *= 2
    return set(keys)


@pytest.mark.parametrize("architecture", ARCHS)
def test_state_dict_keys_follow_nvidia_naming(architecture):
    g = make_generator(architecture)
    sd = g.state_dict()
    assert set(sd) == expected_keys(architecture)
    # Spot checks named in NVIDIA's checkpoints.
    for key in ["mapping.fc0.weight", "mapping.w_avg", "synthesis.b4.const", "synthesis.b4.conv1.affine.weight", "synthesis.b8.conv0.noise_const"]:
        assert key in sd
    if architecture == "skip":
        assert "synthesis.b8.torgb.weight" in sd and "synthesis.b8.resample_filter" in sd
    if architecture == "resnet":
        assert "synthesis.b8.skip.weight" in sd
    # Shapes (channels: min(128 // res, 16) -> 16 at 4 and 8, 8 at 16).
    assert sd["mapping.fc0.weight"].shape == (W_DIM, Z_DIM)
    assert sd["mapping.w_avg"].shape == (W_DIM,)
    assert sd["synthesis.b4.const"].shape == (16, 4, 4)
    assert sd["synthesis.b4.conv1.weight"].shape == (16, 16, 3, 3)
    assert sd["synthesis.b4.conv1.affine.weight"].shape == (16, W_DIM)
    assert sd["synthesis.b16.conv0.weight"].shape == (8, 16, 3, 3)
    assert sd["synthesis.b16.conv0.affine.weight"].shape == (16, W_DIM)  # styles scale the input channels
    assert sd["synthesis.b16.conv1.noise_const"].shape == (16, 16)
    assert sd["synthesis.b16.conv1.noise_strength"].shape == ()
    assert sd["synthesis.b16.torgb.weight"].shape == (3, 8, 1, 1)
    assert sd["synthesis.b8.resample_filter"].shape == (4, 4)
    if architecture == "resnet":
        assert sd["synthesis.b16.skip.weight"].shape == (8, 16, 1, 1)
    # noise_const and resample_filter are buffers, not parameters; w_avg too.
    params = dict(g.named_parameters())
    assert "synthesis.b8.conv0.noise_const" not in params and "mapping.w_avg" not in params
    assert "synthesis.b8.conv0.noise_strength" in params


def test_state_dict_round_trip_reproduces_the_image():
    g1 = make_generator("skip", seed=0)
    g2 = make_generator("skip", seed=7)
    ws = random_ws(g1, 2)
    with torch.no_grad():
        assert not torch.allclose(g1.synthesis(ws, noise_mode="const"), g2.synthesis(ws, noise_mode="const"))
        g2.load_state_dict(g1.state_dict())
        assert torch.equal(g1.synthesis(ws, noise_mode="const"), g2.synthesis(ws, noise_mode="const"))


# --------------------------------------------------------------------------------------------
# Bad arguments.


def test_bad_shapes_raise_value_error():
    g = make_generator()
    with pytest.raises(ValueError, match=r"z must be \[B, 8\].*\(2, 7\)"):
        g(torch.zeros([2, 7]))
    with pytest.raises(ValueError, match=r"z must be \[B, 8\]"):
        g.mapping(torch.zeros([8]), None)
    with pytest.raises(ValueError, match=r"z must be \[B, 8\]"):
        g.mapping(None, None)
    with pytest.raises(ValueError, match=r"ws must be \[B, 6, 8\].*\(2, 5, 8\)"):
        g.synthesis(torch.zeros([2, 5, 8]))
    with pytest.raises(ValueError, match=r"ws must be \[B, 6, 8\]"):
        g.synthesis(torch.zeros([2, 6, 7]))
    with pytest.raises(ValueError, match=r"ws must be \[B, 6, 8\]"):
        g.synthesis(torch.zeros([6, 8]))
    with pytest.raises(ValueError, match=r"block 8 expects ws"):
        g.synthesis.b8(torch.zeros([1, 16, 4, 4]), None, torch.zeros([1, 2, 8]))
    with pytest.raises(ValueError, match=r"block 8 expects x \[B, 16, 4, 4\]"):
        g.synthesis.b8(torch.zeros([1, 16, 5, 5]), None, torch.zeros([1, 3, 8]))
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=8, up=2)
    with pytest.raises(ValueError, match=r"SynthesisLayer expects \[B, 4, 4, 4\]"):
        layer(torch.zeros([1, 4, 8, 8]), torch.zeros([1, 8]))
    with pytest.raises(ValueError, match=r"styles must be \[2, 4\]"):
        modulated_conv2d(torch.zeros([2, 4, 5, 5]), torch.zeros([3, 4, 3, 3]), torch.zeros([2, 3]))


def test_bad_options_raise_value_error():
    g = make_generator()
    ws = random_ws(g, 1)
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        g.synthesis(ws, noise_mode="sometimes")
    with pytest.raises(ValueError, match="fused_modconv must be one of"):
        g.synthesis(ws, fused_modconv="maybe")
    with pytest.raises(ValueError, match="architecture must be one of"):
        make_generator("unet")
    with pytest.raises(ValueError, match="power of two"):
        make_generator(img_resolution=12)
    with pytest.raises(ValueError, match="power of two"):
        make_generator(img_resolution=2)
