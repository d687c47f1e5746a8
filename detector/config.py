"""The detector's YAML config: the model to build (offline, random init), the COCO-format data and the training run.

One file serves ``load_detector(config.yaml)`` (only ``model`` is used) and ``ardet train-detector --config``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ardet.config import check_numbers


@dataclass
class Category:
    id: int
    name: str


@dataclass
class BackboneConfig:
    """A CNN backbone built without the hub: transformers' native ResNet (``resnet``) or a timm model (``timm``)."""

    kind: Literal["resnet", "timm"] = "resnet"
    timm_name: str = "resnet50"  # kind=timm only
    embedding_size: int = 64  # kind=resnet: stem width, stage widths/depths, block type (defaults: ResNet-50)
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    depths: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    layer_type: Literal["basic", "bottleneck"] = "bottleneck"
    out_stages: list[int] = field(default_factory=lambda: [4])  # 1-based stages whose features go to the transformer
    trainable_batchnorm: bool = False  # train real BatchNorm (from scratch) instead of DETR's frozen BatchNorm


@dataclass
class ModelConfig:
    arch: Literal["detr", "conditional_detr", "deformable_detr"] = "detr"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    d_model: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    heads: int = 8
    queries: int = 100
    dropout: float = 0.1
    aux_loss: bool = True
    # Classes: ``categories`` names them (label i = i-th category); else the train JSON's categories; else
    # ``num_labels`` unnamed classes, which match dataset categories by id.
    categories: list[Category] = field(default_factory=list)
    num_labels: int = 91
    extra: dict[str, Any] = field(default_factory=dict)  # any other transformers config field, e.g. eos_coefficient

    def __post_init__(self):
        check_numbers(self, "model", non_negative=("encoder_layers", "dropout"),
                      positive=("d_model", "decoder_layers", "ffn_dim", "heads", "queries", "num_labels"))


@dataclass
class DataConfig:
    train_json: str = ""
    train_images: str = ""
    val_json: str = ""
    val_images: str = ""


@dataclass
class TrainConfig:
    out_dir: str = "runs/detector"
    init: str = ""  # fine-tune from a hub id / local model directory; empty: random init from ``model``
    steps: int = 5000
    batch_size: int = 32
    lr: float = 2e-4
    backbone_lr: float = 2e-5
    weight_decay: float = 1e-4
    clip_grad: float = 0.1
    lr_drop_at: float = 0.8  # fraction of steps after which the learning rate drops 10x (DETR's schedule); >= 1: never
    freeze_backbone: bool = False
    # Box-aware augmentation: shortest edge drawn from min, min + 8, ... and max; longest capped at ``max_size``.
    scale_range: tuple[int, int] = (96, 160)
    max_size: int = 256
    hflip: float = 0.5
    color_jitter: float = 0.2
    val_size: int = 128  # validation images resized by DETR's rule to this shortest edge (capped at max_size)
    val_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    workers: int = 0
    threads: int = 0  # torch threads; 0 keeps torch's default
    device: str = "cpu"
    resume: bool = True  # continue from out_dir/checkpoint when it exists

    def __post_init__(self):
        check_numbers(self, "train", positive=("steps", "batch_size", "lr", "val_every", "checkpoint_every",
                                               "max_size", "val_size", "lr_drop_at"),
                      non_negative=("backbone_lr", "weight_decay", "clip_grad", "hflip", "color_jitter", "workers",
                                    "threads"))
        if not 0 < self.scale_range[0] <= self.scale_range[-1]:
            raise ValueError(f"train.scale_range must be [min, max] with 0 < min <= max, got {self.scale_range}")


@dataclass
class DetectorConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
