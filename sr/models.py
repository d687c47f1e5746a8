"""LIIF networks (Chen et al., CVPR 2021) in the reference's house style: ``register``/``make`` over specs
``{name, args}``; parameter names follow the reference so that its state dicts load by an explicit, checked map.

Encoders return a feature map at the input resolution (no upsampler). :class:`sr.liif.LIIF` holds an encoder and
the MLP ``imnet`` that decodes a colour from [3x3-unfolded feature, offset to the LR cell centre, output cell size].
"""
from __future__ import annotations

import copy

import torch
from torch import nn

architectures: dict[str, type[nn.Module]] = {}


def register(name: str):
    def decorator(cls):
        architectures[name] = cls
        return cls
    return decorator


def make(spec: dict, **extra) -> nn.Module:
    """Build ``architectures[spec['name']](**spec['args'], **extra)``."""
    if spec["name"] not in architectures:
        raise ValueError(f"unknown architecture {spec['name']!r}; known: {sorted(architectures)}")
    return architectures[spec["name"]](**copy.deepcopy(spec.get("args", {})), **extra)


def conv(c_in: int, c_out: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


def _no_upsampler(no_upsampling: bool) -> None:
    if not no_upsampling:
        raise ValueError("only encoders without upsampler (no_upsampling: true) are used by LIIF")


class ResBlock(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.body = nn.Sequential(conv(n, n), nn.ReLU(True), conv(n, n))

    def forward(self, x):
        return self.body(x) + x


class Encoder(nn.Module):
    @property
    def radius(self) -> int:
        """Receptive radius in pixels: every conv lies on one chain, so radii add. Tiles need this much halo."""
        return sum((m.kernel_size[0] - 1) // 2 for m in self.modules() if isinstance(m, nn.Conv2d))


@register("edsr-baseline")
class EDSR(Encoder):
    """EDSR-baseline trunk: head conv, residual blocks (res_scale 1), body conv, global skip. The reference also builds
    mean-shift convs that its no-upsampler forward never uses; they are not built here."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, no_upsampling: bool = True):
        super().__init__()
        _no_upsampler(no_upsampling)
        self.out_dim = n_feats
        self.head = nn.Sequential(conv(3, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats) for _ in range(n_resblocks)], conv(n_feats, n_feats))

    def forward(self, x):
        y = self.head(x)
        return self.body(y) + y

    def take_blocks(self, deeper: EDSR, blocks: list[int]) -> None:
        """Copy the head, the residual ``blocks`` (ascending indices) and the body conv of ``deeper``, a trunk of the
        same width, into this one, which has ``len(blocks)`` residual blocks: a start that keeps what the deeper trunk
        learned. Each residual block adds to a running feature, so a subset of them still computes a useful one."""
        if not isinstance(deeper, EDSR) or deeper.out_dim != self.out_dim:
            found = f"{deeper.out_dim} channels" if isinstance(deeper, EDSR) else type(deeper).__name__
            raise ValueError(f"blocks can be taken only from an EDSR trunk of {self.out_dim} channels, got {found}")
        n_deeper, n_own = len(deeper.body) - 1, len(self.body) - 1
        if len(blocks) != n_own or list(blocks) != sorted(set(blocks)) or not all(0 <= b < n_deeper for b in blocks):
            raise ValueError(f"blocks must be {n_own} ascending distinct indices in [0, {n_deeper}) (the source's "
                             f"residual blocks), got {list(blocks)}")
        self.head.load_state_dict(deeper.head.state_dict())
        for own, b in zip(self.body[:-1], blocks):
            own.load_state_dict(deeper.body[b].state_dict())
        self.body[-1].load_state_dict(deeper.body[-1].state_dict())


class RDBConv(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.conv = nn.Sequential(conv(c_in, growth), nn.ReLU())

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class RDB(nn.Module):
    def __init__(self, g0: int, growth: int, n_convs: int):
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(g0 + c * growth, growth) for c in range(n_convs)])
        self.LFF = conv(g0 + n_convs * growth, g0, 1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


@register("rdn")
class RDN(Encoder):
    """RDN (config B: 16 blocks of 8 convs, growth 64) without upsampler."""

    def __init__(self, G0: int = 64, D: int = 16, C: int = 8, G: int = 64, no_upsampling: bool = True):
        super().__init__()
        _no_upsampler(no_upsampling)
        self.out_dim = G0
        self.SFENet1, self.SFENet2 = conv(3, G0), conv(G0, G0)
        self.RDBs = nn.ModuleList([RDB(G0, G, C) for _ in range(D)])
        self.GFF = nn.Sequential(conv(D * G0, G0, 1), conv(G0, G0))

    def forward(self, x):
        f1 = self.SFENet1(x)
        x, outs = self.SFENet2(f1), []
        for block in self.RDBs:
            x = block(x)
            outs.append(x)
        return self.GFF(torch.cat(outs, 1)) + f1


@register("mlp")
class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 3, hidden_list: tuple[int, ...] = (256, 256, 256, 256)):
        super().__init__()
        dims, layers = [in_dim, *hidden_list], []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))

    def forward(self, x):
        return self.layers(x)

