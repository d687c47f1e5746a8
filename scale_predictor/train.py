"""Training the scale predictor (``ardet train-scale``): Elastic-style losses or oracle labels from a frozen detector.

Outputs in ``out_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (losses every ``log_every`` steps),
``checkpoint.pt`` (model + optimiser + step, atomic; a rerun with the same config resumes from it),
``predictor.safetensors`` (+ ``predictor.json``; loadable by :func:`scale_predictor.load_predictor`), and in oracle
mode the detector table cache ``oracle_table.jsonl`` unless ``oracle.cache`` points elsewhere.
Every random draw (batch order, flips, native-size jitter, knob values) is a function of (seed, step), so a resumed
run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import functools
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ardet.config import check_numbers, check_resume, resume_key, save_config
from ardet.device import resolve_device
from ardet.files import JsonlWriter, atomic_write_bytes, load_torch_checkpoint, sha256, truncate_jsonl
from scale_predictor.data import CocoScaleData, collate
from scale_predictor.losses import beta_mean_from_localisation, distribution_loss, oracle_loss, scale_loss
from scale_predictor.model import ScalePredictor
from scale_predictor.oracle import OracleTable, RunFn, build_oracle_table, image_quality
from scale_predictor.registry import DEFAULT_PREDICTOR, create_predictor, save_predictor

log = logging.getLogger(__name__)


@dataclass
class PredictorSection:
    name: str = DEFAULT_PREDICTOR
    args: dict[str, Any] = field(default_factory=dict)  # ScalePredictor arguments over the named defaults


@dataclass
class DataSection:
    annotations: str = ""  # COCO instances JSON
    images: str = ""  # folder holding the files named in it
    max_images: int | None = None
    native_jitter: tuple[float, float] = (1.0, 1.0)  # elastic mode only (oracle labels hold at the true size)
    flip: bool = True
    num_workers: int = 0

    def __post_init__(self):
        if self.max_images is not None:  # a negative count would slice images off the end
            check_numbers(self, "data", positive=("max_images",))
        check_numbers(self, "data", non_negative=("num_workers",))
        if not 0 < self.native_jitter[0] <= self.native_jitter[1]:
            raise ValueError(f"data.native_jitter must be [lo, hi] with 0 < lo <= hi, got {self.native_jitter}")


@dataclass
class ElasticSection:
    scale_weight: float = 1.0
    distribution_weight: float = 1.0
    area_lo: float = 32.0 ** 2  # P_up maps [area_lo * gain, area_hi * gain] onto [-6, 6]
    area_hi: float = 96.0 ** 2
    gain: float = 1.0
    bins: list[float] = field(default_factory=lambda: [32.0 ** 2, 64.0 ** 2])  # area bin edges for the scale loss
    concentration: float = 8.0  # Beta(mean * c, (1 - mean) * c)
    mean: float = 0.5  # Beta target mean, used when neither the knob nor the localisation losses set it
    loc_loss_small: float | None = None  # detector's localisation loss on small / large objects at native scale
    loc_loss_large: float | None = None
    knob_means: tuple[float, float] = (0.8, 0.2)  # Beta mean at knob 0 (accurate) and knob 1 (cheap)


@dataclass
class OracleSection:
    detector: str | None = None  # detector.load_detector spec; needed only to fill missing cache entries
    device: str = "cpu"
    resampler: Literal["bilinear", "bicubic", "liif"] = "bilinear"
    sr_model: str | None = None  # sr.load_model name or path, for resampler "liif"
    short_sides: list[int] = field(default_factory=lambda: [320, 416, 512, 608, 704, 800, 1024])
    cache: str | None = None  # default <out_dir>/oracle_table.jsonl
    lam: float = 0.002  # cost = (1 - AP) + lam * GFLOPs, for models without the knob
    lambda_max: float = 0.01  # knob-conditioned models: lam = knob * lambda_max, knob ~ U(0, 1) per image
    target: Literal["argmin", "soft"] = "soft"
    temperature: float = 0.02  # soft targets: softmax(-cost / temperature)

    def __post_init__(self):
        if not self.short_sides or min(self.short_sides) < 1:
            raise ValueError(f"short_sides must be a non-empty list of positive sizes, got {self.short_sides}")
        self.short_sides = sorted(set(self.short_sides))  # labels break cost ties to the first: the smaller size
        check_numbers(self, "oracle", positive=("temperature",), non_negative=("lam", "lambda_max"))


@dataclass
class OptimSection:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0

    def __post_init__(self):
        check_numbers(self, "optim", positive=("steps", "batch_size", "lr"),
                      non_negative=("warmup_steps", "weight_decay", "grad_clip"))


@dataclass
class TrainScaleConfig:
    mode: Literal["elastic", "oracle"] = "elastic"
    out_dir: str = "runs/scale_predictor"
    seed: int = 0
    device: str = "cpu"  # where the predictor trains ("cuda" on a GPU machine); the oracle detector: oracle.device
    log_every: int = 10
    checkpoint_every: int = 200
    predictor: PredictorSection = field(default_factory=PredictorSection)
    data: DataSection = field(default_factory=DataSection)
    elastic: ElasticSection = field(default_factory=ElasticSection)
    oracle: OracleSection = field(default_factory=OracleSection)
    optim: OptimSection = field(default_factory=OptimSection)

    def __post_init__(self):
        check_numbers(self, "config", positive=("log_every", "checkpoint_every"))


def train(cfg: TrainScaleConfig, *, run: RunFn | None = None, progress: bool = True) -> Path:
    """Train (or resume) as ``cfg`` says; return the path of the final ``predictor.safetensors``.
    ``run`` overrides the detector built from ``cfg.oracle`` for filling the oracle cache (tests, custom metrics)."""
    from tqdm import tqdm

    out = Path(cfg.out_dir)
    if (out / "predictor.safetensors").exists() and not (out / "metrics.jsonl").exists():
        raise ValueError(f"{out} holds a predictor that no train-scale run wrote (no metrics.jsonl), e.g. a shipped "
                         f"model: training would overwrite it; choose another out_dir")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = create_predictor(cfg.predictor.name, **cfg.predictor.args)
    data = CocoScaleData(cfg.data.annotations, cfg.data.images, thumb=model.thumb, flip=cfg.data.flip,
                         native_jitter=cfg.data.native_jitter if cfg.mode == "elastic" else (1.0, 1.0),
                         max_images=cfg.data.max_images)
    usable = [i for i in range(len(data)) if len(data.boxes(i))]  # no boxes: no scale loss, no per-image AP
    if not usable:
        raise ValueError(f"{cfg.data.annotations}: no image has a non-crowd box to learn from")
    table_rows = None
    if cfg.mode == "oracle":
        table = _oracle_table(cfg, model, data, usable, run, progress)
        table_rows = dict(zip(usable, range(len(usable))))
    device = resolve_device(cfg.device, "device")
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start = _resume(out / "checkpoint.pt", cfg, model, opt, device)
    save_config(cfg, out)

    loader = torch.utils.data.DataLoader(data, batch_sampler=_Batches(cfg, usable, start), collate_fn=collate,
                                         num_workers=cfg.data.num_workers)
    model.train()
    truncate_jsonl(out / "metrics.jsonl", start - 1)  # logged steps count from 0: step start - 1 is the last done
    with JsonlWriter(out / "metrics.jsonl") as metrics, \
            tqdm(total=cfg.optim.steps, initial=start, desc=f"train-scale ({cfg.mode})", disable=not progress) as bar:
        for step, batch in enumerate(loader, start):
            for group in opt.param_groups:
                group["lr"] = _lr(cfg.optim, step)
            knob = _knob(cfg, model, step, len(batch["index"]))
            batch = {**batch, "thumb": batch["thumb"].to(device), "native": batch["native"].to(device),
                     "boxes": [b.to(device) for b in batch["boxes"]]}
            if cfg.mode == "elastic":
                loss, parts = _elastic_loss(cfg.elastic, model, batch, knob)
            else:
                rows = np.array([table_rows[int(i)] for i in batch["index"]])
                loss, parts = _oracle_loss(cfg.oracle, model, batch, knob, table, rows)
            if not torch.isfinite(loss):  # before the step: checkpoint.pt keeps the last finite state
                raise FloatingPointError(f"train-scale: the loss at step {step} is {loss.item()}; "
                                         f"{out / 'checkpoint.pt'} holds the last checkpoint before it; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % cfg.log_every == 0 or step == cfg.optim.steps - 1:
                metrics.write({"step": step, "loss": loss.item(), "lr": _lr(cfg.optim, step),
                               **{k: float(v) for k, v in parts.items()}})
            if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.optim.steps - 1:
                _save_checkpoint(out, cfg, model, opt, step + 1)
    if start >= cfg.optim.steps:
        log.info("%s: already trained for %d steps", out, start)
    return save_predictor(model, out / "predictor.safetensors")


# -- losses per mode -----------------------------------------------------------------------------------------------
def _elastic_loss(cfg: ElasticSection, model: ScalePredictor, batch: dict, knob: torch.Tensor | None):
    native = batch["native"]
    u = model(batch["thumb"], native, knob)
    factors = model.short_side(u, native) / native.min(dim=-1).values
    l_scale = scale_loss(u, factors, batch["boxes"], bins=cfg.bins, lo=cfg.area_lo, hi=cfg.area_hi, gain=cfg.gain)
    mean = elastic_target_mean(cfg, None if knob is None else float(knob[0]))
    l_dist = distribution_loss(u, mean, cfg.concentration)
    loss = cfg.scale_weight * l_scale + cfg.distribution_weight * l_dist
    return loss, {"scale": l_scale.item(), "distribution": l_dist.item(), "target_mean": mean,
                  "u_mean": u.mean().item()}


def elastic_target_mean(cfg: ElasticSection, knob: float | None) -> float:
    """The Beta target's mean: from the knob if the model has one, else from the detector's small-vs-large
    localisation losses if given, else ``cfg.mean``."""
    if knob is not None:
        return cfg.knob_means[0] + knob * (cfg.knob_means[1] - cfg.knob_means[0])
    if (cfg.loc_loss_small is None) != (cfg.loc_loss_large is None):
        raise ValueError("elastic.loc_loss_small and elastic.loc_loss_large must be given together")
    if cfg.loc_loss_small is not None:
        return beta_mean_from_localisation(cfg.loc_loss_small, cfg.loc_loss_large)
    return cfg.mean


def _oracle_loss(cfg: OracleSection, model: ScalePredictor, batch: dict, knob: torch.Tensor | None,
                 table: OracleTable, rows: np.ndarray):
    native = batch["native"]
    u = model(batch["thumb"], native, knob)
    lam = cfg.lam if knob is None else knob.numpy().astype(np.float64) * cfg.lambda_max
    sub = table.take(rows)
    bin_u = model.position(torch.from_numpy(sub.sizes.min(axis=-1)).to(native), native)  # [B, K]
    if cfg.target == "argmin":
        target_u = bin_u[torch.arange(len(u)), torch.from_numpy(sub.labels(lam))]
    else:
        target_u = (torch.from_numpy(sub.soft_targets(lam, cfg.temperature)).to(bin_u) * bin_u).sum(-1)
    loss = oracle_loss(u, target_u)
    return loss, {"u_mean": u.mean().item(), "target_u_mean": target_u.mean().item()}


def _oracle_table(cfg: TrainScaleConfig, model: ScalePredictor, data: CocoScaleData, usable: list[int],
                  run: RunFn | None, progress: bool) -> OracleTable:
    import detector
    import sr

    o = cfg.oracle
    cache = Path(o.cache) if o.cache else Path(cfg.out_dir) / "oracle_table.jsonl"
    items = [(data.images[i]["id"], data.native_size(i), functools.partial(data.load, i)) for i in usable]

    # Entries are keyed by image id, which every COCO file numbers from 1: the annotation file's contents name the
    # images. The detector and SR model are named by their weights (a retrained file under the same name is another
    # model, the same one under another path is not); without a detector (reading a complete table) the table's own
    # is taken as it is, and a custom ``run`` by the name in oracle.detector.
    meta = {"annotations_sha256": sha256(cfg.data.annotations), "resampler": o.resampler,
            "sr_model": o.sr_model and sha256(sr.weights_file(o.sr_model))}
    unidentified = None
    if run is None and o.detector is not None:
        try:
            meta["detector_sha256"] = detector.weights_sha256(o.detector)
            if Path(o.detector).suffix in (".yaml", ".yml"):  # a random init: the seed decides its weights
                meta["detector_sha256"] += f"-seed{cfg.seed}"
        except FileNotFoundError as e:  # moved, or an uncached hub id: a complete table is still readable
            unidentified = e
            log.warning("%s; the oracle cache is read without checking which detector made it", e)
    elif o.detector is not None:
        meta["detector"] = o.detector

    def make_run() -> RunFn:  # called only when the cache lacks entries
        if o.detector is None:
            raise ValueError(f"oracle mode: {cache} lacks entries for these images and sizes; set oracle.detector "
                             f"(a detector.load_detector spec) to compute them, or oracle.cache to a complete table")
        if unidentified is not None:  # its entries could not be told apart from another detector's
            raise ValueError(f"oracle mode: {cache} lacks entries, and {unidentified}, so they cannot be computed "
                             f"under its name (a hub id: download it once, e.g. with `ardet flops --detector ID "
                             f"--size 64x64`)")
        with torch.random.fork_rng():  # a YAML detector's random init from the seed alone, whatever ran before
            torch.manual_seed(cfg.seed)
            det = detector.load_detector(o.detector, device=resolve_device(o.device, "oracle.device"),
                                         categories=data.categories)
        return detector_run(o, data, det)

    return build_oracle_table(items, o.short_sides, run, cache, make_run=make_run, multiple=model.multiple,
                              max_long=model.max_long, meta=meta, progress=progress)


def detector_run(cfg: OracleSection, data: CocoScaleData, det) -> RunFn:
    """run(LoadedImage, (H, W)) -> (per-image AP, GFLOPs of resampling + detection), with the detector ``det`` and
    the configured resampler (``sr.Resampler``: LIIF where it enlarges, antialiased interpolation otherwise)."""
    import sr
    from ardet.flops import count_flops

    device = det.device
    resampler = sr.Resampler(cfg.resampler, sr.load_model(cfg.sr_model, device=device) if cfg.sr_model else None)
    info = {im["id"]: im for im in data.images}

    def run(image, size: tuple[int, int]) -> tuple[float, float]:
        def resample_and_detect():
            x = resampler(image.pixels.unsqueeze(0).to(device), size)
            return det.detect([x[0]], [image.size])[0]

        with torch.no_grad():
            detections, flops = count_flops(resample_and_detect)
        quality = image_quality(detections.to_coco(image.id), data.annotations[image.id], info[image.id],
                                data.categories)
        return float(quality), flops.gflops

    return run


# -- schedule, sampling, checkpoints --------------------------------------------------------------------------------
def _lr(cfg: OptimSection, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t))))


class _Batches:
    """Batches of (dataset index, augmentation seed) for steps [start, steps): epoch permutations seeded by
    (seed, epoch), so any step's batch is known without replaying the ones before it."""

    def __init__(self, cfg: TrainScaleConfig, usable: list[int], start: int):
        self.seed, self.usable, self.bs = cfg.seed, usable, cfg.optim.batch_size
        self.steps = range(start, cfg.optim.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        n = len(self.usable)
        for step in self.steps:
            picks = []
            for k in range(step * self.bs, (step + 1) * self.bs):
                epoch, offset = divmod(k, n)
                picks.append((self.usable[_permutation(self.seed, epoch, n)[offset]], self.seed * 1_000_003 + k))
            yield picks


@functools.lru_cache(maxsize=2)  # only the current epoch is needed again
def _permutation(seed: int, epoch: int, n: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()


def _knob(cfg: TrainScaleConfig, model: ScalePredictor, step: int, batch: int) -> torch.Tensor | None:
    """Knob values for a knob-conditioned model: one per batch in elastic mode (the distribution loss is a batch
    statistic), one per image in oracle mode."""
    if not model.use_knob:
        return None
    g = torch.Generator().manual_seed(cfg.seed * 104_729 + step)
    return torch.rand(1, generator=g).expand(batch) if cfg.mode == "elastic" else torch.rand(batch, generator=g)


# What a resumed run may set differently: more steps, logging, workers, folder, device.
_MAY_CHANGE = ("optim.steps", "data.num_workers", "log_every", "checkpoint_every", "out_dir", "device")


def _save_checkpoint(out: Path, cfg: TrainScaleConfig, model: ScalePredictor, opt: torch.optim.Optimizer,
                     step: int) -> None:
    buf = io.BytesIO()
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "config": resume_key(cfg, _MAY_CHANGE)}, buf)
    atomic_write_bytes(out / "checkpoint.pt", buf.getvalue())
    save_predictor(model, out / "predictor.safetensors")


def _resume(path: Path, cfg: TrainScaleConfig, model: ScalePredictor, opt: torch.optim.Optimizer,
            device: torch.device) -> int:
    if not path.is_file():
        return 0
    state = load_torch_checkpoint(path, device)
    check_resume(state["config"], resume_key(cfg, _MAY_CHANGE), path)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming %s at step %d", path.parent, state["step"])
    return int(state["step"])
