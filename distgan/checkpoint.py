"""Checkpoints: safetensors files (tensors plus JSON metadata), written atomically.

Layout: flat float32 tensors named ``"<part>.<array>"`` and string metadata:
``format`` = ``"distgan"``, ``format_version``, ``kind``, ``sha256`` and JSON
documents (``spec``, ``config``, ``state``, ``history``). The checksum covers the
tensors' names, dtypes, shapes and bytes in name order and, since version 2, the
kind and every document, so a corrupt spec is refused before anything is built
from it (version 1 files, whose checksum covers the tensors only, still load).

Writing goes to a temporary file in the same folder, flushed and fsynced, then
renamed over the target (POSIX rename is atomic), so a crash mid-save leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

import numpy as np

__all__ = ["CheckpointError", "save", "load", "rebuilding", "FORMAT_VERSION"]

FORMAT_VERSION = 2
_READABLE = ("1", "2")
_MAGIC = "distgan"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, foreign or of an unknown version."""


def _digest(tensors, meta=None):
    """SHA-256 over the tensors and (version 2) the other metadata strings."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    if meta is not None:
        for k in sorted(meta):
            if k != "sha256":
                h.update(b"\0" + k.encode() + b"\0" + str(meta[k]).encode())
    return h.hexdigest()


def save(path, tensors, kind, **documents):
    """Write ``tensors`` (name -> ndarray) and JSON ``documents`` atomically to ``path``."""
    from safetensors.numpy import save as st_save

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta = {"format": _MAGIC, "format_version": str(FORMAT_VERSION), "kind": kind}
    for k, v in documents.items():
        meta[k] = json.dumps(v)
    meta["sha256"] = _digest(tensors, meta)
    blob = st_save(tensors, metadata=meta)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load(path, kind=None):
    """Read a checkpoint: returns (tensors, metadata documents dict).

    Raises
    ------
    CheckpointError
        When the file is missing, not a safetensors file, not a distgan
        checkpoint, of another format version or kind, or fails its checksum.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    if len(blob) < 8:
        raise CheckpointError(f"{path}: too short to be a checkpoint ({len(blob)} bytes)")
    header_len = int.from_bytes(blob[:8], "little")
    if header_len > len(blob) - 8:
        raise CheckpointError(f"{path}: truncated or corrupt (header claims {header_len} bytes, "
                              f"file has {len(blob) - 8})")
    try:
        header = json.loads(blob[8:8 + header_len])
        meta = header.get("__metadata__") or {}
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise CheckpointError(f"{path}: corrupt header (not a safetensors file)") from None
    if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
        raise CheckpointError(f"{path}: not a distgan checkpoint (no 'format: distgan' metadata)")
    version = meta.get("format_version")
    if version not in _READABLE:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this distgan "
                              f"reads versions {', '.join(_READABLE)}")
    if not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: corrupt metadata (values must be strings)")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path}: a {meta.get('kind')!r} checkpoint, expected {kind!r}")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt tensor data: {e}") from None
    if _digest(tensors, meta if version != "1" else None) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch (the file is corrupt)")
    docs = {}
    for k, v in meta.items():
        if k in ("format", "format_version", "kind", "sha256"):
            continue
        try:
            docs[k] = json.loads(v)
        except ValueError:
            raise CheckpointError(f"{path}: corrupt metadata field {k!r}") from None
    docs["kind"] = meta.get("kind")
    return tensors, docs


@contextlib.contextmanager
def rebuilding(path):
    """Wrap the rebuilding of an object from a loaded checkpoint: a missing key or a
    value of the wrong type or size becomes a CheckpointError naming ``path``."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint: {e!r}") from None
