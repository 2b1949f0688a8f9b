"""Procedural cartoon faces with known concepts, drawn in batches with anti-aliased signed distances.

`render(concepts, nuisances, size)` -> [B, 3, size, size] in [-1, 1]. Coordinates are in [-1, 1]
(y down), so the same face renders at any size; 32 px is the world's native size. Each concept is
drawn large enough to see at 32 px:
- Smiling: mouth corners curve up;          - Mouth_Slightly_Open: a dark open mouth;
- Male: beard and moustache, short hair;    - Arched_Eyebrows: eyebrows curve up in the middle;
- Wearing_Lipstick: red lips;               - Heavy_Makeup: purple eye shadow and pink blush;
- Eyeglasses: dark rings around the eyes;   - Blond_Hair: yellow hair.
"""

from __future__ import annotations

import torch

from engine.toyfaces.world import CONCEPTS, NUISANCES

_C = {name: i for i, name in enumerate(CONCEPTS)}
_N = {name: i for i, name in enumerate(NUISANCES)}


def _rgb(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


class _Canvas:
    """A batch of RGB images being painted front to back, with per-sample colours."""

    def __init__(self, b: int, size: int, background: torch.Tensor):  # background [B, 3]
        self.img = background[:, :, None, None].expand(b, 3, size, size).clone()
        self.px = 2.0 / size  # one pixel in world units

    def coverage(self, sdf: torch.Tensor) -> torch.Tensor:  # [B, H, W] signed distance -> alpha in [0, 1]
        return (0.5 - sdf / self.px).clamp(0, 1)

    def paint(self, sdf: torch.Tensor, colour: torch.Tensor, opacity: torch.Tensor | float = 1.0) -> None:
        """Paint where sdf < 0 with colour [B, 3] (or [3]); opacity per sample [B] or scalar."""
        a = self.coverage(sdf)
        if isinstance(opacity, torch.Tensor):
            a = a * opacity[:, None, None]
        elif opacity != 1.0:
            a = a * opacity
        if colour.ndim == 1:
            colour = colour[None].expand(a.shape[0], 3)
        self.img = self.img + a[:, None] * (colour[:, :, None, None] - self.img)


def _ellipse(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (all args broadcast to [B, H, W])."""
    k = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (k - 1) * torch.minimum(rx, ry) if isinstance(rx, torch.Tensor) else (k - 1) * min(rx, ry)


def _ring(x, y, cx, cy, r, half_width):
    return (torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r).abs() - half_width


def _segment_band(y, y_curve, half_width):
    """Distance to a horizontal band of half_width around a curve y_curve(x)."""
    return (y - y_curve).abs() - half_width


def _col(v: torch.Tensor) -> torch.Tensor:  # [B] -> [B, 1, 1]
    return v[:, None, None]


def _mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # colours [3] or [B,3], t [B]
    return a + (b - a) * t[:, None]


def render(
    concepts: torch.Tensor,  # [B, 8] in {0, 1} (CONCEPTS order)
    nuisances: torch.Tensor,  # [B, 12] in (0, 1) (NUISANCES order)
    size: int = 32,  # output resolution
) -> torch.Tensor:  # [B, 3, size, size] in [-1, 1]
    if concepts.ndim != 2 or concepts.shape[1] != len(CONCEPTS):
        raise ValueError(f"concepts must be [B, {len(CONCEPTS)}] (got {tuple(concepts.shape)})")
    if nuisances.shape != (concepts.shape[0], len(NUISANCES)):
        raise ValueError(f"nuisances must be [B, {len(NUISANCES)}] (got {tuple(nuisances.shape)})")
    b = concepts.shape[0]
    c = concepts.to(torch.float32)
    n = nuisances.to(torch.float32).clamp(0, 1)

    def has(name: str) -> torch.Tensor:  # [B] 0/1
        return c[:, _C[name]]

    def nu(name: str) -> torch.Tensor:  # [B] in [0, 1]
        return n[:, _N[name]]

    # Pixel-centre grid in world units, then into head coordinates.
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    scale = 0.88 + 0.2 * nu("head_scale")
    x = (gx[None] - _col((nu("head_x") - 0.5) * 0.16)) / _col(scale)
    y = (gy[None] - _col((nu("head_y") - 0.5) * 0.14)) / _col(scale)

    # Colours.
    hue = nu("background_hue") * 6.2832
    light = 0.35 + 0.5 * nu("background_light")
    bg = torch.stack([0.5 + 0.35 * torch.cos(hue), 0.5 + 0.35 * torch.cos(hue - 2.094), 0.5 + 0.35 * torch.cos(hue + 2.094)], 1) * light[:, None] + 0.1
    skin = _mix(_rgb(0.98, 0.84, 0.72), _rgb(0.42, 0.27, 0.17), nu("skin_tone"))
    hc = nu("hair_colour")  # black -> brown -> auburn -> grey, never blond
    dark_hair = torch.stack([
        torch.where(hc < 0.33, 0.08 + 0.9 * hc, torch.where(hc < 0.66, 0.38 + 0.5 * (hc - 0.33), 0.55 + 0.2 * (hc - 0.66))),
        torch.where(hc < 0.33, 0.06 + 0.5 * hc, torch.where(hc < 0.66, 0.22 - 0.2 * (hc - 0.33), 0.16 + 1.2 * (hc - 0.66))),
        torch.where(hc < 0.33, 0.05 + 0.3 * hc, torch.where(hc < 0.66, 0.12 - 0.1 * (hc - 0.33), 0.09 + 1.3 * (hc - 0.66))),
    ], 1)
    blond = _mix(_rgb(1.0, 0.9, 0.45), _rgb(0.93, 0.78, 0.3), hc)
    hair = torch.where(has("Blond_Hair")[:, None] > 0, blond, dark_hair)
    eye_t = nu("eye_colour")
    iris = torch.where((eye_t < 0.5)[:, None], _mix(_rgb(0.35, 0.2, 0.08), _rgb(0.2, 0.45, 0.2), eye_t * 2), _mix(_rgb(0.2, 0.45, 0.2), _rgb(0.15, 0.35, 0.8), eye_t * 2 - 1))
    lips_plain = skin * 0.6 + _rgb(0.2, 0.0, 0.02)
    lips = torch.where(has("Wearing_Lipstick")[:, None] > 0, _rgb(0.86, 0.05, 0.18).expand(b, 3), lips_plain)

    canvas = _Canvas(b, size, bg)
    male = has("Male")
    fw = 0.5 + 0.1 * _col(nu("face_width"))
    fh = 0.62 + 0.08 * _col(nu("face_height"))
    fcy = 0.08

    # Long hair behind the head (women): long or bob by style.
    style = nu("hair_style")
    back_bottom = _col(torch.where(style < 0.5, torch.full_like(style, 0.98), torch.full_like(style, 0.45)))
    back = torch.maximum(_ellipse(x, y, 0.0, fcy - 0.05, fw + 0.17, fh + 0.12), y - back_bottom)
    canvas.paint(back, hair, opacity=1 - male)

    # Neck and face.
    canvas.paint(torch.maximum((x.abs() - 0.2), (0.45 - y)), skin * 0.9)
    canvas.paint(_ellipse(x, y, 0.0, fcy, fw, fh), skin)

    # Hair on top: a cap above a hairline; men's is shorter and tighter.
    hairline = -0.28 - 0.1 * (x / fw) ** 2 + _col(0.05 * male) + _col((style - 0.5) * 0.12) * x
    cap = torch.maximum(_ellipse(x, y, 0.0, fcy - 0.04, fw + 0.09 - _col(0.04 * male), fh + 0.06 - _col(0.03 * male)), y - hairline)
    canvas.paint(cap, hair)

    # Beard and moustache (Male): hair-coloured (darkened) lower face.
    beard_col = torch.where(has("Blond_Hair")[:, None] > 0, blond * 0.75, dark_hair * 0.8 + 0.02)
    beard = torch.maximum(_ellipse(x, y, 0.0, fcy, fw + 0.01, fh + 0.01), 0.3 - y)
    canvas.paint(beard, beard_col, opacity=male)

    # Make-up: blush on the cheeks and eye shadow (Heavy_Makeup).
    # Paired features are drawn once on |x| (the face is left-right symmetric).
    xa = x.abs()
    makeup = has("Heavy_Makeup")
    canvas.paint(_ellipse(xa, y, 0.3, 0.22, 0.12, 0.08), _rgb(0.95, 0.42, 0.55), opacity=0.75 * makeup)
    canvas.paint(_ellipse(xa, y, 0.2, -0.11, 0.14, 0.085), _rgb(0.55, 0.2, 0.7), opacity=0.9 * makeup)

    # Eyes: white, iris, pupil.
    canvas.paint(_ellipse(xa, y, 0.2, -0.04, 0.1, 0.065), _rgb(0.97, 0.97, 0.97))
    canvas.paint(_ellipse(xa, y, 0.2, -0.04, 0.055, 0.055), iris)
    canvas.paint(_ellipse(xa, y, 0.2, -0.04, 0.025, 0.025), _rgb(0.02, 0.02, 0.02))

    # Eyebrows: straight or arched (Arched_Eyebrows), thick enough for 32 px.
    arched = _col(has("Arched_Eyebrows"))
    brow_col = torch.where(has("Blond_Hair")[:, None] > 0, _rgb(0.55, 0.38, 0.12).expand(b, 3), dark_hair * 0.4)
    u = (xa - 0.2) / 0.13
    curve = -0.19 - arched * 0.13 * (1 - u**2) + (1 - arched) * 0.015 * u
    brow = torch.maximum(_segment_band(y, curve, 0.04 + 0.01 * _col(male)), u.abs() - 1)
    canvas.paint(brow, brow_col)

    # Mouth: a lip band, smiling corners curve up; open mouth shows a dark inside.
    mw = 0.2 + 0.07 * _col(nu("mouth_width"))
    my = 0.36
    um = x / mw
    bend = torch.where(_col(has("Smiling")) > 0, torch.full_like(mw, 0.17), torch.full_like(mw, -0.035))
    centre = my - bend * (um**2 - 0.35)  # corners (|u| = 1) are higher when smiling
    open_h = 0.075 * _col(has("Mouth_Slightly_Open")) * (1 - um**2).clamp(min=0)
    lip_half = 0.055 + open_h
    mouth = torch.maximum(_segment_band(y, centre, lip_half), um.abs() - 1)
    canvas.paint(mouth, lips)
    inside = torch.maximum(_segment_band(y, centre, (open_h - 0.02).clamp(min=0)), um.abs() - 0.88)
    canvas.paint(inside, _rgb(0.22, 0.03, 0.05), opacity=has("Mouth_Slightly_Open"))
    seam = torch.maximum(_segment_band(y, centre, 0.012), um.abs() - 0.95)  # the dark line between the lips
    canvas.paint(seam, _rgb(0.25, 0.05, 0.06), opacity=1 - has("Mouth_Slightly_Open"))

    # Moustache over the upper lip (Male).
    moust = torch.maximum(_segment_band(y, centre - lip_half - 0.04, 0.03), um.abs() - 1.05)
    canvas.paint(moust, beard_col, opacity=male)

    # Eyeglasses: dark rings and a bridge.
    glasses = has("Eyeglasses")
    canvas.paint(_ring(xa, y, 0.2, -0.04, 0.14, 0.028), _rgb(0.05, 0.05, 0.08), opacity=glasses)
    bridge = torch.maximum((y + 0.06).abs() - 0.025, xa - 0.07)
    canvas.paint(bridge, _rgb(0.05, 0.05, 0.08), opacity=glasses)

    return (canvas.img.clamp(0, 1) * 2 - 1).contiguous()
