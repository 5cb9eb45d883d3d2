"""User-facing errors: one line that names the offending value and the fix."""


class EdgeFoctError(Exception):
    """An error the CLI prints as a single line (no traceback) and exits with status 2."""


class ImageError(EdgeFoctError):
    """An image that cannot be read or has an unsupported layout."""


class BankError(EdgeFoctError):
    """A memory bank that is missing, corrupt, or from another backbone or format version."""


class BackboneError(EdgeFoctError):
    """A backbone file that is missing or does not follow the feature contract."""


class GpuError(EdgeFoctError):
    """A GPU path (TensorRT, CUDA kernels) asked for on a machine that lacks it, or that failed."""
