"""Reading an ONNX file a user named: a text file, a truncated download or a folder is one line
(BackboneError), not a protobuf DecodeError traceback. No torch: the device side uses it too."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import Error as ProtobufError

from edge_foct.runtime.errors import BackboneError


def load_onnx(path: str | os.PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (ProtobufError, ValueError, OSError) as e:
        raise BackboneError(f"{path}: not an ONNX file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else 'corrupt or truncated'}); "
                            f"check the file (a partial download?)") from None
    if not model.graph.node:
        raise BackboneError(f"{path}: not an ONNX file (no graph nodes; a text or empty file?)")
    return model
