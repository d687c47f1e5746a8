"""eval.CostMeter: FLOPs from the counter on the real arguments (checked against analytic conv formulas), counted once
per input signature, timed on the un-instrumented call."""
import os
import threading

import pytest
import torch

from eval import STAGES, CostMeter, measuring


def conv_flops(cin, cout, k, h, w):
    """2 FLOPs per multiply-add; 'same' padding keeps h x w."""
    return 2 * cout * cin * k * k * h * w


def test_flops_match_the_analytic_formula_and_are_reused_by_shape():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    meter = CostMeter()
    x = torch.rand(1, 3, 20, 30)
    y = meter.measure("detector", conv, x)
    assert torch.equal(y, conv(x))
    first = meter.take()
    assert first["flops"]["detector"] == conv_flops(3, 8, 3, 20, 30)
    assert first["flops_source"] == {"detector": "counted"}
    assert set(STAGES) <= set(first["flops"]) and first["flops"]["predictor"] == 0
    assert first["seconds"]["detector"] > 0 and first["seconds"]["resample"] == 0.0

    meter.measure("detector", conv, torch.rand(1, 3, 20, 30))  # same shape: the count is reused
    again = meter.take()
    assert again["flops"] == first["flops"] and again["flops_source"] == {"detector": "shape-cache"}

    meter.measure("detector", conv, torch.rand(1, 3, 10, 12))  # new shape: counted afresh
    assert meter.take()["flops"]["detector"] == conv_flops(3, 8, 3, 10, 12)


def test_repeated_stage_calls_add_up_and_take_resets():
    conv = torch.nn.Conv2d(4, 4, 1, bias=False)
    meter = CostMeter()
    meter.measure("resample", conv, torch.rand(1, 4, 8, 8))
    meter.measure("resample", conv, torch.rand(1, 4, 16, 16))
    costs = meter.take()
    assert costs["flops"]["resample"] == conv_flops(4, 4, 1, 8, 8) + conv_flops(4, 4, 1, 16, 16)
    assert meter.take()["flops"]["resample"] == 0


def test_flops_key_and_owner_decide_what_is_shared():
    a = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    b = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
    meter = CostMeter()
    x = torch.rand(1, 3, 12, 12)
    meter.measure("detector", a.forward, x)
    meter.measure("detector", b.forward, x)  # same qualname and shape, another module: not a cache hit
    assert meter.take()["flops"]["detector"] == conv_flops(3, 4, 3, 12, 12) + conv_flops(3, 16, 3, 12, 12)

    def run(x, original_size):  # FLOPs depend on x only, not on the size boxes are mapped back to
        return a(x)

    meter.measure("detector", run, x, (100, 200), flops_key=tuple(x.shape))
    meter.measure("detector", run, x, (300, 400), flops_key=tuple(x.shape))
    costs = meter.take()
    assert costs["flops_source"] == {"detector": "counted"}  # the second call hit the cache
    assert costs["flops"]["detector"] == 2 * conv_flops(3, 4, 3, 12, 12)
    meter.measure("detector", run, x, (500, 600), flops_key=tuple(x.shape))
    assert meter.take()["flops_source"] == {"detector": "shape-cache"}


def test_peak_memory_is_recorded_per_stage():
    meter = CostMeter()
    meter.measure("resample", torch.nn.functional.interpolate, torch.rand(1, 3, 8, 8), size=(16, 16),
                  mode="bilinear")
    costs = meter.take()
    assert set(costs["peak_memory_bytes"]) == {"resample"}  # its size: the next test
    assert costs["flops"]["resample"] == 2 * 4 * 3 * 16 * 16  # bilinear: 4 taps per output element


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable peak RSS")
def test_cpu_peak_memory_is_the_calls_own_not_the_runs_high_water_mark():
    def touch_400_mib():
        return torch.ones(100 * 2 ** 20).sum()  # 400 MiB of float32, written, then freed

    meter = CostMeter()
    meter.measure("detector", touch_400_mib)
    big = meter.take()["peak_memory_bytes"]["detector"]
    meter.measure("detector", torch.add, torch.ones(3), 1)
    small = meter.take()["peak_memory_bytes"]["detector"]
    assert big - small > 300 * 2 ** 20, (big, small)  # ru_maxrss would report the big call's peak again


def test_counts_inside_inference_mode_too():
    """FlopCounterMode alone reports 0 for a plain upsample under torch.inference_mode; the meter must not."""
    meter = CostMeter()
    with torch.inference_mode():
        x = torch.rand(1, 3, 8, 8)
        meter.measure("resample", torch.nn.functional.interpolate, x, size=(16, 16), mode="bilinear")
    assert meter.take()["flops"]["resample"] == 2 * 4 * 3 * 16 * 16


def test_each_thread_keeps_its_own_costs():
    """Two threads measuring through one meter at once (as one policy serving a threaded server): each call's costs
    are its own. The barrier makes both threads measure before either takes, the interleaving that mixed them."""
    meter, barrier, taken = CostMeter(), threading.Barrier(2), {}
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def work(side):
        meter.reset()
        meter.measure("detector", conv, torch.rand(1, 3, side, side))
        barrier.wait()
        taken[side] = meter.take()["flops"]["detector"]

    threads = [threading.Thread(target=work, args=(side,)) for side in (8, 16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert taken == {8: conv_flops(3, 4, 3, 8, 8), 16: conv_flops(3, 4, 3, 16, 16)}


def test_measuring_can_skip_flop_counting_and_leave_the_process_peak_alone(vm_hwm):
    meter = CostMeter()
    torch.ones(100 * 2 ** 20).sum()  # raise the process's peak by 400 MiB, then free it
    before = vm_hwm()
    calls = []
    with measuring(flops=False, memory=False):
        meter.measure("detector", lambda x: calls.append(1) or x + 1, torch.ones(3))
        costs = meter.take()
    assert calls == [1]  # no counted forward: the stage ran once
    assert costs["flops"] == {} and costs["peak_memory_bytes"] == {} and costs["seconds"]["detector"] > 0
    assert vm_hwm() >= before  # the process's high-water mark was not reset
    meter.measure("detector", lambda x: calls.append(1) or x + 1, torch.ones(3))  # outside: all measured again
    assert calls == [1, 1, 1] and "detector" in meter.take()["peak_memory_bytes"]


def test_seconds_are_the_uninstrumented_call_only(monkeypatch):
    """A new shape is run twice, once under the FLOP counter and once timed: the record must hold the timed call's
    duration alone. A fake clock that only the stage advances makes that exact."""
    import eval.cost

    clock = [0.0]
    monkeypatch.setattr(eval.cost.time, "perf_counter", lambda: clock[0])

    def stage(x):
        clock[0] += 1.0  # every call of the stage takes "one second"
        return x * 2

    meter = CostMeter()
    meter.measure("detector", stage, torch.ones(3))  # counted, then timed
    first = meter.take()
    meter.measure("detector", stage, torch.ones(3))  # from the shape cache: timed only
    assert first["flops_source"] == {"detector": "counted"} and clock[0] == 3.0
    assert first["seconds"]["detector"] == 1.0 and meter.take()["seconds"]["detector"] == 1.0

