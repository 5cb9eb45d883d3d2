"""What this machine offers the GPU path: CUDA devices, numba-cuda, TensorRT.

Every probe returns a value or a one-line reason and never raises: ``edge-foct doctor`` and the
start-up backend choice call them on machines without a GPU, a driver or the ``gpu`` extra.
These are start-up checks, never on the per-frame path.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_gib: float

    @property
    def sm(self) -> str:
        """e.g. "sm_87" (Jetson Orin), "sm_86" (RTX 3090)."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def cuda_devices() -> tuple[list[CudaDevice], str]:
    """The CUDA devices, read through cuda-python's driver API; ``([], reason)`` when none."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return [], "cuda-python is not installed (pip install 'edge-foct[gpu]')"
    try:
        (err,) = driver.cuInit(0)
    except Exception as e:  # cuda-python raises its own loader error when libcuda is absent
        return [], f"no NVIDIA driver (libcuda cannot be loaded: {type(e).__name__})"
    if err != driver.CUresult.CUDA_SUCCESS:
        return [], f"cuInit failed: {err.name}"
    err, count = driver.cuDeviceGetCount()
    if err != driver.CUresult.CUDA_SUCCESS or count == 0:
        return [], "the driver reports no CUDA device"
    attr = driver.CUdevice_attribute
    out = []
    for i in range(count):
        _, dev = driver.cuDeviceGet(i)
        _, raw = driver.cuDeviceGetName(256, dev)
        _, major = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        _, minor = driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        _, nbytes = driver.cuDeviceTotalMem(dev)
        name = raw.split(b"\0", 1)[0].decode(errors="replace")
        out.append(CudaDevice(i, name, (int(major), int(minor)), round(nbytes / 2**30, 1)))
    _, ver = driver.cuDriverGetVersion()
    return out, f"{count} device(s), driver supports CUDA {ver // 1000}.{ver % 1000 // 10}"


def numba_simulator() -> bool:
    """True when NUMBA_ENABLE_CUDASIM=1: kernels run in numba's Python simulator, not on a GPU."""
    try:
        from numba import config
    except ImportError:
        return False
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


def numba_cuda() -> tuple[str | None, bool, str]:
    """(numba-cuda version or None, a real device is usable, reason)."""
    try:
        from importlib.metadata import version

        ver = version("numba-cuda")
    except Exception:  # PackageNotFoundError, or a broken install's metadata
        return None, False, "numba-cuda is not installed (pip install 'edge-foct[gpu]')"
    if numba_simulator():
        return ver, False, "NUMBA_ENABLE_CUDASIM=1: the simulator runs kernels in Python, not on a GPU"
    try:
        from numba import cuda

        if cuda.is_available():
            dev = cuda.get_current_device()
            cc = dev.compute_capability
            return ver, True, f"{dev.name.decode() if isinstance(dev.name, bytes) else dev.name} sm_{cc[0]}{cc[1]}"
    except Exception as e:  # numba raises several driver/toolkit error types; the reason is what counts
        return ver, False, f"numba-cuda cannot use a device ({_first_line(e)})"
    return ver, False, "numba-cuda finds no CUDA device (no GPU or no driver)"


def nvvm_version() -> tuple[str | None, str]:
    """(libNVVM version or None, reason): numba-cuda needs libNVVM to compile kernels (JIT on the
    device, ``compile_ptx`` anywhere). It comes with the CUDA toolkit or ``cuda-toolkit[nvvm]``."""
    try:
        from numba.cuda.cudadrv.nvvm import NVVM

        major, minor = NVVM().get_version()
    except ImportError:
        return None, "numba-cuda is not installed"
    except Exception as e:  # NvvmSupportError and loader errors: the reason is what counts
        return None, f"libNVVM not found ({_first_line(e)}); install the CUDA toolkit or 'cuda-toolkit[nvvm]'"
    return f"{major}.{minor}", "kernels can be compiled"


def tensorrt_version() -> tuple[str | None, str]:
    """(TensorRT version or None, reason)."""
    try:
        import tensorrt
    except ImportError:
        return None, "no module named tensorrt; it comes with JetPack on a Jetson, `pip install tensorrt` on a PC"
    except Exception as e:  # a TensorRT whose CUDA libraries are missing fails on import
        return None, f"TensorRT does not import ({_first_line(e)})"
    return tensorrt.__version__, "importable"
