"""Device names from configs and the command line, checked once: a typo or a missing GPU is one clear error; and
the environment a measurement was made in (versions, processor, GPU), which results record."""
from __future__ import annotations

import os

import torch

STACK = ("ardet", "torch", "torchvision", "transformers", "timm", "pycocotools", "safetensors", "numpy")


def environment() -> dict:
    """Versions of ardet and its stack, Python, the processor, torch's CPU threads and the GPU (or None)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model; platform.processor() is often just the architecture
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"versions": {name: installed(name) for name in STACK}, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def resolve_device(name: str | torch.device, what: str = "device") -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", ..., or "auto": cuda when available, else cpu) as a torch.device; ``what``
    names the option in the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{what} {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} {name!r}: no CUDA device is available here; use cpu")
    return device
