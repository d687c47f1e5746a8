"""A deterministic synthetic detection dataset in which input resolution genuinely matters.

Every object is the same kind of thing - a coloured blob (ellipse or rounded rectangle, random colour) - and its class
is only the small mark inside it: a ring, a square outline, a diamond (the square turned by 45 degrees), a plus or a
cross (the plus turned by 45 degrees). The five marks have the same ink area, centre and second moments, so shrinking
an object blurs them into one indistinguishable spot while its coarse blob (and so its box) stays visible. Objects run
from 6 px to 112 px (geometric-mean side) on textured, cluttered backgrounds, and every image is one of three kinds:
``large`` (one object of at least 96x96 px plus up to two medium ones: a smaller input loses nothing), ``small``
(8-20 objects of 6-20 px whose mark strokes are one to three pixels wide: only a larger input resolves them) and
``mixed``. docs/data.md explains the design and gives the default split's numbers.

Determinism: each image is drawn from its own ``numpy.random.Generator`` seeded by (seed, split, index) and is
rendered with elementwise +, -, *, /, sqrt and comparisons only (no BLAS, no libm transcendental functions, no
Pillow resampling), so pixels and JSON do not depend on the machine's maths libraries; object geometry lives on a quarter-pixel grid, so
boxes and areas are exact binary fractions. PNGs are lossless (their compressed bytes can differ between zlib builds;
the pixels cannot).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ardet.files import atomic_write_json

log = logging.getLogger(__name__)

GENERATOR = "ardet.synthetic"
GENERATOR_VERSION = 1  # bump whenever the rendering or the sampling changes: cached datasets are then regenerated

CATEGORIES = ("ring", "square", "diamond", "plus", "cross")  # COCO category ids 1..5 in this order
SPLITS = ("train", "val", "test")
KINDS = {"large": 0.30, "small": 0.35, "mixed": 0.35}  # share of images of each kind in every split
MAX_OBJECTS = 20  # most objects in one image (``small`` images): detectors need at least this many queries
MIN_IMAGE_SIDE = 128  # the largest object (112 px x sqrt(1.25) aspect) must fit fully inside

# Object size bands: geometric-mean side sqrt(w*h) in native pixels. The ``large`` band starts at 100 so that an
# object's box area stays >= 96^2 (COCO "large") after rounding to the quarter-pixel grid; COCO "small" is < 32^2.
TINY, SMALL, MEDIUM, LARGE = (6, 20), (6, 32), (32, 96), (100, 112)
ASPECT = (0.8, 1.25)  # w/h of an object's box
MARK_SIDE = 0.6  # the mark's square, as a fraction of the object's shorter side

# The marks, in units of the mark's side m: a plus of two full-length bars, the plus turned by 45 degrees (cross), an
# annulus (ring), a square outline and the square turned by 45 degrees (diamond). All five cover the same area MARK_INK
# (zeroth moment), are centred (first moment) and have the same isotropic second moment E[u^2] = E[v^2] = MARK_SIGMA2,
# E[uv] = 0, so any blur much wider than a stroke (downscaling) maps them to nearly the same spot: they differ only
# in fourth and higher moments, i.e. in detail. Every stroke is ~0.23-0.26 m wide (~0.15 of the object's size).
MARK_INK = 0.45
# Plus: two bars of width w and length 1, ink 2w - w^2, E[u^2] = (w + w^3 - w^4) / 12 / ink.
_w = 1 - math.sqrt(1 - MARK_INK)
_PLUS_HALF_WIDTH, MARK_SIGMA2 = _w / 2, (_w + _w * _w * _w - _w * _w * _w * _w) / (12 * MARK_INK)
# Annulus r_i..r_o: ink pi (r_o^2 - r_i^2), E[u^2] = (r_o^2 + r_i^2) / 4.
_RING_OUTER2, _RING_INNER2 = ((4 * MARK_SIGMA2 + s * MARK_INK / math.pi) / 2 for s in (1, -1))
# Square outline, half-sides b..a: ink 4 (a^2 - b^2), E[u^2] = (a^2 + b^2) / 3.
_SQUARE_OUTER, _SQUARE_INNER = (math.sqrt((3 * MARK_SIGMA2 + s * MARK_INK / 4) / 2) for s in (1, -1))

SUBPIXELS = 4  # objects: 4x4 samples per pixel, so coverage is exact in 1/16 and marks are antialiased
CLUTTER_SUBPIXELS = 2


@dataclass(frozen=True)
class SyntheticObject:
    """One drawn object: its box ``(x, y, w, h)`` in native pixels (on the quarter-pixel grid, may extend past the
    image edge), its category index into ``CATEGORIES``, its silhouette and its colours (RGB in [0, 1])."""
    box: tuple[float, float, float, float]
    category: int
    silhouette: str  # "ellipse" | "roundrect"
    corner: float  # roundrect corner radius as a fraction of the shorter half-side
    body_rgb: tuple[float, float, float]
    mark_rgb: tuple[float, float, float]


# ---- shapes: inside tests on arrays of subpixel coordinates (relative to the shape's centre) ----------------------

def _mark_inside(category: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v), in units of the mark's side and centred on it, is inked (see ``MARK_INK``)."""
    name = CATEGORIES[category]
    if name in ("diamond", "cross"):  # the square and the plus, turned by 45 degrees
        u, v = (u + v) / np.sqrt(2.0), (u - v) / np.sqrt(2.0)
    if name == "ring":
        r2 = u * u + v * v
        return (r2 >= _RING_INNER2) & (r2 <= _RING_OUTER2)
    au, av = np.abs(u), np.abs(v)
    if name in ("square", "diamond"):
        edge = np.maximum(au, av)
        return (edge >= _SQUARE_INNER) & (edge <= _SQUARE_OUTER)
    return ((au <= _PLUS_HALF_WIDTH) & (av <= 0.5)) | ((av <= _PLUS_HALF_WIDTH) & (au <= 0.5))


def _body_inside(obj: SyntheticObject, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    a, b = obj.box[2] / 2, obj.box[3] / 2
    if obj.silhouette == "ellipse":
        ex, ey = dx / a, dy / b
        return ex * ex + ey * ey <= 1
    r = obj.corner * min(a, b)
    ex, ey = np.maximum(np.abs(dx) - (a - r), 0), np.maximum(np.abs(dy) - (b - r), 0)
    return (np.abs(dx) <= a) & (np.abs(dy) <= b) & (ex * ex + ey * ey <= r * r)


def _segment_inside(x0, y0, x1, y1, half_width):
    """A thick line segment: points within ``half_width`` of it (squared distances, no sqrt)."""
    vx, vy = x1 - x0, y1 - y0
    def inside(x, y):
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy), 0, 1)
        ex, ey = x - x0 - t * vx, y - y0 - t * vy
        return ex * ex + ey * ey <= half_width * half_width
    return inside


def _triangle_inside(pts):
    (ax, ay), (bx, by), (cx, cy) = pts
    def inside(x, y):
        d1 = (x - bx) * (ay - by) - (ax - bx) * (y - by)
        d2 = (x - cx) * (by - cy) - (bx - cx) * (y - cy)
        d3 = (x - ax) * (cy - ay) - (cx - ax) * (y - ay)
        return ~(((d1 < 0) | (d2 < 0) | (d3 < 0)) & ((d1 > 0) | (d2 > 0) | (d3 > 0)))
    return inside


# ---- rasterisation ----------------------------------------------------------------------------------------------

def _subpixel_grid(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, ss: int):
    """The canvas pixels that box (x0, y0)-(x1, y1) touches, and the absolute coordinates of their ss x ss samples."""
    h, w = canvas.shape[:2]
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
    if c0 >= c1 or r0 >= r1:
        return None
    xs = c0 + (np.arange((c1 - c0) * ss) + 0.5) / ss
    ys = r0 + (np.arange((r1 - r0) * ss) + 0.5) / ss
    return (slice(r0, r1), slice(c0, c1)), xs[None, :], ys[:, None]


def _coverage(mask: np.ndarray, ss: int) -> np.ndarray:
    """Fraction of each pixel's ss x ss samples that are inside: an exact multiple of 1/ss^2, as [h, w, 1]."""
    counts = sum(mask[i::ss].view(np.uint8) for i in range(ss))  # strided adds: much faster than a 4-d sum
    return sum(counts[:, j::ss] for j in range(ss))[..., None] / (ss * ss)


def _draw_object(canvas: np.ndarray, obj: SyntheticObject) -> None:
    """Composite ``obj`` onto ``canvas`` ([h, w, 3] float64 in [0, 1], in place), antialiased by 4x4 supersampling."""
    x, y, w, h = obj.box
    grid = _subpixel_grid(canvas, x, y, x + w, y + h, SUBPIXELS)
    if grid is None:
        return
    region, xs, ys = grid
    dx, dy = xs - (x + w / 2), ys - (y + h / 2)
    body = _body_inside(obj, dx, dy)
    side = MARK_SIDE * min(w, h)
    mark = body & _mark_inside(obj.category, dx / side, dy / side)
    cb, cm = _coverage(body, SUBPIXELS), _coverage(mark, SUBPIXELS)
    patch = canvas[region]
    canvas[region] = patch * (1 - cb) + np.asarray(obj.body_rgb) * (cb - cm) + np.asarray(obj.mark_rgb) * cm


def _blend_shape(canvas, inside, bounds, rgb, alpha) -> None:
    grid = _subpixel_grid(canvas, *bounds, CLUTTER_SUBPIXELS)
    if grid is not None:
        region, xs, ys = grid
        a = alpha * _coverage(inside(xs, ys), CLUTTER_SUBPIXELS)
        canvas[region] = canvas[region] * (1 - a) + np.asarray(rgb) * a


def render_object(category: int, width: float, height: float, body_rgb=(0.8, 0.3, 0.2), mark_rgb=(0.1, 0.05, 0.05),
                  background_rgb=(0.5, 0.5, 0.5), silhouette: str = "ellipse", margin: int = 2) -> np.ndarray:
    """One object centred on a flat background, ``[ceil(height) + 2*margin, ceil(width) + 2*margin, 3]`` float64:
    the same drawing as in the dataset, for inspecting classes and sizes."""
    canvas = np.empty((int(np.ceil(height)) + 2 * margin, int(np.ceil(width)) + 2 * margin, 3))
    canvas[:] = background_rgb
    _draw_object(canvas, SyntheticObject((margin, margin, width, height), category, silhouette, 0.5,
                                        tuple(body_rgb), tuple(mark_rgb)))
    return canvas


# ---- sampling ---------------------------------------------------------------------------------------------------

def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _object_colours(rng: np.random.Generator, background_rgb) -> tuple[tuple, tuple]:
    """A random body colour that stands out from the background's base colour, and a mark colour of opposite
    lightness. Colour is drawn independently of the class, so it never tells the class."""
    for _ in range(20):
        body = _hsv_to_rgb(rng.uniform(), rng.uniform(0.25, 1.0), rng.uniform(0.3, 1.0))
        if sum(abs(b - g) for b, g in zip(body, background_rgb)) >= 0.3:
            break
    if 0.299 * body[0] + 0.587 * body[1] + 0.114 * body[2] > 0.45:  # luma: dark mark on light, light on dark
        k = rng.uniform(0.05, 0.3)
        mark = tuple(c * k for c in body)
    else:
        k = rng.uniform(0.6, 0.95)
        mark = tuple(c + (1 - c) * k for c in body)
    return body, mark


def _quarter(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform on the quarter-pixel grid in [lo, hi]."""
    return int(rng.integers(round(lo * 4), round(hi * 4) + 1)) / 4


def _object_sizes(rng: np.random.Generator, kind: str) -> list[tuple[float, float]]:
    """The kind's object sizes as geometric-mean-side ranges, largest first (they are placed in this order)."""
    if kind == "large":  # one COCO-large object and 0-2 medium ones
        return [LARGE] + [MEDIUM] * int(rng.integers(0, 3))
    if kind == "small":
        return [TINY] * int(rng.integers(8, MAX_OBJECTS + 1))
    bands = [LARGE, MEDIUM, SMALL]
    picks = rng.choice(3, size=int(rng.integers(4, 11)), p=[0.1, 0.4, 0.5])
    return [bands[i] for i in sorted(picks)]


def _place_objects(rng: np.random.Generator, kind: str, height: int, width: int, background_rgb):
    """Objects that do not overlap each other (1 px gap). Each may extend past the image edge by at most a quarter
    of its width and of its height (so at least ~56% of it, and almost all of its mark, is visible), except the
    ``large`` image's main object, which lies fully inside. An object that finds no free place in 30 tries is
    dropped. Classes are dealt round-robin from a random start and shuffled, so every image (and so every split) is
    balanced to within one object per image, and class is independent of size, place and colour."""
    sizes = _object_sizes(rng, kind)
    categories = rng.permutation((int(rng.integers(len(CATEGORIES))) + np.arange(len(sizes))) % len(CATEGORIES))
    placed: list[SyntheticObject] = []
    for n, (band, category) in enumerate(zip(sizes, categories)):
        s = _quarter(rng, *band)
        aspect = np.sqrt(rng.uniform(*ASPECT))
        w, h = round(s * aspect * 4) / 4, round(s / aspect * 4) / 4
        out = 0.0 if kind == "large" and n == 0 else 0.25
        for _ in range(30):
            x = _quarter(rng, -out * w, width - (1 - out) * w)
            y = _quarter(rng, -out * h, height - (1 - out) * h)
            if all(x + w + 1 <= o.box[0] or o.box[0] + o.box[2] + 1 <= x or
                   y + h + 1 <= o.box[1] or o.box[1] + o.box[3] + 1 <= y for o in placed):
                break
        else:
            continue
        body, mark = _object_colours(rng, background_rgb)
        placed.append(SyntheticObject((x, y, w, h), int(category), "ellipse" if rng.uniform() < 0.5 else "roundrect",
                                      rng.uniform(0.3, 1.0), body, mark))
    return placed


def _subdivide(grid: np.ndarray) -> np.ndarray:
    """Midpoint subdivision of a grid of node values: [a, b, c] -> [2a - 1, 2b - 1, c]."""
    a, b, c = grid.shape
    rows = np.empty((2 * a - 1, b, c))
    rows[0::2], rows[1::2] = grid, (grid[:-1] + grid[1:]) * 0.5
    out = np.empty((2 * a - 1, 2 * b - 1, c))
    out[:, 0::2], out[:, 1::2] = rows, (rows[:, :-1] + rows[:, 1:]) * 0.5
    return out


def _noise_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multi-scale colour value noise, [h, w, 3]: random node values (a grey component plus a weaker colour one) on
    grids of 96, 48, ..., 3 px cells, each octave ``roughness`` times the one above, accumulated coarse to fine by
    midpoint subdivision (a pyramid: cheap), then smoothstep-interpolated to pixels at a random phase."""
    amplitude, roughness = rng.uniform(0.08, 0.2), rng.uniform(0.35, 0.85)
    octaves, finest = 6, 3
    # Nodes at the top level such that the finest one has at least n / finest + 2 of them along each axis.
    field = np.zeros([-(-(n // finest + 1) // 2 ** (octaves - 1)) + 1 for n in (height, width)] + [3])
    for level in range(octaves):
        if level:
            field = _subdivide(field)
        field += amplitude * (rng.uniform(-1, 1, size=(*field.shape[:2], 1)) +
                              0.4 * rng.uniform(-1, 1, size=field.shape))
        amplitude *= roughness
    def axis(n):
        t = (np.arange(n) + 0.5) / finest + rng.uniform()
        i = t.astype(np.int64)
        f = t - i
        return i, (f * f * (3 - 2 * f)).astype(np.float32)[:, None]
    (iy, fy), (ix, fx) = axis(height), axis(width)
    field = field.astype(np.float32)
    rows = field[:, ix] * (1 - fx) + field[:, ix + 1] * fx
    return rows[iy] * (1 - fy[:, None]) + rows[iy + 1] * fy[:, None]


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, tuple]:
    """Texture and clutter that are not objects: multi-scale colour noise of random roughness, faint lines, faint
    blobs, and plain triangles (a different silhouette, no mark) as distractors."""
    base = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.85))
    canvas = np.empty((height, width, 3))
    canvas[:] = base
    canvas += _noise_texture(rng, height, width)
    for _ in range(int(rng.integers(0, 7))):  # faint lines, 1-5 px thick, 10-100 px long
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        length, hw = rng.uniform(10, 100), rng.uniform(0.5, 2.5)
        dx, dy = rng.uniform(-1, 1), rng.uniform(-1, 1)
        norm = np.sqrt(dx * dx + dy * dy) + 1e-9
        x1, y1 = x0 + dx / norm * length, y0 + dy / norm * length
        bounds = (min(x0, x1) - hw, min(y0, y1) - hw, max(x0, x1) + hw, max(y0, y1) + hw)
        _blend_shape(canvas, _segment_inside(x0, y0, x1, y1, hw), bounds, rng.uniform(0, 1, 3), rng.uniform(0.15, 0.5))
    for _ in range(int(rng.integers(0, 5))):  # faint blobs, 10-80 px
        a, b = rng.uniform(5, 40), rng.uniform(5, 40)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        inside = lambda x, y, cx=cx, cy=cy, a=a, b=b: (x - cx) * (x - cx) / (a * a) + (y - cy) * (y - cy) / (b * b) <= 1
        _blend_shape(canvas, inside, (cx - a, cy - b, cx + a, cy + b), rng.uniform(0, 1, 3), rng.uniform(0.1, 0.3))
    for _ in range(int(rng.integers(0, 4))):  # distractor triangles, 6-40 px
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(3, 20)
        pts = [(cx + rng.uniform(-r, r), cy + rng.uniform(-r, r)) for _ in range(3)]
        bounds = (cx - r, cy - r, cx + r, cy + r)
        _blend_shape(canvas, _triangle_inside(pts), bounds, rng.uniform(0, 1, 3), rng.uniform(0.5, 0.9))
    return np.clip(canvas, 0, 1), base


def render_image(seed: int, split: str, index: int, kind: str, image_size: tuple[int, int] = (192, 192)):
    """Image ``index`` of ``split``: ``(pixels uint8 [h, w, 3], objects)``; a pure function of its arguments."""
    height, width = image_size
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    canvas, base = _background(rng, height, width)
    objects = _place_objects(rng, kind, height, width, base)
    for obj in objects:
        _draw_object(canvas, obj)
    return np.rint(np.clip(canvas, 0, 1) * 255).astype(np.uint8), objects


def clipped_box(obj: SyntheticObject, height: int, width: int) -> list[float]:
    """The object's box ``[x, y, w, h]`` clipped to the image: the COCO ``bbox`` (its area is the COCO ``area``)."""
    x, y, w, h = obj.box
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    return [x0, y0, x1 - x0, y1 - y0]


# ---- datasets ---------------------------------------------------------------------------------------------------

def split_kinds(seed: int, split: str, num_images: int) -> list[str]:
    """Each image's kind: the ``KINDS`` shares rounded to whole images (remainder to ``mixed``), in seeded order."""
    counts = {k: int(round(share * num_images)) for k, share in KINDS.items() if k != "mixed"}
    counts["mixed"] = num_images - sum(counts.values())
    kinds = [k for k in KINDS for _ in range(counts[k])]
    order = np.random.default_rng([seed, SPLITS.index(split)]).permutation(num_images)
    return [kinds[i] for i in order]


def make_split(out_dir: str | os.PathLike, seed: int, split: str, num_images: int,
               image_size: tuple[int, int] = (192, 192), progress: bool = False) -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json`` (COCO) for one split; returns the JSON path.

    A split already there with the same generator version and parameters is kept as it is; one made with other
    parameters is replaced (its images are deleted first); a folder with any other ``annotations.json`` is an error.
    """
    height, width = _check_size(image_size)
    _check_count(split, num_images)
    out_dir, info = Path(out_dir), _info(seed, split, num_images, (height, width))
    ann_path = out_dir / "annotations.json"
    if ann_path.exists():
        try:
            old = json.loads(ann_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{ann_path} exists and is not valid JSON ({e}); choose another output folder") from None
        made_here = isinstance(old, dict) and isinstance(old.get("info"), dict) and isinstance(old.get("images"), list)
        if not made_here or old["info"].get("generator") != GENERATOR:
            raise ValueError(f"{ann_path} exists and was not made by ardet make-data; choose another output folder")
        if old["info"] == info:
            log.info("%s: already generated with these parameters, kept", ann_path)
            return ann_path
        for image in old["images"]:
            (out_dir / "images" / image["file_name"]).unlink(missing_ok=True)
        ann_path.unlink()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    images, annotations = [], []
    kinds = split_kinds(seed, split, num_images)
    from tqdm import tqdm
    for index in tqdm(range(num_images), desc=f"make-data {split}", unit="img", disable=not progress):
        pixels, objects = render_image(seed, split, index, kinds[index], (height, width))
        name = f"{index:06d}.png"
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
        (out_dir / "images" / name).write_bytes(buf.getvalue())
        images.append({"id": index + 1, "file_name": name, "width": width, "height": height, "kind": kinds[index]})
        for obj in objects:
            box = clipped_box(obj, height, width)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": obj.category + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "marked-blob"} for i, name in enumerate(CATEGORIES)]
    # Written last and atomically: a split with annotations.json is complete.
    atomic_write_json(ann_path, {"info": info, "licenses": [], "images": images, "annotations": annotations,
                                 "categories": categories})
    return ann_path


def make_dataset(out_dir: str | os.PathLike, seed: int = 0, num_train: int = 2000, num_val: int = 100,
                 num_test: int = 100, image_size: int | tuple[int, int] = 192, progress: bool = False) -> dict[str, Path]:
    """The synthetic dataset under ``out_dir``: ``{train,val,test}/images/*.png`` and ``{train,val,test}/annotations.json``
    (COCO; ``file_name`` is relative to ``images/``; every image entry also has ``kind``: large | small | mixed).
    ``image_size`` is the native size, ``H`` or ``(H, W)``. A count of 0 skips that split: one already under
    ``out_dir`` is left as it is (the demo's test split and a training run's train split share ``data/demo``).
    Returns ``{split: annotations path}`` for the splits written or kept.

    Each image depends only on (seed, split, its index, image_size): changing the number of training images leaves
    val and test unchanged."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    counts = dict(zip(SPLITS, (num_train, num_val, num_test)))
    for split, n in counts.items():  # all checked before any split is written
        _check_count(split, n)
    return {split: make_split(Path(out_dir) / split, seed, split, n, size, progress)
            for split, n in counts.items() if n != 0}


MAX_IMAGES_PER_SPLIT = 10_000_000  # far beyond any use; a typo'd count fails at once instead of filling memory


def _check_count(split: str, num_images: int) -> None:
    if not 0 <= num_images <= MAX_IMAGES_PER_SPLIT:
        raise ValueError(f"number of {split} images must be in [0, {MAX_IMAGES_PER_SPLIT:,}], got {num_images}")


def _check_size(image_size) -> tuple[int, int]:
    height, width = (int(v) for v in image_size)
    if min(height, width) < MIN_IMAGE_SIDE or max(height, width) > 4096:
        raise ValueError(f"image size must be between {MIN_IMAGE_SIDE} and 4096 px per side (the largest objects are "
                         f"up to 125 px), got {height}x{width}")
    return height, width


def _info(seed: int, split: str, num_images: int, image_size: tuple[int, int]) -> dict:
    return {"description": "ardet synthetic marked-blob detection data (docs/data.md)", "generator": GENERATOR,
            "generator_version": GENERATOR_VERSION, "seed": int(seed), "split": split, "num_images": int(num_images),
            "image_size": list(image_size), "max_objects_per_image": MAX_OBJECTS}


# ---- summary ----------------------------------------------------------------------------------------------------

COCO_AREA_RANGES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, float("inf"))}


def summarize(annotations_path: str | os.PathLike) -> dict:
    """Counts of one split: images per kind, and objects per COCO area range and per category, overall and per kind."""
    data = json.loads(Path(annotations_path).read_text())
    kind_of = {im["id"]: im["kind"] for im in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    out = {"images": {k: sum(1 for v in kind_of.values() if v == k) for k in KINDS}, "objects": {}}
    for kind in ("all", *KINDS):
        anns = [a for a in data["annotations"] if kind == "all" or kind_of[a["image_id"]] == kind]
        out["objects"][kind] = {
            "total": len(anns),
            # pycocotools' bins: small [0, 32^2], medium (32^2, 96^2], large above (boundaries overlap; a box of area
            # exactly 32^2 falls in both there, here in medium).
            "area": {r: sum(1 for a in anns if lo <= a["area"] < hi) for r, (lo, hi) in COCO_AREA_RANGES.items()},
            "category": {names[c]: sum(1 for a in anns if a["category_id"] == c) for c in names},
        }
    return out


def format_summary(split: str, summary: dict) -> str:
    """A small text table of ``summarize``'s counts."""
    cats = list(summary["objects"]["all"]["category"])
    head = ["kind", "images", "objects", *COCO_AREA_RANGES, *cats]
    rows = [head]
    for kind, counts in summary["objects"].items():
        n_img = sum(summary["images"].values()) if kind == "all" else summary["images"][kind]
        rows.append([kind, n_img, counts["total"], *counts["area"].values(), *counts["category"].values()])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(v).rjust(wd) for v, wd in zip(r, widths)) for r in rows]
    return f"{split}:\n" + "\n".join("  " + line for line in lines)
