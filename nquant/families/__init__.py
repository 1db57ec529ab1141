"""Quantization families: the :class:`~nquant.families.base.Family` type (``base``), the
registry keyed by scheme class (``registry``), and one module per family.

Adding a family: write its module (hooks and a ``FAMILY``), then register it below.
"""

from nquant.families import asq, blockwise, codebook, kmeans_blockwise, mx, outliers, uniform
from nquant.families.registry import register
from nquant.schemes import ASQ, MXFP4, MXFP8, Blockwise, Codebook, KMeansBlockwise, Outliers, Uniform

register(Uniform, uniform.FAMILY)
register(Codebook, codebook.FAMILY)
register(Blockwise, blockwise.FAMILY)
register(KMeansBlockwise, kmeans_blockwise.FAMILY)
register(Outliers, outliers.FAMILY)
register(ASQ, asq.FAMILY)
register(MXFP4, mx.FAMILY)
register(MXFP8, mx.FAMILY)
