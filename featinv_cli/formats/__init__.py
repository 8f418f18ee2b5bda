"""featinv's own file kinds (featinv-formats(5)), one module each: feature files (``features``), `sample
--fit` statistics (``statistics``), model files (``model``), training checkpoints (``checkpoint``),
`pack`'s views (``views``) and featinv's PNGs (``png``). Each owns its format string, writer, reader,
checks, replace rule (its ``Kind``'s ``ours``) and the header-only account `featinv info` prints; this registry
finds a file's kind by its header."""
from __future__ import annotations

from pathlib import Path

from ..errors import FeatinvError
from ..safetensors_codec import read_metadata, safetensors_header
from . import checkpoint, features, model, statistics, views
from .base import NPY_MAGIC, Kind, refuse_foreign

KINDS: dict[str, Kind] = {k.format: k for k in (features.FEATURE_FILE, statistics.STATS_FILE, model.MODEL_FILE,
                                                  views.VIEWS_FILE, checkpoint.CHECKPOINT_FILE)}


def featinv_kind(source: str | Path | bytes | bytearray) -> str | None:
    """"a featinv model" when a path (its header read) or bytes hold one of featinv's own files, else None:
    for the message when one is given where an image or a folder was expected. A path that is not a
    regular file (a FIFO would block) or whose first 8 bytes promise a header over 100 MB (a video: its
    bytes read as a length) is no featinv file."""
    try:
        if isinstance(source, (str, Path)):
            if not Path(source).is_file():
                return None
            with open(source, "rb") as f:
                head = f.read(8)
            if len(head) < 8 or int.from_bytes(head, "little") > 100 << 20:
                return None
            meta = read_metadata(source)
        else:
            meta = safetensors_header(source, "")[1]
    except Exception:
        return None
    kind = KINDS.get(meta.get("format"))
    return f"a featinv {kind.name}" if kind else None


def read_any_header(path: str, guess=None):
    """(name, the bytes when read whole (stdin, a pipe) else None, entries, metadata, header length) of a
    safetensors file; a bare .npy is described at once (a dict; ``guess``: features.describe_npy's).
    Anything else is refused by name."""
    from ..files import read_bytes
    from ..safetensors_codec import read_header

    name = "<stdin>" if path == "-" else path
    p = Path(path)
    if path == "-" or p.exists() and not p.is_file() and not p.is_dir():  # stdin, a pipe, <(...)
        data = read_bytes(path)
        if bytes(data[:6]) == NPY_MAGIC:
            return features.describe_npy(data, name, guess)
        refuse_foreign(data, name)
        return (name, data, *safetensors_header(data, name))
    if not p.is_file():
        raise FeatinvError(f"{p}: no such file" if not p.exists() else f"{p}: is a directory, expected a file")
    with p.open("rb") as f:
        head = f.read(8)
    if head[:6] == NPY_MAGIC:
        return features.describe_npy(read_bytes(path), name, guess)
    refuse_foreign(head, name)
    return (name, None, *read_header(path))


def describe(path: str, guess=None) -> dict:
    """What `featinv info` prints. Everything but a bare .npy (``guess``: features.describe_npy's) is
    described from the safetensors header alone: no torch, no tensors read (but SIFT's keypoint counts),
    so info answers in a fraction of a second."""
    header = read_any_header(path, guess)
    if isinstance(header, dict):
        return header
    name, data, entries, meta, header_len = header
    fmt = meta.get("format")
    if fmt in KINDS:
        return KINDS[fmt].describe(name, data if data is not None else path, entries, meta, header_len)
    if "source" in meta and "model" in meta:  # a network's weights as featinv ships them (SqueezeNet)
        return model.describe_weights(name, data, entries, meta, header_len)
    raise FeatinvError(f"{name}: safetensors file without featinv metadata (format={fmt!r})")
