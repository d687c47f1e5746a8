"""The FLOP counter against analytic counts (2 FLOPs per multiply-add)."""
import pytest
import torch
import torch.nn.functional as F

from ardet.flops import count_flops


def test_conv_and_linear_match_analytic_counts():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.rand(2, 3, 10, 12)
    _, fc = count_flops(lambda: torch.relu(conv(x)))
    assert fc.flops == 2 * 2 * 8 * 3 * 9 * 10 * 12
    assert fc.macs == fc.flops / 2
    assert "relu" in fc.uncounted_ops  # ran but not counted: listed, not hidden
    lin = torch.nn.Linear(16, 4)
    _, fc = count_flops(lin, torch.rand(5, 16))
    assert fc.flops == 2 * 5 * 16 * 4


def test_cpu_attention_is_counted():
    q, k, v = torch.rand(2, 4, 10, 8), torch.rand(2, 4, 12, 8), torch.rand(2, 4, 12, 8)
    _, fc = count_flops(F.scaled_dot_product_attention, q, k, v)
    assert fc.flops == 2 * (2 * 4 * 10 * 12 * 8) * 2  # QK^T and AV, each B*H*L*S*D multiply-adds


def test_interpolation_and_grid_sample_are_counted():
    x = torch.rand(1, 3, 20, 30)
    _, up = count_flops(F.interpolate, x, size=(40, 60), mode="bilinear", align_corners=False)
    assert up.flops == 2 * 4 * 3 * 40 * 60  # 4 taps per output value
    _, down = count_flops(F.interpolate, x, size=(10, 15), mode="bilinear", antialias=True)
    # separable: width pass 20x15 outputs with 2*2 taps, then height pass 10x15 with 2*2 taps
    assert down.flops == 2 * 3 * (20 * 15 * 4 + 10 * 15 * 4)
    grid = torch.rand(1, 5, 7, 2) * 2 - 1
    _, gs = count_flops(F.grid_sample, x, grid, mode="bilinear", align_corners=False)
    assert gs.flops == 2 * 4 * 3 * 5 * 7
    _, nearest = count_flops(F.grid_sample, x, grid, mode="nearest", align_corners=False)
    assert nearest.flops == 0


def _taps(n_in: int, n_out: int, mode: str) -> int:
    """Brute force: the most input pixels any output pixel of an antialiased 1-D resize reads (resize each one-hot
    row and count the nonzero weights per output)."""
    weights = F.interpolate(torch.eye(n_in).view(n_in, 1, 1, n_in), size=(1, n_out), mode=mode, antialias=True)
    return int((weights.view(n_in, n_out) != 0).sum(0).max())


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_shrink_is_counted_by_its_real_taps_at_non_integer_factors(mode):
    x = torch.rand(1, 3, 40, 30)
    (h_out, w_out) = (18, 14)  # x0.45 and x0.47: windows of 4.4 and 4.3 pixels bilinear, 8.9 and 8.6 bicubic
    taps_h, taps_w = _taps(40, h_out, mode), _taps(30, w_out, mode)
    _, count = count_flops(F.interpolate, x, size=(h_out, w_out), mode=mode, antialias=True)
    assert count.flops == 2 * 3 * (40 * w_out * taps_w + h_out * w_out * taps_h)  # width pass, then height pass


def test_counts_add_up():
    lin = torch.nn.Linear(4, 4)
    _, a = count_flops(lin, torch.rand(1, 4))
    _, b = count_flops(lambda: torch.sigmoid(lin(torch.rand(2, 4))))
    total = a + b
    assert total.flops == a.flops + b.flops and total.by_op["addmm"] == a.flops + b.flops
    assert "sigmoid" in total.uncounted_ops


def test_inference_mode_counts_the_same():
    """Under inference_mode composite ops arrive undecomposed; the count and the uncounted list must not change."""
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 20, 30)

    def stage(t):
        t = F.interpolate(t, size=(40, 60), mode="bilinear", align_corners=False)
        q = conv(t).flatten(2).transpose(1, 2).unsqueeze(1)
        return torch.relu(F.scaled_dot_product_attention(q, q, q))

    _, plain = count_flops(stage, x)
    with torch.inference_mode():
        _, inference = count_flops(stage, x)
    assert plain.flops == inference.flops > 0
    assert plain.by_op == inference.by_op
    assert plain.uncounted_ops == inference.uncounted_ops and "relu" in plain.uncounted_ops
    tokens, channels = 38 * 58, 4
    analytic = 2 * 4 * 3 * 40 * 60 + 2 * 4 * 3 * 9 * 38 * 58 + 2 * 2 * tokens * tokens * channels
    assert plain.flops == analytic
