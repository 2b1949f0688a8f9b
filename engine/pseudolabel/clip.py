"""CLIP pseudo-labels: zero-shot prompts (`clipzs`) and TIP-Adapter's few-shot cache (`tipzs`).

    model, tokenizer = load_clip("ViT-B-16", "openai")          # weights from the store, never downloaded here
    m = build_clipzs(["Smiling", "Male"])                        # one prompt per class value of each concept
    m = build_tipzs(["Smiling"], dataset="celebahq", data_root="~/data/CelebAMask-HQ", shots=128)
    logits = m.logits(images)                                    # [B, 3, H, W] in [-1, 1] -> K x [B, n_k]

As in the original project (models/clip_pseudolabeler.py of Trustworthy-ML-Lab/posthoc-generative-cbm):
a concept with values v_0 .. v_{n-1} gets one text prompt per value; its logits are
100 * cos(image feature, prompt feature), and softmax turns them into probabilities.
TIP-Adapter (Zhang et al. 2022, training-free) adds a cache of N labelled images per concept:
    logits_tip = logits_clip + alpha * exp(-beta * (1 - image_feature @ cache_keys)) @ cache_values.

Preprocessing of a generated image: [-1, 1] -> [0, 1], bicubic resize to the CLIP model's input size
(align_corners=False), then CLIP's mean/std normalisation. The original built a normaliser whose
result was never used (its images reached CLIP un-normalised); we apply CLIP's real preprocessing,
so pseudo-labels can differ slightly from the original's on borderline images.

open_clip is imported lazily (it pulls in timm); building a model never lets open_clip download:
the architecture comes from open_clip's bundled config and the weights from a local file or the
gencbm store (`gencbm download clip-vit-b-16-openai`).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import ArtifactMissingError, CorruptFileError, UsageError
from engine.pseudolabel.base import PseudoLabeler

__all__ = [
    "default_prompts", "parse_prompt_overrides", "resolve_prompts", "load_clip", "ClipZeroShot", "TipAdapter",
    "build_clipzs", "build_tipzs", "OPENAI_MEAN", "OPENAI_STD", "LOGIT_SCALE",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's per-channel mean of [0, 1] RGB
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)  # and standard deviation
LOGIT_SCALE = 100.0  # the original multiplies cosine similarities by 100 (CLIP's trained temperature, rounded)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_ENCODE_BATCH = 64  # cache images encoded per forward pass

# The original's prompt pairs (value 0, value 1) for the CelebA attributes it uses.
_CELEBA_PROMPTS: dict[str, tuple[str, str]] = {
    "Attractive": ("NOT Attractive", "Attractive"),
    "Wearing_Lipstick": ("NO Lipstick", "Wearing Lipstick"),
    "Mouth_Slightly_Open": ("Mouth Closed", "Mouth Slightly Open"),
    "Smiling": ("NOT Smiling", "Smiling"),
    "High_Cheekbones": ("Low Cheekbones", "High Cheekbones"),
    "Heavy_Makeup": ("NO Makeup", "Heavy Makeup"),
    "Male": ("Female", "Male"),
    "Arched_Eyebrows": ("Straight Eyebrows", "Arched Eyebrows"),
    "Wavy_Hair": ("Straight Hair", "Wavy Hair"),
}


# ------------------------------------------------------------------------------------------------
# Prompts.


def default_prompts(concept: str) -> list[str]:
    """The text prompts of a binary concept: [value 0, value 1].

    The original's pairs for its CelebA attributes (name matched forgivingly: `wearing lipstick` is
    `Wearing_Lipstick`), otherwise "NOT <name>" / "<name>" with underscores as spaces.
    """
    from engine.concepts import normalize_concept_name

    key = normalize_concept_name(concept)
    for name, pair in _CELEBA_PROMPTS.items():
        if normalize_concept_name(name) == key:
            return list(pair)
    readable = " ".join(str(concept).replace("_", " ").split())
    if not readable:
        raise UsageError("a concept name is empty")
    return [f"NOT {readable}", readable]


def parse_prompt_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """CLI items `CONCEPT=prompt for value 0|prompt for value 1[|...]` -> {concept: prompts}.

    Each value gets one prompt, in order (value 0 first); n prompts give the concept n classes.
    UsageError naming the item for a missing `=`, an empty name, fewer than two prompts, an empty
    prompt, or a concept given twice.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        text = str(item)
        name, sep, rest = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"bad prompt override {text!r}: expected CONCEPT=PROMPT0|PROMPT1 (e.g. Smiling=a face|a smiling face)")
        prompts = [p.strip() for p in rest.split("|")]
        if len(prompts) < 2:
            raise UsageError(f"bad prompt override {text!r}: give one prompt per value, at least two, separated by '|'")
        if any(not p for p in prompts):
            raise UsageError(f"bad prompt override {text!r}: a prompt is empty")
        if name in out:
            raise UsageError(f"bad prompt override {text!r}: {name} was already given prompts")
        out[name] = prompts
    return out


def resolve_prompts(concepts: Sequence[str], overrides: dict[str, list[str]] | None = None) -> list[list[str]]:
    """The prompts of each concept, in order: the override where one names it, else default_prompts.

    Override names are matched forgivingly against `concepts` (engine.concepts.match_concept); an
    override naming no selected concept is a UsageError (most likely a typo).
    """
    from engine.concepts import match_concept

    chosen: dict[str, list[str]] = {}
    for name, prompts in (overrides or {}).items():
        hit = match_concept(name, concepts, what="concept (in a prompt override)")
        if hit in chosen:
            raise UsageError(f"two prompt overrides name the concept {hit}")
        if len(prompts) < 2:
            raise UsageError(f"the prompt override of {hit} needs at least two prompts (one per value)")
        chosen[hit] = [str(p) for p in prompts]
    return [chosen.get(c, default_prompts(c)) for c in concepts]


# ------------------------------------------------------------------------------------------------
# Building CLIP.


def _known_model(model_name: str) -> tuple[str, dict[str, Any]]:
    """(open_clip's config name, its config) or UsageError listing some known names."""
    import open_clip

    if ":" in model_name:
        raise UsageError(
            f"CLIP model {model_name!r}: only open_clip's built-in architectures are supported (no hf-hub: or local-dir:); "
            "pass the weights as a file instead"
        )
    name = model_name.strip().replace("/", "-")
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        import difflib

        known = open_clip.list_models()
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
        usual = [m for m in ("ViT-B-16", "ViT-B-32", "ViT-L-14") if m in known]
        shown = list(dict.fromkeys(close + usual))[:8] or known[:8]
        raise UsageError(f"unknown CLIP model {model_name!r} (e.g. {', '.join(shown)}; open_clip knows {len(known)})")
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name") or "siglip" in name.lower():
        raise UsageError(
            f"CLIP model {name} needs a text model or tokenizer from the Hugging Face hub, which gencbm does not fetch; "
            "use a CLIP with open_clip's own text tower, e.g. ViT-B-16"
        )
    return name, cfg


def _weights_artifact(model_name: str, tag: str):
    """The registry entry holding open_clip's `model_name`/`tag` weights, or None."""
    from engine.store.registry import load_registry

    reg = load_registry()
    base = model_name.removesuffix("-quickgelu")
    art = reg.find(tag)
    if art is not None and art.kind == "weights" and art.settings.get("open_clip_model"):  # named the artifact itself
        if art.settings["open_clip_model"] != base:
            raise UsageError(f"{art.name} holds weights of the CLIP model {art.settings['open_clip_model']}, not {model_name}")
        return art
    for art in reg:
        s = art.settings
        if art.kind == "weights" and s.get("open_clip_model") == base and str(s.get("pretrained", "")).lower() == tag.lower():
            return art
    return None


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_WEIGHT_SUFFIXES) or value.startswith("~")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors (safetensors) or .bin/.pt/.pth (torch.load, weights only)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactMissingError(f"no such CLIP weights file: {path}") from None
    except Exception as exc:  # safetensors, pickle and zip errors alike
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptFileError(f"cannot read CLIP weights {path}: {detail}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CorruptFileError(f"{path} is not a CLIP state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in sd):  # saved from DataParallel / DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _fit_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], path: Path) -> None:
    """Load `sd` into `model` strictly; CorruptFileError naming the file when it does not fit."""
    sd = dict(sd)
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        from open_clip.model import convert_to_custom_text_state_dict  # a text tower kept under `text.`

        sd = convert_to_custom_text_state_dict(sd)
    for key in ("logit_scale", "logit_bias"):  # scalar in some releases, [1] in others
        have = getattr(model, key, None)
        if key in sd and isinstance(have, torch.Tensor) and sd[key].numel() == have.numel():
            sd[key] = sd[key].reshape(have.shape)
    if getattr(model, "logit_bias", None) is None:
        sd.pop("logit_bias", None)
    sd.pop("text.transformer.embeddings.position_ids", None)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "mismatch")
        raise CorruptFileError(f"CLIP weights {path} do not fit the model's architecture ({detail[:300]})") from None


def load_clip(
    model_name: str = "ViT-B-16",  # an open_clip architecture name (ViT-B/16 and ViT-B-16 alike)
    pretrained: str | os.PathLike = "openai",  # a weights file, or a tag / registry name of stored weights
    device: str | torch.device = "cpu",
    *,
    quick_gelu: bool | None = None,  # None: the stored weights' setting, else the architecture's
) -> tuple[nn.Module, Any]:
    """(CLIP model in eval mode without gradients, its tokenizer); nothing is downloaded.

    `pretrained` is (a) a local file (.safetensors, or .bin/.pt/.pth loaded with weights_only) or
    (b) a tag such as "openai" whose weights are a gencbm store artifact (ViT-B-16 + openai:
    `clip-vit-b-16-openai`; ArtifactMissingError naming `gencbm download NAME` when not stored).
    OpenAI's CLIPs were trained with QuickGELU, which open_clip's plain `ViT-B-16` config lacks; the
    store's setting turns it on, while for a file of OpenAI weights pass quick_gelu=True (or use
    the model name `ViT-B-16-quickgelu`).
    """
    import open_clip

    name, _cfg = _known_model(str(model_name))
    text = str(pretrained).strip()
    if not text:
        raise UsageError("no CLIP weights given: pass a file or a tag such as 'openai'")
    preprocess: dict[str, Any] = {}
    path = Path(text).expanduser()
    if path.is_file() or _looks_like_path(text):
        if not path.is_file():
            raise ArtifactMissingError(f"no such CLIP weights file: {path}")
        label = f"{name}/{path.name}"
    else:
        art = _weights_artifact(name, text)
        if art is None:
            stored = sorted({str(a.settings.get("pretrained")) for a in _all_clip_artifacts() if a.settings.get("open_clip_model") == name.removesuffix("-quickgelu")})
            hint = f" (gencbm knows the {name} weights {', '.join(stored)})" if stored else ""
            raise UsageError(
                f"no gencbm artifact holds open_clip's {name} weights {text!r}{hint}; pass a weights file "
                "(.safetensors, .bin, .pt or .pth) instead"
            )
        from engine.store.artifacts import resolve_artifact

        folder = resolve_artifact(art.name)  # ArtifactMissingError naming `gencbm download NAME`
        weights_file = art.settings.get("weights_file") or art.file
        path = folder / str(weights_file) if folder.is_dir() else folder
        if not path.is_file():
            raise ArtifactMissingError(f"stored artifact {art.name} has no {weights_file}; fetch it again with `gencbm download {art.name} --force`")
        tag_cfg = open_clip.get_pretrained_cfg(name, str(art.settings.get("pretrained", text))) or {}
        for key in ("mean", "std", "interpolation", "resize_mode"):
            if key in tag_cfg:
                preprocess[key] = tag_cfg[key]
        for key in ("mean", "std"):
            if key in art.settings:
                preprocess[key] = tuple(float(v) for v in art.settings[key])
        if quick_gelu is None:
            qg = art.settings.get("quick_gelu", tag_cfg.get("quick_gelu"))
            quick_gelu = None if qg is None else bool(qg)
        label = f"{name}/{art.settings.get('pretrained', text)}"

    extra: dict[str, Any] = {} if quick_gelu is None else {"quick_gelu": bool(quick_gelu)}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": the weights come next
    try:
        model = open_clip.create_model(
            name, pretrained=None, device="cpu", pretrained_image=False, pretrained_text=False,
            force_preprocess_cfg=preprocess or None, **extra,
        )
    finally:
        logging.disable(previous)
    _fit_state_dict(model, _read_state_dict(path), path)
    model = model.to(device).eval().requires_grad_(False)
    model.gencbm_label = label  # for describe(): "ViT-B-16/openai"
    tokenizer = open_clip.get_tokenizer(name)
    return model, tokenizer


def _all_clip_artifacts():
    from engine.store.registry import load_registry

    return [a for a in load_registry() if a.kind == "weights" and a.settings.get("open_clip_model")]


def _preprocess_cfg(model: nn.Module) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...], str]:
    """(input size (H, W), mean, std, interpolation) of a CLIP model: open_clip's config where it has
    one, OpenAI's statistics and bicubic otherwise."""
    visual = getattr(model, "visual", model)
    cfg: dict[str, Any] = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = getattr(visual, "image_size", None) or cfg.get("size") or 224
    if isinstance(size, int):
        size = (size, size)
    mean = cfg.get("mean") or getattr(visual, "image_mean", None) or OPENAI_MEAN
    std = cfg.get("std") or getattr(visual, "image_std", None) or OPENAI_STD
    interp = cfg.get("interpolation", "bicubic")
    if interp not in ("bicubic", "bilinear"):
        interp = "bicubic"
    return (int(size[0]), int(size[1])), tuple(float(v) for v in mean), tuple(float(v) for v in std), interp


# ------------------------------------------------------------------------------------------------
# The pseudo-labelers.


class ClipZeroShot(PseudoLabeler):
    """CLIP zero-shot: logits_k = 100 * normalised image feature @ normalised prompt features_k.T."""

    source = "clipzs"

    def __init__(self, concepts: Sequence[str], prompts: Sequence[Sequence[str]], model: nn.Module, tokenizer: Any):
        if len(prompts) != len(concepts):
            raise UsageError(f"{len(concepts)} concepts but prompts for {len(prompts)}")
        for name, p in zip(concepts, prompts):
            if len(p) < 2:
                raise UsageError(f"concept {name} needs at least two prompts (one per value), got {len(p)}")
        super().__init__(list(concepts), [len(p) for p in prompts])
        self.prompts = [list(map(str, p)) for p in prompts]
        self.clip = model.eval().requires_grad_(False)
        size, mean, std, interp = _preprocess_cfg(model)
        self.image_size = size  # (H, W) CLIP's input
        self.interpolation = interp
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        device = self._device()
        with torch.no_grad():
            for k, p in enumerate(self.prompts):
                tokens = tokenizer(p).to(device)  # [n_k, context_length]
                feats = model.encode_text(tokens).float()  # [n_k, D]
                self.register_buffer(f"text_{k}", F.normalize(feats, dim=-1), persistent=False)  # [n_k, D]

    def _device(self) -> torch.device:
        for t in self.clip.parameters():
            return t.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> "ClipZeroShot":
        super().train(mode)
        self.clip.eval()  # CLIP stays frozen and deterministic whatever the caller's mode
        return self

    def text_features(self, k: int) -> torch.Tensor:  # [n_k, D], L2-normalised
        return getattr(self, f"text_{k}")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> [B, 3, S, S]
        """[-1, 1] -> [0, 1] -> resize to CLIP's size (bicubic, align_corners=False) -> (x - mean) / std.

        No clamp to [0, 1]: a clamp would zero the gradients of slightly out-of-range pixels.
        (The original's normaliser was a no-op by accident; this is CLIP's real preprocessing.)
        """
        x = (images.float() + 1.0) * 0.5  # [B, 3, H, W] in [0, 1]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode=self.interpolation, align_corners=False)
        return (x - self.mean) / self.std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] in [-1, 1] -> [B, D]
        x = self.preprocess(images)
        dtype = next(self.clip.parameters()).dtype
        feats = self.clip.encode_image(x.to(dtype)).float()  # [B, D]
        return F.normalize(feats, dim=-1)

    def logits_from_features(self, feats: torch.Tensor) -> list[torch.Tensor]:  # [B, D] -> K x [B, n_k]
        return [LOGIT_SCALE * feats @ self.text_features(k).T for k in range(len(self.concepts))]

    def logits(self, images: torch.Tensor) -> list[torch.Tensor]:  # [B, 3, H, W] in [-1, 1] -> K x [B, n_k]
        return self.logits_from_features(self.image_features(images))

    def describe(self) -> str:
        return f"{self.source} {getattr(self.clip, 'gencbm_label', type(self.clip).__name__)}"


class TipAdapter(ClipZeroShot):
    """TIP-Adapter (training-free): zero-shot logits plus a cache of labelled images per concept.

    cache_images[k]: [N_k, 3, H, W] in [-1, 1] (preprocessed like generated images);
    cache_labels[k]: [N_k] int64 values in [0, n_k). Keys: normalised CLIP features [D, N_k];
    values: one-hot labels [N_k, n_k].
    """

    source = "tipzs"

    def __init__(self, concepts: Sequence[str], prompts: Sequence[Sequence[str]], model: nn.Module, tokenizer: Any,
                 cache_images: Sequence[torch.Tensor], cache_labels: Sequence[torch.Tensor], *, alpha: float = 1.0,
                 beta: float = 5.5):
        super().__init__(concepts, prompts, model, tokenizer)
        if len(cache_images) != len(self.concepts) or len(cache_labels) != len(self.concepts):
            raise UsageError(f"TIP-Adapter needs one image cache per concept ({len(self.concepts)})")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.shots: list[int] = []
        encoded: list[tuple[torch.Tensor, torch.Tensor]] = []  # (images, keys): one encoding per distinct image set
        for k, (imgs, labels) in enumerate(zip(cache_images, cache_labels)):
            name, n_k = self.concepts[k], self.num_classes[k]
            labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
            if imgs.ndim != 4 or imgs.shape[1] != 3 or imgs.shape[0] != labels.shape[0] or imgs.shape[0] == 0:
                raise UsageError(f"TIP-Adapter cache of {name}: images [N, 3, H, W] and labels [N] with N > 0 "
                                 f"(got {tuple(imgs.shape)} and {tuple(labels.shape)})")
            if int(labels.min()) < 0 or int(labels.max()) >= n_k:
                raise UsageError(f"TIP-Adapter cache of {name}: labels must lie in 0..{n_k - 1} (one per prompt)")
            keys = next((kk for im, kk in encoded if im.shape == imgs.shape and torch.equal(im, imgs)), None)
            if keys is None:
                keys = self._encode_cache(imgs)  # [D, N]
                encoded.append((imgs, keys))
            self.register_buffer(f"cache_keys_{k}", keys, persistent=False)  # [D, N_k]
            values = F.one_hot(labels, n_k).float()  # [N_k, n_k]
            self.register_buffer(f"cache_values_{k}", values.to(keys.device), persistent=False)
            self.shots.append(int(labels.shape[0]))

    @torch.no_grad()
    def _encode_cache(self, images: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] in [-1, 1] -> [D, N]
        device = self._device()
        feats = [self.image_features(images[i:i + _ENCODE_BATCH].to(device)) for i in range(0, images.shape[0], _ENCODE_BATCH)]
        return torch.cat(feats).T.contiguous()

    def cache_keys(self, k: int) -> torch.Tensor:  # [D, N_k]
        return getattr(self, f"cache_keys_{k}")

    def cache_values(self, k: int) -> torch.Tensor:  # [N_k, n_k]
        return getattr(self, f"cache_values_{k}")

    def logits_from_features(self, feats: torch.Tensor) -> list[torch.Tensor]:  # [B, D] -> K x [B, n_k]
        out = []
        for k, zero_shot in enumerate(super().logits_from_features(feats)):
            affinity = feats @ self.cache_keys(k)  # [B, N_k] cosine similarities
            cache = torch.exp(-self.beta * (1.0 - affinity)) @ self.cache_values(k)  # [B, n_k]
            out.append(zero_shot + self.alpha * cache)
        return out

    def describe(self) -> str:
        shots = self.shots[0] if len(set(self.shots)) == 1 else "/".join(map(str, self.shots))
        return f"{super().describe()} ({shots} shots, alpha {self.alpha:g}, beta {self.beta:g})"


# ------------------------------------------------------------------------------------------------
# Builders used by the training code.


def build_clipzs(
    concepts: Sequence[str],  # concept names, in the bottleneck's order
    *,
    model_name: str = "ViT-B-16",
    pretrained: str | os.PathLike = "openai",
    prompts: dict[str, list[str]] | None = None,  # overrides by concept name (matched forgivingly)
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,  # see load_clip: True for a file of OpenAI weights
) -> ClipZeroShot:
    model, tokenizer = load_clip(model_name, pretrained, device, quick_gelu=quick_gelu)
    return ClipZeroShot(list(concepts), resolve_prompts(list(concepts), prompts), model, tokenizer)


def _cache_from_dataset(dataset: str, data_root, concept: str, shots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `shots` samples of the train split labelled for one concept: ([N, 3, S, S] in [-1, 1], [N])."""
    from engine.data import open_dataset, to_unit_range

    ds = open_dataset(dataset, root=data_root, split="train", concepts=[concept], limit=shots)
    ds.prepare()
    held = ds.in_memory()
    if held is not None:
        images, labels = held[0][:shots], held[1][:shots]
    else:
        n = min(shots, len(ds))
        samples = [ds[i] for i in range(n)]
        if not samples:
            raise UsageError(f"the {dataset} train split has no samples for {concept}")
        images = torch.stack([s[0] for s in samples])  # uint8 [N, 3, S, S]
        labels = torch.stack([s[1] for s in samples])  # [N, 1]
    if images.shape[0] == 0:
        raise UsageError(f"the {dataset} train split has no samples for {concept}")
    if images.shape[0] < shots:
        warnings.warn(f"TIP-Adapter: the {dataset} train split has only {images.shape[0]} samples for {concept} "
                      f"(asked for {shots} shots); using them all", stacklevel=3)
    return to_unit_range(images), labels.reshape(images.shape[0], -1)[:, 0].to(torch.int64)


def build_tipzs(
    concepts: Sequence[str],  # concept names, in the bottleneck's order
    *,
    dataset: str,  # where the labelled cache images come from (its train split)
    data_root: str | os.PathLike | None = None,
    shots: int = 128,  # cache size per concept: the first `shots` training samples (as the original)
    alpha: float = 1.0,  # weight of the cache logits
    beta: float = 5.5,  # sharpness of the affinity
    model_name: str = "ViT-B-16",
    pretrained: str | os.PathLike = "openai",
    prompts: dict[str, list[str]] | None = None,
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,  # see load_clip: True for a file of OpenAI weights
) -> TipAdapter:
    if int(shots) < 1:
        raise UsageError(f"TIP-Adapter needs at least one shot (got {shots})")
    concepts = list(concepts)
    plist = resolve_prompts(concepts, prompts)
    model, tokenizer = load_clip(model_name, pretrained, device, quick_gelu=quick_gelu)
    images, labels = [], []
    for concept in concepts:
        im, lb = _cache_from_dataset(dataset, data_root, concept, int(shots))
        images.append(im)
        labels.append(lb)
    return TipAdapter(concepts, plist, model, tokenizer, images, labels, alpha=alpha, beta=beta)
