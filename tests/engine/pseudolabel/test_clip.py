"""clipzs and tipzs pseudo-labelers on a tiny random CLIP built offline (no downloads, no real weights)."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from engine.errors import ArtifactMissingError, CorruptFileError, UsageError
from engine.pseudolabel.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    ClipZeroShot,
    TipAdapter,
    build_clipzs,
    build_tipzs,
    default_prompts,
    load_clip,
    parse_prompt_overrides,
    resolve_prompts,
)

TINY = "gencbm-test-tiny-clip"  # registered with open_clip for this module only
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _oc():
    """open_clip, imported inside tests (never while pytest collects this file: see below)."""
    import open_clip

    return open_clip


@pytest.fixture(scope="module", autouse=True)
def _forget_the_hub_modules():
    """Importing open_clip imports huggingface_hub, which reads HF_HOME once, at import. Other test
    files (tests/engine/store) set HF_HOME per test and expect the hub to see it, so the hub modules
    this file brought in are dropped again afterwards (a later import reads the environment anew)."""
    before = set(sys.modules)
    yield
    for name in [m for m in sys.modules if m not in before and m.split(".")[0] == "huggingface_hub"]:
        del sys.modules[name]


def _model_from_cfg(cfg: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _oc().model.CLIP(
        embed_dim=cfg["embed_dim"], vision_cfg=_oc().CLIPVisionCfg(**cfg["vision_cfg"]),
        text_cfg=_oc().CLIPTextCfg(**cfg["text_cfg"]),
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights file of a random tiny CLIP, that model) with TINY known to open_clip meanwhile."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tinyclip")
    model = _model_from_cfg(TINY_CFG, seed=0).eval()
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    # open_clip keeps its configs in a module-level dict; add ours for the module and take it out after
    # (add_model_config would also append our folder to open_clip's search path for good).
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_oc().factory._MODEL_CONFIGS, TINY, json.loads(json.dumps(TINY_CFG)))
        yield path, model
    assert TINY not in _oc().list_models()


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:  # [n, 3, size, size] in [-1, 1]
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------------
# Prompts.


def test_default_prompts_follow_the_original():
    assert default_prompts("Wearing_Lipstick") == ["NO Lipstick", "Wearing Lipstick"]
    assert default_prompts("Mouth_Slightly_Open") == ["Mouth Closed", "Mouth Slightly Open"]
    assert default_prompts("Male") == ["Female", "Male"]
    assert default_prompts("Arched_Eyebrows") == ["Straight Eyebrows", "Arched Eyebrows"]
    assert default_prompts("Wavy_Hair") == ["Straight Hair", "Wavy Hair"]
    assert default_prompts("High_Cheekbones") == ["Low Cheekbones", "High Cheekbones"]
    assert default_prompts("Heavy_Makeup") == ["NO Makeup", "Heavy Makeup"]
    assert default_prompts("Attractive") == ["NOT Attractive", "Attractive"]
    assert default_prompts("Smiling") == ["NOT Smiling", "Smiling"]
    assert default_prompts("wearing lipstick") == ["NO Lipstick", "Wearing Lipstick"]
    assert default_prompts("Blond_Hair") == ["NOT Blond Hair", "Blond Hair"]
    assert default_prompts("Eyeglasses") == ["NOT Eyeglasses", "Eyeglasses"]


def test_prompt_overrides_parse_and_match_forgivingly():
    got = parse_prompt_overrides(["Smiling=a face that is not smiling|a smiling face", "hair = dark | blond | grey"])
    assert got == {"Smiling": ["a face that is not smiling", "a smiling face"], "hair": ["dark", "blond", "grey"]}
    plist = resolve_prompts(["Smiling", "Blond_Hair"], {"smiling": ["no", "yes"], "blond-hair": ["a", "b", "c"]})
    assert plist == [["no", "yes"], ["a", "b", "c"]]
    assert resolve_prompts(["Male"], None) == [["Female", "Male"]]
    with pytest.raises(UsageError, match="Smilng"):
        resolve_prompts(["Smiling"], {"Smilng x": ["a", "b"]})


@pytest.mark.parametrize("item", ["Smiling", "=a|b", "Smiling=only one", "Smiling=a||c", "Smiling=|b"])
def test_bad_prompt_overrides_name_the_item(item):
    with pytest.raises(UsageError, match="bad prompt override") as exc:
        parse_prompt_overrides([item])
    assert repr(item) in str(exc.value)


def test_a_concept_given_twice_is_refused():
    with pytest.raises(UsageError, match="already"):
        parse_prompt_overrides(["Smiling=a|b", "Smiling=c|d"])


# ------------------------------------------------------------------------------------------------
# load_clip.


def test_load_clip_from_a_file(tiny, tmp_path):
    path, ref = tiny
    model, tokenizer = load_clip(TINY, str(path))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    assert tokenizer(["NOT Smiling", "Smiling"]).shape == (2, 77)
    assert model.gencbm_label == f"{TINY}/tiny.safetensors"
    pt = tmp_path / "tiny.pt"  # the torch.load (weights only) route, wrapped as many checkpoints are
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, pt)
    model2, _ = load_clip(TINY, pt)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model2.state_dict().items())


def test_weights_that_do_not_fit_are_corrupt(tiny, tmp_path):
    from safetensors.torch import save_file

    other = dict(TINY_CFG, embed_dim=16)
    wrong = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in _model_from_cfg(other, 1).state_dict().items()}, str(wrong))
    with pytest.raises(CorruptFileError, match="wrong.safetensors"):
        load_clip(TINY, wrong)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptFileError, match="garbage.safetensors"):
        load_clip(TINY, garbage)
    with pytest.raises(ArtifactMissingError, match="no such CLIP weights file"):
        load_clip(TINY, tmp_path / "absent.safetensors")


def test_unknown_model_name_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown CLIP model 'ViT-Q-99'.*ViT-B"):
        load_clip("ViT-Q-99", "openai")
    with pytest.raises(UsageError, match="hf-hub"):
        load_clip("hf-hub:someone/some-clip", "openai")


def test_stored_weights_missing_name_the_download_command():
    with pytest.raises(ArtifactMissingError, match="gencbm download clip-vit-b-16-openai"):
        load_clip("ViT-B/16", "openai")
    with pytest.raises(UsageError, match="no gencbm artifact"):
        load_clip("ViT-B-16", "laion2b_s34b_b88k")


def test_registry_entry_of_the_openai_weights():
    from engine.store.registry import load_registry

    art = load_registry().get("clip-vit-b-16-openai")
    assert art.source_type == "hf" and art.hf_repo == "timm/vit_base_patch16_clip_224.openai"
    assert [f.path for f in art.files] == ["open_clip_model.safetensors"] and art.kind == "weights"
    assert art.settings["open_clip_model"] == "ViT-B-16" and art.settings["quick_gelu"] is True


def test_stored_weights_load_with_their_settings(tiny, tmp_path, monkeypatch):
    """The store route end to end, with a test registry entry standing in for the real one."""
    from engine.store.artifacts import FetchOptions, download

    path, ref = tiny
    monkeypatch.setenv("GENCBM_HOME", str(tmp_path / "home"))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"artifacts": [{
        "name": "clip-tiny-test", "kind": "weights", "source": {"type": "hf", "repo": "nobody/tiny", "files": ["w.safetensors"]},
        "settings": {"open_clip_model": TINY, "pretrained": "tinytag", "weights_file": "w.safetensors", "quick_gelu": True,
                     "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }]}))
    monkeypatch.setenv("GENCBM_REGISTRY", str(extra))
    with pytest.raises(ArtifactMissingError, match="gencbm download clip-tiny-test"):
        load_clip(TINY, "tinytag")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.safetensors").write_bytes(path.read_bytes())
    download("clip-tiny-test", FetchOptions(from_file=src))
    model, _ = load_clip(TINY, "tinytag")
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, _oc().transformer.QuickGELU)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    m = ClipZeroShot(["Smiling"], [["a", "b"]], model, _oc().get_tokenizer(TINY))
    assert m.mean.flatten().tolist() == [0.5] * 3 and m.std.flatten().tolist() == [0.25] * 3
    assert m.describe() == f"clipzs {TINY}/tinytag"


# ------------------------------------------------------------------------------------------------
# ClipZeroShot.


@pytest.fixture
def zs(tiny):
    path, _ = tiny
    return build_clipzs(["Smiling", "Male", "Blond_Hair"], model_name=TINY, pretrained=str(path),
                        prompts={"blond hair": ["dark hair", "blond hair", "grey hair"]})


def test_clipzs_logit_shapes_and_gradients(zs):
    assert zs.source == "clipzs" and zs.num_classes == [2, 2, 3]
    assert zs.describe() == f"clipzs {TINY}/tiny.safetensors"
    images = _images(4, 48).requires_grad_(True)
    logits = zs.logits(images)
    assert [tuple(lg.shape) for lg in logits] == [(4, 2), (4, 2), (4, 3)]
    sum(lg.sum() for lg in logits).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in zs.clip.parameters())


def test_clipzs_logits_are_100_cosine_with_clip_preprocessing(zs):
    images = _images(3, 48, seed=1)  # [3, 3, 48, 48] in [-1, 1]
    x = F.interpolate((images + 1) / 2, size=(32, 32), mode="bicubic", align_corners=False)
    x = (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    tokenizer = _oc().get_tokenizer(TINY)
    with torch.no_grad():
        img = F.normalize(zs.clip.encode_image(x), dim=-1)  # [3, D]
        got = zs.logits(images)
        for k, prompts in enumerate(zs.prompts):
            txt = F.normalize(zs.clip.encode_text(tokenizer(prompts)), dim=-1)  # [n_k, D]
            torch.testing.assert_close(got[k], 100 * img @ txt.T, rtol=1e-4, atol=1e-3)


def test_label_gives_probabilities_and_values(zs):
    probs, labels = zs.label(_images(5, 32))
    assert probs.shape == (5, 3) and probs.dtype == torch.float32
    assert labels.shape == (5, 3) and labels.dtype == torch.int64
    assert bool(((probs >= 1 / 3 - 1e-6) & (probs <= 1)).all())
    assert int(labels[:, :2].max()) <= 1 and int(labels[:, 2].max()) <= 2
    assert [tuple(p.shape) for p in zs.probabilities(_images(2, 32))] == [(2, 2), (2, 2), (2, 3)]


# ------------------------------------------------------------------------------------------------
# TipAdapter.


@pytest.fixture
def tip(tiny):
    path, _ = tiny
    return build_tipzs(["Smiling", "Male"], dataset="toyfaces", shots=16, model_name=TINY, pretrained=str(path))


def test_tipzs_cache_shapes(tip):
    assert tip.source == "tipzs" and tip.num_classes == [2, 2] and tip.shots == [16, 16]
    for k in range(2):
        assert tip.cache_keys(k).shape == (32, 16)
        assert tip.cache_values(k).shape == (16, 2) and bool((tip.cache_values(k).sum(dim=1) == 1).all())
        torch.testing.assert_close(tip.cache_keys(k).norm(dim=0), torch.ones(16))
    assert tip.describe() == f"tipzs {TINY}/tiny.safetensors (16 shots, alpha 1, beta 5.5)"


def test_tipzs_with_alpha_zero_is_zero_shot(tip):
    images = _images(3, 32, seed=2)
    zero_shot = ClipZeroShot(tip.concepts, tip.prompts, tip.clip, _oc().get_tokenizer(TINY))
    tip.alpha = 0.0
    for a, b in zip(tip.logits(images), zero_shot.logits(images)):
        torch.testing.assert_close(a, b)
    tip.alpha = 1.0
    assert not all(torch.allclose(a, b) for a, b in zip(tip.logits(images), zero_shot.logits(images)))


def test_tipzs_cache_dominates_with_a_huge_alpha(tip):
    from engine.data import open_dataset, to_unit_range

    ds = open_dataset("toyfaces", split="train", concepts=["Smiling", "Male"], limit=16)
    images, labels = ds.in_memory()
    tip.alpha, tip.beta = 1e4, 1e4  # only an identical cached image has a weight that counts
    _, got = tip.label(to_unit_range(images))
    assert torch.equal(got, labels)
    picks = [int((labels[:, 0] == v).nonzero()[0]) for v in (0, 1) if (labels[:, 0] == v).any()]
    assert len(picks) == 2  # both values of Smiling occur among the 16 shots
    for i in picks:
        assert int(tip.label(to_unit_range(images[i:i + 1]))[1][0, 0]) == int(labels[i, 0])


def test_tipzs_uses_fewer_shots_with_a_warning(tiny, monkeypatch):
    import engine.data
    from engine.data.toyfaces import ToyFacesDataset

    path, _ = tiny
    monkeypatch.setattr(engine.data, "open_dataset",
                        lambda name, *, root=None, split="train", concepts=None, limit=None, size=None:
                        ToyFacesDataset(split, concepts, min(limit, 5)))
    with pytest.warns(UserWarning, match="only 5 samples"):
        m = build_tipzs(["Smiling"], dataset="toyfaces", shots=8, model_name=TINY, pretrained=str(path), alpha=2, beta=3)
    assert m.shots == [5] and m.cache_keys(0).shape == (32, 5) and m.alpha == 2.0 and m.beta == 3.0


def test_tipzs_checks_its_cache(tiny):
    model = tiny[1]
    tokenizer = _oc().get_tokenizer(TINY)
    with pytest.raises(UsageError, match="labels must lie in 0..1"):
        TipAdapter(["Smiling"], [["a", "b"]], model, tokenizer, [_images(2, 32)], [torch.tensor([0, 2])])
    one_class = TipAdapter(["Smiling"], [["a", "b"]], model, tokenizer, [_images(2, 32)], [torch.tensor([1, 1])])
    assert one_class.cache_values(0)[:, 1].tolist() == [1.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert one_class.logits(_images(1, 32))[0].shape == (1, 2)


# ------------------------------------------------------------------------------------------------
# End to end: train-cbae / train-cc with CLIP pseudo-labels, through the CLI.


@pytest.mark.parametrize("kind, source", [("cbae", "clipzs"), ("cc", "tipzs"), ("cbae", "tipzs")])
def test_training_runs_end_to_end_with_clip_pseudo_labels(tiny, tmp_path, kind, source):
    from typer.testing import CliRunner

    from engine.bottleneck.io import load_bottleneck
    from gencbm_cli.main import app
    from toy_generators import tiny_toy_generator

    path, _ = tiny
    gen = tiny_toy_generator(tmp_path / "toy.safetensors")
    out = tmp_path / f"{kind}.safetensors"
    args = [f"train-{kind}", "--gen", str(gen), "--pseudo-label", source, "--clip-model", TINY, "--clip-pretrained", str(path),
            "--concepts", "Smiling,Male", "--prompt", "Smiling=a plain face|a smiling face", "--steps", "2", "--batch-size", "4",
            "--hidden", "12", "--depth", "1", "--sample-every", "0", "--threshold", "0", "--out", str(out), "--json", "--quiet"]
    if source == "tipzs":
        args += ["--tip-shots", "8"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["steps"] == 2 and doc["concepts"] == ["Smiling", "Male"]
    assert doc["metrics"]["concept_ce"] > 0  # threshold 0: every pseudo-label is used
    model, meta = load_bottleneck(out)
    assert meta["training"]["pseudo_labeler"].startswith(source)
    assert meta["training"]["labeler"]["prompts"] == ["Smiling=a plain face|a smiling face"]
    assert model.kind == kind
