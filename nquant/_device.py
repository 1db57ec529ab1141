"""Device selection: ``resolve_device(x, device)`` -> ``"cpu"`` or ``"cuda"``.

CUDA is chosen by ``device="cuda"`` or by an input that lives in device memory: an
object exposing ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, numba device
arrays), a numba device array (also the CUDA simulator's), or a Dask array whose chunks
are such arrays (its ``_meta``).  Nothing here imports ``numba.cuda`` unless CUDA is
selected, so ``import nquant`` never touches CUDA.
"""

import importlib

from nquant.errors import DeviceError

__all__ = ["DEVICES", "is_cuda_array", "require_cuda", "resolve_device"]

DEVICES = ("cpu", "cuda")


def is_cuda_array(x):
    """Whether ``x`` is an array in CUDA device memory (or a Dask array of such chunks)."""
    if getattr(type(x), "__cuda_ndarray__", False) or hasattr(x, "__cuda_array_interface__"):
        return True
    if type(x).__module__.split(".")[0] == "dask":
        meta = getattr(x, "_meta", None)
        return meta is not None and is_cuda_array(meta)
    return False


def require_cuda():
    """``numba.cuda``, or a ``DeviceError`` saying why CUDA cannot be used.

    Returns
    -------
    module
        ``numba.cuda`` (numba-cuda's target, or its simulator under ``NUMBA_ENABLE_CUDASIM=1``).

    Raises
    ------
    DeviceError
        numba-cuda is not installed, or ``numba.cuda.is_available()`` is False (no NVIDIA
        GPU, driver or NVVM).
    """
    try:
        cuda = importlib.import_module("numba.cuda")
    except ImportError as e:
        raise DeviceError("device='cuda' needs numba-cuda, which is not installed: "
                          "pip install 'nquant[cuda]' (or pip install numba-cuda)") from e
    if not cuda.is_available():
        raise DeviceError("device='cuda' is not available: numba.cuda.is_available() is False (no NVIDIA "
                          "GPU, CUDA driver or NVVM found); use device='cpu', or set "
                          "NUMBA_ENABLE_CUDASIM=1 before numba is imported to run the CUDA simulator")
    return cuda


def resolve_device(x, device="cpu"):
    """The device that quantizes ``x``.

    Parameters
    ----------
    x : array-like
    device : "cpu" or "cuda"
        ``"cuda"`` selects the GPU.  An input in device memory selects it too, whatever
        ``device`` says: the CPU kernels cannot read device memory (copy it to the host
        first to quantize on the CPU).

    Returns
    -------
    str : "cpu" or "cuda"

    Raises
    ------
    DeviceError
        ``device`` is neither "cpu" nor "cuda", or CUDA is selected but unavailable
        (see :func:`require_cuda`).
    """
    if not isinstance(device, str) or device not in DEVICES:
        raise DeviceError(f"device={device!r} is not available: expected 'cpu' or 'cuda'")
    if device == "cuda" or is_cuda_array(x):
        require_cuda()
        return "cuda"
    return "cpu"
