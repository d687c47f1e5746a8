"""Atomic files and append-only JSONL: long runs never leave a half-written result behind."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then ``os.replace``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (or the replaced file's own).
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_image(path: str | os.PathLike, image) -> None:
    """A PIL image, encoded in the format its file name's extension names, then written atomically."""
    from PIL import Image

    formats = Image.registered_extensions()
    if Path(path).suffix.lower() not in formats:
        raise ValueError(f"{path}: not an image file name (.png, .jpg, ...)")
    buf = io.BytesIO()
    image.save(buf, format=formats[Path(path).suffix.lower()])
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


class JsonlWriter:
    """Append one JSON object per line, flushed and fsynced per record so a killed run keeps every finished record."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """A JSON file's contents; a missing file or invalid JSON is one clear error naming ``what`` and the path."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


def check_finite_weights(named_tensors: Iterable[tuple[str, Any]], source: str) -> None:
    """Refuse weights holding NaN or infinity where they are loaded: they run without an error and give silently
    wrong outputs (a detector that finds nothing, an SR model that renders black, a predictor stuck mid-range)."""
    import torch

    bad = [name for name, t in named_tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        names = ", ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
        raise ValueError(f"{source}: weights contain NaN or infinity ({names}; {len(bad)} tensors): a corrupt file "
                         f"or a diverged training run")


def module_sha256(module) -> str:
    """The sha256 of a torch module's state (names, dtypes, shapes and values, in order): the identity of the
    weights a run used, whatever file format or path they came from."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    """The file's sha256, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_torch_checkpoint(path: str | os.PathLike, map_location=None) -> Any:
    """A file written by ``torch.save``, read with ``weights_only`` (tensors and plain containers, never unpickled
    code); a damaged one is one ValueError naming it."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, pickle's UnpicklingError, EOFError... for a damaged file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from None


def truncate_jsonl(path: str | os.PathLike, step: int) -> None:
    """Keep a training log's records up to ``step`` (where a run starts): a fresh run starts an empty log, a resumed
    one drops what was logged after its checkpoint (those steps run again, and would be logged twice)."""
    kept = [r for r in read_jsonl(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Records of a JSONL file; a torn last line (the process died mid-write) is skipped, a torn middle line is an error.
    A last line without its newline is torn even when it parses: :class:`JsonlWriter` cuts it before appending, so
    counting it as written would lose it."""
    path = Path(path)
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()[:None if text.endswith("\n") else -1]
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                return
            raise ValueError(f"{path}:{i + 1}: corrupt JSONL record: {e}") from None


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a write the process did not finish) so appends start on a clean line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)
