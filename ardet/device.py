"""Device names from configs and the command line, checked once: a typo or a missing GPU is one clear error."""
from __future__ import annotations

import torch


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
