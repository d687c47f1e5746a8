"""The LIIF implicit decoder, with two inference paths that compute the same image.

* :meth:`LIIF.upscale_plain` follows the reference line by line: encoder on the whole image, 3x3 unfold to 576
  channels, four shifted nearest look-ups per query, the MLP on [feature, offset, cell], bilinear-area blend.
* :meth:`LIIF.upscale` (fast) is the same function re-associated, exact up to float32 summation order:
  - MLP layer 0 is linear in its input, so its 576 feature columns (reshaped [D, C, 3, 3]) applied to the unfolded
    feature equal a zero-padded 3x3 conv of the feature map. It runs once per LR pixel and queries gather D-wide
    vectors instead of 580-wide ones.
  - the cell input is the same for every query of a uniform grid: its columns become a constant bias of that conv;
    what is left of layer 0 per query is its two offset columns (``rel @ w_rel``).
  - which LR cell a query reads and its offset depend on (h, H) along y and (w, W) along x only: they are computed once
    per axis with the reference's own float32 formulas (incl. grid_sample's nearest rounding) and cached.
  - the encoder runs on tiles with a halo of its receptive radius + 1 (the conv above), the decoder on row chunks,
    so peak memory follows ``tile`` and ``chunk``, not the image size.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ardet.images import check_pixels
from sr.models import make, register
from sr.resample import check_size

SHIFTS = (-1, 1)  # the local ensemble: the LR cell above/below (left/right) of a query, shifted by 1e-6 past it
EPS_SHIFT = 1e-6


def make_coord(n: int) -> torch.Tensor:
    """Pixel centres of a length-``n`` axis in [-1, 1], in the reference's float32 form ``-1 + r + 2r * k``."""
    r = 1 / n
    return -1 + r + (2 * r) * torch.arange(n).float()


def grid_coord(h: int, w: int) -> torch.Tensor:
    """[h, w, 2] pixel centres, (y, x)."""
    return torch.stack(torch.meshgrid(make_coord(h), make_coord(w), indexing="ij"), -1)


def _sample_nearest(t: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Reference look-up: ``t`` [B, C, h, w] at coord [B, Q, 2] (y, x) -> [B, Q, C]."""
    return F.grid_sample(t, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)


def nearest_geometry(coord: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis, for each ensemble shift: the LR index [2, N] (long) and offset ``rel`` [2, N] of query
    coordinates ``coord`` [N], computed with the float32 ops of :meth:`LIIF.query_rgb`."""
    centres, index, rel = make_coord(n_in).to(coord.device), [], []
    for v in SHIFTS:
        shifted = (coord + (v / n_in + EPS_SHIFT)).clamp(-1 + 1e-6, 1 - 1e-6)
        # The reference's nearest grid_sample (same kernel, same rounding) on a 1-row "image" of indices.
        grid = torch.stack([shifted, torch.zeros_like(shifted)], -1).view(1, 1, -1, 2)
        idx = F.grid_sample(torch.arange(n_in, device=coord.device).float().view(1, 1, 1, n_in), grid,
                            mode="nearest", align_corners=False).view(-1).long()
        index.append(idx)
        rel.append((coord - centres[idx]) * n_in)
    return torch.stack(index), torch.stack(rel)


@lru_cache(maxsize=16)
def axis_geometry(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_geometry` of the pixel centres of a uniform output axis: cached, it depends on sizes only."""
    return nearest_geometry(make_coord(n_out), n_in)


@register("liif")
class LIIF(nn.Module):
    """Local implicit image function with feature unfolding, local ensemble and cell decoding (all always on).

    ``lr_skip`` (not in the reference; used by the project's small model): each ensemble member also adds the LR
    pixel it reads to its prediction, so the blend adds a bilinear interpolation of the input and the MLP learns
    only the residual - much faster to train.
    """

    def __init__(self, encoder_spec: dict, imnet_spec: dict, lr_skip: bool = False):
        super().__init__()
        self.encoder = make(encoder_spec)
        self.imnet = make(imnet_spec, in_dim=self.encoder.out_dim * 9 + 4)
        self.lr_skip = lr_skip
        self.args = {"encoder_spec": encoder_spec, "imnet_spec": imnet_spec, **({"lr_skip": True} if lr_skip else {})}

    # ---- reference semantics -------------------------------------------------------------------------------------
    def gen_feat(self, img: torch.Tensor) -> torch.Tensor:
        """Encoder on the whole image (input in [0, 1], normalised to [-1, 1]), unfolded 3x3 -> [B, 9C, h, w]
        (with lr_skip, the normalised image appended: [B, 9C + 3, h, w])."""
        inp = (img - 0.5) / 0.5
        feat = self.encoder(inp)
        b, c, h, w = feat.shape
        feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        return torch.cat([feat, inp], 1) if self.lr_skip else feat

    def query_rgb(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Decode queries ``coord`` [B, Q, 2] (y, x) with ``cell`` [B, Q, 2] from an unfolded feature -> [B, Q, 3]
        in [-1, 1] space (unclamped)."""
        b, _, h, w = feat.shape
        feat_coord = grid_coord(h, w).to(feat).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
        scale = coord.new_tensor([h, w])
        preds, areas = [], []
        for vy in SHIFTS:
            for vx in SHIFTS:
                shifted = coord.clone()
                shifted[..., 0] += vy / h + EPS_SHIFT
                shifted[..., 1] += vx / w + EPS_SHIFT
                shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
                q_feat = _sample_nearest(feat, shifted)
                rel = (coord - _sample_nearest(feat_coord, shifted)) * scale
                n_feat = self.imnet.layers[0].in_features - 4
                pred = self.imnet(torch.cat([q_feat[..., :n_feat], rel, cell * scale], -1))
                preds.append(pred + q_feat[..., -3:] if self.lr_skip else pred)
                areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        total = torch.stack(areas).sum(0)
        # Each prediction is weighted by the area of the diagonally opposite rectangle: a bilinear blend.
        return sum(pred * (area / total).unsqueeze(-1) for pred, area in zip(preds, areas[::-1]))

    @torch.no_grad()
    def upscale_plain(self, img: torch.Tensor, size: tuple[int, int], chunk: int = 30000) -> torch.Tensor:
        """Reference inference, float32 as the reference: [B, 3, h, w] in [0, 1] -> [B, 3, H, W] in [0, 1]."""
        check_pixels(img, 4, "LIIF.upscale_plain")
        p = next(self.parameters())
        if p.dtype != torch.float32:
            raise TypeError(f"upscale_plain is the float32 reference; this model is {p.dtype}: use upscale")
        b, (H, W) = img.shape[0], check_size(size)
        feat = self.gen_feat(img.to(p.device, torch.float32))
        coord = grid_coord(H, W).to(feat.device).view(1, -1, 2).expand(b, -1, -1)
        cell = torch.ones_like(coord)
        cell[..., 0] *= 2 / H
        cell[..., 1] *= 2 / W
        pred = torch.cat([self.query_rgb(feat, coord[:, i:i + chunk], cell[:, i:i + chunk])
                          for i in range(0, H * W, chunk)], 1)
        return (pred * 0.5 + 0.5).clamp(0, 1).view(b, H, W, 3).permute(0, 3, 1, 2)

    # ---- fast path -----------------------------------------------------------------------------------------------
    def fold(self, inp: torch.Tensor, rel_cell: torch.Tensor) -> torch.Tensor:
        """Encoder and MLP layer 0 on everything but the offset, per LR pixel, for a normalised input [B, 3, h, w]:
        a 3x3 conv of the feature (the unfolded columns c*9 + 3*dy + dx are a conv weight [c, dy, dx]) plus bias and
        cell term (one cell per image, ``rel_cell`` [B, 2] = cell * LR size as in the reference) -> [B, h, w, D]
        (with lr_skip, D + 3: the input appended)."""
        first, c = self.imnet.layers[0], self.encoder.out_dim
        weight = first.weight[:, :9 * c].reshape(-1, c, 3, 3)
        bias = rel_cell.to(first.weight) @ first.weight[:, 9 * c + 2:].t() + first.bias  # [B, D]
        z = F.conv2d(self.encoder(inp), weight, padding=1) + bias[:, :, None, None]
        return (torch.cat([z, inp], 1) if self.lr_skip else z).permute(0, 2, 3, 1)

    def decode(self, z: torch.Tensor, index: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        """Queries from the gather table ``z`` [rows, D] (folded maps, flattened): ``index`` [4, N] the rows and
        ``rel`` [4, N, 2] the offsets of the four ensemble members (reference order) -> [N, 3] in [-1, 1] space.
        What is left of layer 0 is ``rel @ w_rel``."""
        first, c = self.imnet.layers[0], self.encoder.out_dim
        w_rel, d = first.weight[:, 9 * c:9 * c + 2].t(), first.out_features
        linears = [m for m in self.imnet.layers[1:] if isinstance(m, nn.Linear)]
        area = (rel[..., 0] * rel[..., 1]).abs() + 1e-9
        weight = area.flip(0) / area.sum(0)  # each member weighted by the diagonally opposite area: bilinear
        out = 0
        for k in range(4):
            rows = z.index_select(0, index[k])
            hidden = torch.addmm(rows[:, :d], rel[k].to(z), w_rel).relu_()  # (in-place addmm_ would go uncounted)
            for layer in linears[:-1]:
                hidden = F.linear(hidden, layer.weight, layer.bias).relu_()
            pred = F.linear(hidden, linears[-1].weight, linears[-1].bias)
            out = out + (pred + rows[:, d:] if self.lr_skip else pred).float() * weight[k, :, None]
        return out

    def query_folded(self, img: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """:meth:`gen_feat` + :meth:`query_rgb` re-associated, for training: image [B, 3, h, w] in [0, 1], queries
        ``coord`` [B, Q, 2] and one cell per image ``cell`` [B, 2] -> [B, Q, 3] in [-1, 1] space."""
        b, _, h, w = img.shape
        (iy, ry), (ix, rx) = (nearest_geometry(coord[..., i].reshape(-1), n) for i, n in ((0, h), (1, w)))
        index, rel = _members(iy, ry, ix, rx, w)
        index = index + torch.arange(b, device=img.device).repeat_interleave(coord.shape[1]) * (h * w)
        z = self.fold((img - 0.5) / 0.5, cell * cell.new_tensor([h, w])).reshape(b * h * w, -1)
        return self.decode(z, index, rel).view(b, -1, 3)

    def default_chunk(self, device: torch.device) -> int:
        """Queries per decoder call: on a GPU 65536 (each chunk costs a kernel launch per layer, and fewer queries
        leave it idle); on the CPU 2048 queries of a 256-wide MLP (the activations stay in cache), more for narrower
        ones, whose time per chunk is mostly Python overhead (bench/bench_sr.py --only chunk)."""
        if device.type != "cpu":
            return 65536
        width = max(m.out_features for m in self.imnet.layers[:-1] if isinstance(m, nn.Linear))
        return min(32768, 2048 * max(1, 256 // width))

    @torch.no_grad()
    def upscale(self, img: torch.Tensor, size: tuple[int, int], tile: int | None = 512,
                chunk: int | None = None) -> torch.Tensor:
        """[B, 3, h, w] in [0, 1] -> [B, 3, H, W] float32 in [0, 1], computing in the model's dtype. The encoder runs
        on LR tiles of about ``tile`` pixels a side (None: one tile), the decoder on about ``chunk`` queries at a
        time; by default :meth:`default_chunk`."""
        check_pixels(img, 4, "LIIF.upscale")
        (b, _, h, w), (H, W) = img.shape, check_size(size)
        if tile is not None and tile < 1:
            raise ValueError(f"tile must be a positive number of LR pixels (or None: one tile), got {tile}")
        p = next(self.parameters())
        if b == 0:
            return torch.empty(0, 3, H, W, device=p.device)
        chunk = chunk or self.default_chunk(p.device)
        x = ((img.to(p.device, torch.float32) - 0.5) / 0.5).to(p.dtype).contiguous(memory_format=torch.channels_last)
        (iy, ry), (ix, rx) = (tuple(t.to(p.device) for t in axis_geometry(n, N)) for n, N in ((h, H), (w, W)))
        rel_cell = torch.ones(2) * torch.tensor([2 / H, 2 / W]) * torch.tensor([h, w]).float()  # reference float32
        rel_cell = rel_cell.to(p.device).expand(b, 2)
        halo = self.encoder.radius + 1
        out = torch.empty(b, H, W, 3, device=p.device)
        for r0, r1 in _bands(H, h, tile):
            y0, y1 = int(iy[:, r0:r1].min()), int(iy[:, r0:r1].max()) + 1
            for c0, c1 in _bands(W, w, tile):
                x0, x1 = int(ix[:, c0:c1].min()), int(ix[:, c0:c1].max()) + 1
                a0, a1, b0, b1 = max(y0 - halo, 0), min(y1 + halo, h), max(x0 - halo, 0), min(x1 + halo, w)
                # The encoder sees its receptive radius (+1 for the fold's conv) beyond the cells the queries read,
                # so crop borders never reach them: zero padding acts only where the whole image has it.
                z = self.fold(x[:, :, a0:a1, b0:b1], rel_cell)[:, y0 - a0:y1 - a0, x0 - b0:x1 - b0]
                hz, wz = z.shape[1:3]
                z = z.reshape(-1, z.shape[-1]).contiguous()
                image = torch.arange(b, device=p.device).view(1, b, 1) * (hz * wz)
                step = max(1, chunk // (b * (c1 - c0)))
                for q0 in range(r0, r1, step):
                    q1 = min(q0 + step, r1)
                    rows, cols = slice(q0, q1), slice(c0, c1)
                    index, rel = _members(iy[:, rows, None] - y0, ry[:, rows, None], ix[:, None, cols] - x0,
                                          rx[:, None, cols], wz)  # [4, R, C], [4, R, C, 2], the same for each image
                    index = (index.view(4, 1, -1) + image).view(4, -1)
                    rel = rel.view(4, 1, -1, 2).expand(4, b, -1, 2).reshape(4, -1, 2)
                    pred = self.decode(z, index, rel).view(b, q1 - q0, c1 - c0, 3)
                    out[:, rows, cols] = (pred * 0.5 + 0.5).clamp_(0, 1)
        return out.permute(0, 3, 1, 2)


def _members(iy, ry, ix, rx, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row index into a row-major table of ``width`` columns and offset of the four ensemble members, in the reference's
    order (y shift outer), from per-axis :func:`nearest_geometry` whose y and x parts broadcast against each other."""
    index = torch.stack([iy[a] * width + ix[e] for a in (0, 1) for e in (0, 1)])
    rel = torch.stack([torch.stack(torch.broadcast_tensors(ry[a], rx[e]), -1) for a in (0, 1) for e in (0, 1)])
    return index, rel


def _bands(n_out: int, n_in: int, tile: int | None) -> list[tuple[int, int]]:
    """Output ranges whose LR footprint is about ``tile`` pixels (one range when tile is None or covers the input)."""
    if tile is None or tile >= n_in:
        return [(0, n_out)]
    step = max(1, n_out * tile // n_in)
    return [(i, min(i + step, n_out)) for i in range(0, n_out, step)]
