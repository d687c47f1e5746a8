import os
from pathlib import Path

import pytest
import torch

# One thread: stable and reproducible on small CPUs (2-thread runs can stall there).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's read-only material (CI has it beside the clone; a user's clone does not)."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: this test needs the project's shared data (present in CI)")
    return SHARED


@pytest.fixture
def vm_hwm():
    """A function reading the process's peak resident size (Linux VmHWM, KiB)."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads Linux's VmHWM from /proc/self/status")

    def read() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return read


def official_weights_missing(reason: str):
    """Skip a test that needs the official LIIF weights when they were not pulled (offline); CI sets
    ARDET_REQUIRE_OFFICIAL=1, where a skip would hide the checks against the published PSNR: it fails instead."""
    if os.environ.get("ARDET_REQUIRE_OFFICIAL") == "1":
        pytest.fail(f"{reason} (ARDET_REQUIRE_OFFICIAL=1: `ardet weights pull liif-edsr-baseline` must have run)")
    pytest.skip(reason)
