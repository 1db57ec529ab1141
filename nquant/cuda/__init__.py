"""CUDA twins of nquant's hot kernels (numba-cuda), imported only on CUDA paths.

Each module mirrors the CPU module of the same name in :mod:`nquant.kernels` and exposes
functions with the same names and arguments (``nquant.kernels.affine.quantize_affine`` /
``nquant.cuda.affine.quantize_affine``): ``rng``, ``rounding`` (device functions),
``affine``, ``codebook1d``, ``blockwise``, ``bitpack``.  A kernel gets a twin only with a
public path that runs it (``device="cuda"`` or a device input).
The host functions accept NumPy arrays (copied to the device and back) or device arrays
(numba device arrays, CuPy: results stay on the device).  The scalar helpers (the
counter-based stream, rounding, the encoder's snap/clip) are compiled from the same source
as the CPU's (:mod:`nquant.kernels.scalar`), so the twins give the CPU's codes bit for bit.

``import nquant`` never imports this package; :func:`nquant.quantize` does, for
``device="cuda"`` or a device input (:mod:`nquant.cuda.api`).  Importing it needs
numba-cuda (``pip install 'nquant[cuda]'``); kernels run on a GPU, or on the CUDA simulator
when ``NUMBA_ENABLE_CUDASIM=1`` is set before numba is imported.  Launch sizes live in
:mod:`nquant.cuda._launch`.
"""

__all__ = ["affine", "api", "bitpack", "blockwise", "codebook1d", "rng", "rounding"]
