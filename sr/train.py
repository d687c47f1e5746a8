"""Training LIIF with the reference recipe: per sample a scale s ~ U(scale_min, scale_max), an HR crop of
round(patch * s) pixels, its bicubic LR of ``patch`` pixels, flips and transpose, ``queries`` sampled HR pixels with
cell 2 / crop size, L1 in [-1, 1] space, Adam with step decay. Checkpoints are atomic; a run resumes from its last.
Each step's batch has its own seeded generator, so ``train.workers`` loader processes draw batches in parallel (what
keeps a GPU busy) and a resumed or multi-worker run trains on exactly the batches of a plain one.

Distillation (``data.renders`` > 0): each image is instead downscaled once per render at a scale ~ U(scale_min,
scale_max), a teacher LIIF (``data.teacher``) upscales every LR back to HR size once (cached on disk, content-
addressed), and samples are LR patches of those renders with the HR pixels whose centres they cover; the loss is
``hr_weight * L1(HR) + teacher_weight * L1(teacher)``. The teacher (1.1 MMAC per output pixel) would dominate every
training step of a small student, so its outputs are rendered once, not per step.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ardet.config import check_numbers, check_resume, is_number, resume_key, save_config
from ardet.device import resolve_device
from sr.evaluate import IMAGE_SUFFIXES
from sr.hub import create_model, load_model, save_model, weights_file
from sr.liif import grid_coord
from sr.resample import resize

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    name: str = "liif-small"  # a registered architecture (random init) ...
    init: str | None = None  # ... or start from these weights (name or path) of the architecture name and args give
    args: dict[str, Any] = field(default_factory=dict)  # override the named model's LIIF args: {lr_skip: false}
    # Or start the EDSR encoder from a deeper model of the same width (name or path): its head, these residual
    # blocks and its body conv (bench/sr_block_select.py ranks them); the decoder starts at random.
    encoder_init: str | None = None
    encoder_blocks: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.init and self.encoder_init:
            raise ValueError("model.init and model.encoder_init both give a start: set one")
        if bool(self.encoder_init) != bool(self.encoder_blocks):
            raise ValueError("model.encoder_init and model.encoder_blocks go together: the model whose blocks to "
                             "take, and which")


@dataclass
class DataConfig:
    dir: str | None = None  # a folder of HR images
    package: str | None = None  # and/or the image files inside an installed package's folder, e.g. skimage.data
    exclude: list[str] = field(default_factory=list)  # file stems to leave out
    patch: int = 48
    scale_min: float = 1.0
    scale_max: float = 4.0
    queries: int = 2304
    max_side: int | None = None  # centre-crop larger images to this many px a side (the teacher's cost follows area)
    synthetic: int = 0  # plus this many images of the generated detection data's train split (ardet.synthetic)
    # Plus each photo (not the generated images) downscaled by these factors in (0, 1): antialiased bicubic, 8-bit.
    photo_scales: list[float] = field(default_factory=list)
    renders: int = 0  # > 0: that many fixed LR versions per image, needed for a teacher (0: a fresh crop per sample)
    teacher: str | None = None  # distil from this sr.load_model name or path (renders > 0)
    cache: str = "runs/sr/teacher-cache"  # the teacher's outputs, one file per render keyed by teacher weights and LR

    @property
    def largest_crop(self) -> int:
        """The side of the largest HR crop a sample takes: an image must have at least this."""
        return round(self.patch * self.scale_max)

    def __post_init__(self):
        check_numbers(self, "data", positive=("patch", "queries", "scale_min", "scale_max"),
                      non_negative=("synthetic", "renders"))
        if self.scale_min > self.scale_max:
            raise ValueError(f"data.scale_min must be <= data.scale_max, got {self.scale_min} > {self.scale_max}")
        if self.max_side is not None and self.max_side < self.largest_crop:
            raise ValueError(f"data.max_side {self.max_side} is below data.patch x data.scale_max = "
                             f"{self.largest_crop}: the largest scales could not be cut from the cropped images")
        if not all(is_number(f) and 0 < f < 1 for f in self.photo_scales):
            raise ValueError(f"data.photo_scales must be factors in (0, 1), got {self.photo_scales}")
        smallest = round(self.patch * min(self.scale_min, 1.0))  # a crop's side at the smallest scale
        if not self.renders and self.queries > smallest ** 2:
            raise ValueError(f"data.queries {self.queries} exceeds the {smallest ** 2} HR pixels of a crop at the "
                             f"smallest scale ({smallest}^2)")


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # what train.precision names: the autocast dtype


@dataclass
class TrainConfig:
    steps: int = 1000
    batch: int = 16
    lr: float = 1e-4
    decay_every: int = 200  # lr *= gamma every decay_every steps
    gamma: float = 0.5
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    precision: str = "fp32"  # or "bf16": autocast (weights and optimiser stay float32); 3x faster on a CPU with AMX
    workers: int = 0  # DataLoader processes drawing batches (0: in the training process)
    hr_weight: float = 1.0  # loss = hr_weight * L1 to HR + teacher_weight * L1 to the teacher's output
    teacher_weight: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 50
    out_dir: str = "runs/sr/liif-small"

    def __post_init__(self):
        check_numbers(self, "train", positive=("steps", "batch", "lr", "decay_every", "gamma", "checkpoint_every",
                                               "log_every"), non_negative=("workers", "hr_weight", "teacher_weight"))
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_images(cfg: DataConfig) -> list[torch.Tensor]:
    """The configured folders' images (centre-cropped), the generated ones, then the photos downscaled by
    ``photo_scales``: [3, H, W] in [0, 1] (grey as RGB), those that fit an HR crop at scale_max."""
    import importlib

    from ardet.images import load_image

    folders = [Path(cfg.dir)] if cfg.dir else []
    if cfg.package:
        try:
            folders.append(Path(importlib.import_module(cfg.package).__file__).parent)
        except ImportError as e:
            raise ValueError(f"data.package {cfg.package}: not installed ({e}); the configs' photos come with "
                             f"scikit-image: pip install -e '.[train]'") from None
    if not folders and not cfg.synthetic:
        raise ValueError("data: set dir, package and/or synthetic")
    need = cfg.largest_crop
    photos = [_centre_crop(load_image(p).pixels, cfg.max_side) for folder in folders for p in sorted(folder.iterdir())
              if p.suffix.lower() in IMAGE_SUFFIXES and p.stem not in cfg.exclude]
    generated = []
    if cfg.synthetic:
        from ardet.synthetic import render_image, split_kinds

        generated = [_centre_crop(torch.from_numpy(render_image(0, "train", i, kind)[0]).permute(2, 0, 1).float() / 255,
                                  cfg.max_side) for i, kind in enumerate(split_kinds(0, "train", cfg.synthetic))]
    # Last, so that a run without them draws the same renders for the images before (and reuses their teacher cache).
    downscaled = [_quantise(resize(im[None], tuple(max(1, round(n * f)) for n in im.shape[-2:]), "bicubic")[0])
                  for f in cfg.photo_scales for im in photos]
    images = photos + generated + downscaled
    found = len(images)
    images = [im for im in images if min(im.shape[-2:]) >= need]
    if not images:
        raise ValueError(f"no training images of at least {need} px a side in {[str(f) for f in folders]}")
    if len(images) < found:  # the largest scale's crop (patch x scale_max) must fit in every image
        log.warning("%d of %d training images are smaller than %d px a side and are left out", found - len(images),
                    found, need)
    return images


def _centre_crop(image: torch.Tensor, side: int | None) -> torch.Tensor:
    if side is None:
        return image
    (h, w), (y, x) = image.shape[-2:], (max(0, (n - side) // 2) for n in image.shape[-2:])
    return image[:, y:y + min(h, side), x:x + min(w, side)]


def _uniform(gen: torch.Generator) -> float:
    return torch.rand((), generator=gen).item()


def sample_batch(images: list[torch.Tensor], cfg: DataConfig, batch: int, gen: torch.Generator):
    """(lr [B, 3, p, p], coord [B, Q, 2], cell [B, 2] (one per crop), hr [B, Q, 3] in [0, 1], None (no teacher))."""
    def rand() -> float:
        return _uniform(gen)

    lrs, coords, cells, gts = [], [], [], []
    for _ in range(batch):
        img = images[int(rand() * len(images))]
        size = round(cfg.patch * (cfg.scale_min + (cfg.scale_max - cfg.scale_min) * rand()))
        y, x = int(rand() * (img.shape[1] - size + 1)), int(rand() * (img.shape[2] - size + 1))
        hr = img[:, y:y + size, x:x + size]
        hr = hr.flip(-1) if rand() < 0.5 else hr
        hr = hr.flip(-2) if rand() < 0.5 else hr
        hr = hr.transpose(-2, -1) if rand() < 0.5 else hr
        lrs.append(_quantise(resize(hr[None], (cfg.patch, cfg.patch), "bicubic")[0]))
        pick = torch.randperm(size * size, generator=gen)[:cfg.queries]
        coords.append(grid_coord(size, size).view(-1, 2)[pick])
        gts.append(hr.reshape(3, -1)[:, pick].t())
        cells.append(torch.full((2,), 2 / size))
    return torch.stack(lrs), torch.stack(coords), torch.stack(cells), torch.stack(gts), None


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round() / 255  # what an 8-bit LR image holds


@dataclass
class Render:
    """One LR version of an HR image: ``lr`` [3, h, w], ``hr`` and the teacher's ``teacher`` (or None) [3, H, W]."""
    lr: torch.Tensor
    hr: torch.Tensor
    teacher: torch.Tensor | None


def make_renders(images: list[torch.Tensor], cfg: DataConfig, gen: torch.Generator,
                 device: str | torch.device = "cpu") -> list[Render]:
    """``cfg.renders`` bicubic LR versions of each image at scales ~ U(scale_min, scale_max) (at least ``patch`` px a
    side) and, with a teacher (run on ``device``), its upscale of each back to the HR size, from the cache or rendered
    now."""
    from tqdm import tqdm

    from ardet.files import atomic_write_bytes, sha256

    renders = []
    for hr in images:
        for _ in range(cfg.renders):
            s = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * _uniform(gen)
            size = tuple(max(cfg.patch, round(n / s)) for n in hr.shape[-2:])
            renders.append(Render(_quantise(resize(hr[None], size, "bicubic")[0]), hr, None))
    if not cfg.teacher:
        return renders
    from safetensors.torch import load, save

    teacher, cache = None, Path(cfg.cache)
    weights = sha256(weights_file(cfg.teacher))  # the teacher's contents, not its name: retrained files get new keys
    for r in tqdm(renders, desc=f"teacher {Path(cfg.teacher).name}"):
        key = hashlib.sha256(f"{weights} {tuple(r.hr.shape)}".encode() + r.lr.numpy().tobytes()).hexdigest()
        path = cache / f"{key[:24]}.safetensors"
        if path.is_file():
            out = load(path.read_bytes())["teacher"]
        else:
            if teacher is None:
                teacher = load_model(cfg.teacher, device)
            out = (teacher.upscale(r.lr[None], r.hr.shape[-2:])[0] * 255).round().to(torch.uint8).cpu().contiguous()
            atomic_write_bytes(path, save({"teacher": out}))
        r.teacher = out.float() / 255
    return renders


def _covered(start: int, patch: int, n_lr: int, n_hr: int) -> torch.Tensor:
    """HR indices whose pixel centres ((i + 0.5) * n_lr / n_hr in LR units) lie in LR cells [start, start + patch)."""
    ratio = n_hr / n_lr
    first, end = math.ceil(start * ratio - 0.5), math.ceil((start + patch) * ratio - 0.5)
    return torch.arange(max(first, 0), min(end, n_hr))


def sample_renders(renders: list[Render], cfg: DataConfig, batch: int, gen: torch.Generator):
    """As :func:`sample_batch` from :func:`make_renders`' renders, plus the teacher's colours (or None):
    (lr [B, 3, p, p], coord [B, Q, 2], cell [B, 2], hr [B, Q, 3], teacher [B, Q, 3] | None)."""
    def rand() -> float:
        return _uniform(gen)

    p, samples = cfg.patch, []
    area = torch.tensor([float(r.hr[0].numel()) for r in renders])
    for i in torch.multinomial(area, batch, replacement=True, generator=gen).tolist():  # every HR pixel equally likely
        r = renders[i]
        (h, w), (H, W) = r.lr.shape[-2:], r.hr.shape[-2:]
        y0, x0 = int(rand() * (h - p + 1)), int(rand() * (w - p + 1))
        rows, cols = _covered(y0, p, h, H), _covered(x0, p, w, W)
        pick = torch.randint(len(rows) * len(cols), (cfg.queries,), generator=gen)
        iy, ix = rows[pick // len(cols)], cols[pick % len(cols)]
        # query centres in the patch's own [-1, 1] frame; the cell is one HR pixel in that frame
        coord = torch.stack([-1 + 2 * ((iy + 0.5) * h / H - y0) / p, -1 + 2 * ((ix + 0.5) * w / W - x0) / p], -1)
        cell = torch.tensor([2 * h / (H * p), 2 * w / (W * p)])
        lr = r.lr[:, y0:y0 + p, x0:x0 + p]
        if rand() < 0.5:
            lr, coord = lr.flip(-1), coord * coord.new_tensor([1, -1])
        if rand() < 0.5:
            lr, coord = lr.flip(-2), coord * coord.new_tensor([-1, 1])
        if rand() < 0.5:
            lr, coord, cell = lr.transpose(-2, -1), coord.flip(-1), cell.flip(-1)
        samples.append((lr, coord.float(), cell, r.hr[:, iy, ix].t(),
                        None if r.teacher is None else r.teacher[:, iy, ix].t()))
    lr, coord, cell, hr, teacher = zip(*samples)
    return (torch.stack(lr), torch.stack(coord), torch.stack(cell), torch.stack(hr),
            None if teacher[0] is None else torch.stack(teacher))


class Batches(torch.utils.data.Dataset):
    """Item ``step`` is that training step's batch, drawn with its own generator seeded by (seed, step): loader
    workers can draw any steps in parallel, and a resumed run draws exactly the batches an uninterrupted one would."""

    def __init__(self, images: list[torch.Tensor], renders: list[Render] | None, cfg: DataConfig, batch: int,
                 seed: int):
        self.images, self.renders, self.cfg, self.batch, self.seed = images, renders, cfg, batch, seed

    def __getitem__(self, step: int):
        gen = torch.Generator().manual_seed((self.seed << 32) + step)
        return (sample_renders(self.renders, self.cfg, self.batch, gen) if self.renders
                else sample_batch(self.images, self.cfg, self.batch, gen))


def _weights_identity(cfg: Config) -> dict:
    """The sha256 of the teacher and init weights a run uses: a file replaced under the same path between a run and
    its resume would mix two teachers (or two starts) in one model."""
    from ardet.files import sha256

    return {key: sha256(weights_file(name)) for key, name in (("teacher", cfg.data.teacher), ("init", cfg.model.init),
                                                                ("encoder_init", cfg.model.encoder_init)) if name}


# What a resumed run may set differently: more steps, logging, loader workers, folder, device, the teacher cache.
_MAY_CHANGE = ("train.steps", "train.workers", "train.log_every", "train.checkpoint_every", "train.out_dir",
               "train.device", "data.cache")


def train(cfg: Config) -> Path:
    """Train; return the path of the final ``model.safetensors``."""
    from tqdm import tqdm

    from ardet.files import JsonlWriter, atomic_write_bytes, load_torch_checkpoint, truncate_jsonl

    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    if cfg.data.teacher and not cfg.data.renders:
        raise ValueError("data.teacher needs data.renders > 0 (the teacher's outputs are rendered once per render)")
    model = create_model(cfg.model.name, **cfg.model.args)
    if cfg.model.init:
        init = load_model(cfg.model.init)
        if init.args != model.args:  # training it would save a model the config does not describe
            raise ValueError(f"model.init {cfg.model.init} is not the configured model (its args {init.args}, "
                             f"model.name and model.args give {model.args}); describe its architecture there")
        model = init
    if cfg.model.encoder_init:
        source = load_model(cfg.model.encoder_init).encoder
        if type(model.encoder) is not type(source):
            raise ValueError(f"model.encoder_init {cfg.model.encoder_init}: its encoder is a {type(source).__name__}, "
                             f"the model's a {type(model.encoder).__name__}")
        try:
            model.encoder.take_blocks(source, cfg.model.encoder_blocks)
        except ValueError as e:
            raise ValueError(f"model.encoder_init {cfg.model.encoder_init}: {e}") from None
    device = resolve_device(cfg.train.device, "train.device")
    # Channels-last convolutions are 1.2x (float32) to 1.7x (bf16) faster on the CPU (bench/bench_sr.py --only train).
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model.to(device, memory_format=layout).train()
    autocast = torch.autocast(device.type, PRECISIONS[cfg.train.precision] or torch.float32,
                              enabled=cfg.train.precision != "fp32")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    step, last, losses, seconds = 0, out / "last.pt", [], 0.0
    resume = {**resume_key(cfg, _MAY_CHANGE), "weights": _weights_identity(cfg)}
    if last.exists():
        state = load_torch_checkpoint(last, device)
        check_resume(state["config"], resume, last)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["seconds"]
        # The steps since the last log record: the next record averages them too, as an uninterrupted run's does.
        losses = [torch.tensor(v, device=device) for v in state["pending_losses"]]
        log.info("resumed %s at step %d", last, step)
    save_config(cfg, out)  # after the resume check: a refused run leaves the folder's config as it was
    images = load_images(cfg.data)
    log.info("%d training images; training on %s", len(images), device)
    renders = (make_renders(images, cfg.data, torch.Generator().manual_seed(cfg.train.seed + 1), device)
               if cfg.data.renders else None)
    batches = torch.utils.data.DataLoader(
        Batches(images, renders, cfg.data, cfg.train.batch, cfg.train.seed), batch_size=None,
        sampler=range(step + 1, cfg.train.steps + 1), num_workers=cfg.train.workers,
        pin_memory=device.type == "cuda")
    truncate_jsonl(out / "log.jsonl", step)
    history = JsonlWriter(out / "log.jsonl")
    start = time.time() - seconds  # a resumed run's log counts the time of the runs before it
    for step, batch in tqdm(zip(range(step + 1, cfg.train.steps + 1), batches), initial=step,
                            total=cfg.train.steps, desc="train-sr"):  # counted per pair: the bar reaches N/N
        for group in opt.param_groups:
            group["lr"] = cfg.train.lr * cfg.train.gamma ** ((step - 1) // cfg.train.decay_every)
        lr, coord, cell, hr, teacher = (None if t is None else t.to(device, non_blocking=True) for t in batch)
        # query_folded is query_rgb's function (tested equal) with cheaper gradients: no 9x unfold, no grid_sample
        with autocast:
            pred = model.query_folded(lr.contiguous(memory_format=layout), coord, cell)  # float32 (decode's sum)
        loss = cfg.train.hr_weight * F.l1_loss(pred, (hr - 0.5) / 0.5)
        if teacher is not None:
            loss = loss + cfg.train.teacher_weight * F.l1_loss(pred, (teacher - 0.5) / 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())  # no .item() per step: that would wait for the GPU every step
        logs = step % cfg.train.log_every == 0 or step == cfg.train.steps
        saves = step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps
        if logs or saves:
            mean = torch.stack(losses).mean().item()
            if not math.isfinite(mean):  # checked before saving: last.pt keeps the last finite state
                raise FloatingPointError(f"train-sr: the loss up to step {step} is {mean}; {last} holds the last "
                                         f"checkpoint before it; lower train.lr")
        if logs:
            history.write({"step": step, "loss": mean, "lr": opt.param_groups[0]["lr"],
                           "seconds": round(time.time() - start, 1)})
            losses = []
        if saves:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "seconds": time.time() - start, "pending_losses": [float(v) for v in losses],
                        "config": resume}, buf)
            atomic_write_bytes(last, buf.getvalue())
            save_model(model, out / "model.safetensors")
    # Again at the end: a rerun of a finished run trains no step, and a kill may have fallen between the two writes.
    save_model(model, out / "model.safetensors")
    return out / "model.safetensors"
