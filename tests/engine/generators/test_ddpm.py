"""The DDPM adapter (engine.generators.ddpm) against diffusers itself, on small random UNets.

- The split: g2(*g1(x, t)) is `unet(x, t).sample` bit for bit, for plain, skip-type (Fourier time
  embedding), class-conditional and centred-input UNets, and for google/ddpm-celebahq-256's
  configuration with random weights (latent [512, 8, 8]).
- Sampling: `render` gives what diffusers' DDIMPipeline / DDPMPipeline give for the same seeds
  (generators per image), with eta 0 and eta > 0; an image does not depend on its batch.
- Opening: UNet folders, pipeline folders, a folder without weights (exit 4), a registry name not
  downloaded yet (exit 3); the edit hook acts only at the steps t <= intervene_below.
"""

from __future__ import annotations

import time

import pytest
import torch

from ddpm_fixtures import CELEBAHQ_256, tiny_unet, tiny_unet_folder
from engine.errors import ArtifactMissingError, CorruptFileError, UsageError
from engine.generators.ddpm import DDPMLatent, is_ddpm
from engine.generators.latent import open_generator


@pytest.fixture(autouse=True)
def _own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))


SKIP_BLOCKS = dict(  # diffusers' skip-type blocks (the score-SDE UNets): a running image path beside the features
    block_out_channels=(32, 32), down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
    up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), time_embedding_type="fourier",
)

CONFIGS = {
    "tiny": ({}, None),
    "skip-fourier": (SKIP_BLOCKS, None),
    "class-conditional": ({"num_class_embeds": 4}, 2),
    "centered-input": ({"center_input_sample": True}, None),
}


def _split_vs_unet(unet, class_idx=None, batch=2, t=(999, 17), both_forms=True):
    lg = DDPMLatent(unet, "test", class_idx=class_idx)
    x = torch.randn(batch, *lg.image_shape, generator=torch.Generator().manual_seed(1))
    labels = lg._labels(batch)
    outs = []
    with torch.no_grad():
        forms = (torch.tensor(t[0]), torch.tensor(list(t)[:batch])) if both_forms else (torch.tensor(t[0]),)
        for tt in forms:  # one t for the batch, and one per sample
            h, ctx = lg.g1(x, tt)
            outs.append((h, lg.g2(h, ctx), unet(x, tt, class_labels=labels).sample))
    return lg, outs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_g2_of_g1_is_the_unet_exactly(name):
    overrides, class_idx = CONFIGS[name]
    unet = tiny_unet(3, **overrides)
    lg, outs = _split_vs_unet(unet, class_idx)
    for h, split, full in outs:
        assert torch.equal(split, full)
        assert tuple(h.shape[1:]) == tuple(lg.latent_shape)
        assert split.abs().max() > 0
    if name == "skip-fourier":  # the skip path is really there (else this case would test nothing new)
        assert any(hasattr(b, "skip_conv") for b in unet.down_blocks) and any(hasattr(b, "skip_conv") for b in unet.up_blocks)
    if name == "class-conditional":  # the class matters
        other = DDPMLatent(unet, "test", class_idx=0)
        x = torch.randn(1, *lg.image_shape)
        with torch.no_grad():
            assert not torch.equal(lg.g2(*lg.g1(x, 10)), other.g2(*other.g1(x, 10)))
        with pytest.raises(UsageError, match="--class"):
            DDPMLatent(unet, "test")
    if name == "centered-input":
        with torch.no_grad():  # centering is applied once: the split differs from the plain UNet with the same weights
            plain = tiny_unet(3)
            x = torch.rand(1, *lg.image_shape)
            assert not torch.equal(plain(x, 5).sample, unet(x, 5).sample)


@pytest.mark.slow
def test_celebahq_256_config_split_is_exact_and_latent_is_512x8x8():
    """google/ddpm-celebahq-256's architecture with random weights, batch 1 at 256 px (two forward
    passes: about 25 s on one idle CPU thread, up to a minute on a busy one)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**CELEBAHQ_256).eval()
    start = time.perf_counter()
    lg, outs = _split_vs_unet(unet, batch=1, t=(400,), both_forms=False)
    print(f"celebahq-256 split + full forward: {time.perf_counter() - start:.1f} s")
    assert tuple(lg.latent_shape) == (512, 8, 8)
    for h, split, full in outs:
        assert tuple(h.shape) == (1, 512, 8, 8)
        assert torch.equal(split, full)


# ------------------------------------------------------------------------------------------------
# Sampling against diffusers' pipelines.


def _pipeline_images(kind, unet, seeds, steps, eta=0.0):
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    if kind == "ddim":
        pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=len(seeds), generator=gens, num_inference_steps=steps, eta=eta, output_type="pt").images
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=len(seeds), generator=gens, num_inference_steps=steps, output_type="pt").images


def _render01(lg, seeds, edit=None):
    with torch.no_grad():
        x = lg.render(lg.z_from_seeds(seeds), edit=edit, seeds=seeds)
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(7)


@pytest.mark.parametrize("kind, steps, eta", [("ddim", 5, 0.0), ("ddim", 5, 0.7), ("ddpm", 6, 0.0)])
def test_render_is_diffusers_pipeline(unet, kind, steps, eta):
    seeds = [0, 1, 2]
    lg = DDPMLatent(unet, "test", scheduler=kind, steps=steps, eta=eta)
    ours = _render01(lg, seeds)
    ref = _pipeline_images(kind, unet, seeds, steps, eta)
    assert ours.shape == ref.shape == (3, 3, 16, 16)
    assert torch.equal(ours, ref), (ours - ref).abs().max()
    assert ours.std() > 0.01
    if kind != "ddim" or eta:  # a stochastic sampler really draws noise: another seed's generators give another image
        assert not torch.equal(_pipeline_images(kind, unet, [9, 1, 2], steps, eta)[0], ref[0])


@pytest.mark.parametrize("kind, eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_an_image_does_not_depend_on_its_batch(unet, kind, eta):
    lg = DDPMLatent(unet, "test", scheduler=kind, steps=4, eta=eta)
    pair = _render01(lg, [3, 5])
    alone = _render01(lg, [5])
    # Same noise per seed whatever the batch; convolutions may round differently for another batch
    # size on CPU (~1e-7), a different noise draw would differ by ~0.1.
    torch.testing.assert_close(pair[1:], alone, atol=1e-5, rtol=0)
    assert not torch.allclose(pair[0], pair[1], atol=1e-2)


def test_identity_edit_changes_nothing_and_acts_only_at_t_below_the_threshold(unet):
    lg = DDPMLatent(unet, "test", scheduler="ddim", steps=10, intervene_below=400)
    current: list[int] = []
    g1 = lg.g1

    def g1_recording_t(x, t):
        current.append(int(t))
        return g1(x, t)

    lg.g1 = g1_recording_t  # instance attribute: this object only
    called_at: list[int] = []
    shapes = []

    def edit(h):
        called_at.append(current[-1])
        shapes.append(tuple(h.shape))
        return h

    edited = _render01(lg, [0, 1], edit=edit)
    all_t = list(current)
    assert len(all_t) == 10 and all_t == sorted(all_t, reverse=True)
    assert called_at == [t for t in all_t if t <= 400] and called_at  # each step t <= 400, in order, and only those
    assert all(s == (2, *lg.latent_shape) for s in shapes)
    assert torch.equal(edited, _render01(lg, [0, 1]))  # an identity edit is no edit

    # An edit that changes the latent changes the image; with intervene_below 0 it acts at the last step only.
    lg0 = DDPMLatent(unet, "test", scheduler="ddim", steps=10, intervene_below=0)
    calls = []
    out = _render01(lg0, [0, 1], edit=lambda h: calls.append(1) or h * 0)
    assert len(calls) == 1 and not torch.equal(out, _render01(lg0, [0, 1]))


def test_seed_convention_is_diffusers_randn_per_seed(unet):
    lg = DDPMLatent(unet, "test")
    z = lg.z_from_seeds([4, 2])
    for i, s in enumerate((4, 2)):
        assert torch.equal(z[i : i + 1], torch.randn([1, 3, 16, 16], generator=torch.Generator("cpu").manual_seed(s)))


# ------------------------------------------------------------------------------------------------
# Opening: folders, pipeline folders, broken folders, registry names.


@pytest.mark.parametrize("pipeline", [False, True])
def test_open_generator_on_a_unet_or_pipeline_folder(tmp_path, pipeline):
    folder = tiny_unet_folder(tmp_path / "m", seed=5, pipeline=pipeline)
    assert is_ddpm(folder)
    lg = open_generator(str(folder), device="cpu", steps=3)
    assert isinstance(lg, DDPMLatent) and lg.family == "ddpm" and lg.steps == 3 and lg.scheduler == "ddim"
    assert lg.info["unet_folder"] == str(folder / "unet" if pipeline else folder)
    assert not any(p.requires_grad for p in lg.unet.parameters()) and not lg.unet.training
    ref = tiny_unet(5)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(lg.g2(*lg.g1(x, 250)), ref(x, 250).sample)  # the weights that were saved
    assert open_generator(str(folder), scheduler="ddpm").steps == 1000
    assert open_generator(str(folder)).steps == 50


def test_folder_without_weights_is_corrupt(tmp_path):
    folder = tiny_unet_folder(tmp_path / "m")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CorruptFileError) as exc:
        open_generator(str(folder))
    assert exc.value.exit_code == 4 and "diffusion_pytorch_model" in str(exc.value) and "\n" not in str(exc.value)


def test_folder_with_truncated_weights_is_corrupt(tmp_path):
    folder = tiny_unet_folder(tmp_path / "m")
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptFileError) as exc:
        open_generator(str(folder))
    assert exc.value.exit_code == 4 and "\n" not in str(exc.value)


def test_registry_name_not_downloaded_says_how_to_get_it():
    assert is_ddpm("ddpm-celebahq-256")
    with pytest.raises(ArtifactMissingError) as exc:
        open_generator("ddpm-celebahq-256")
    assert exc.value.exit_code == 3 and "gencbm download ddpm-celebahq-256" in str(exc.value)


def test_bad_sampler_settings_are_usage_errors(unet):
    for kwargs, match in (({"scheduler": "euler"}, "--scheduler"), ({"steps": 0}, "--steps"), ({"steps": 1001}, "--steps"),
                          ({"eta": 1.5}, "--eta"), ({"scheduler": "ddpm", "eta": 0.5}, "--eta")):
        with pytest.raises(UsageError, match=match):
            DDPMLatent(unet, "test", **kwargs)
