"""Quantization families: the :class:`~nquant.families.base.Family` type (``base``), the
registry keyed by scheme class (``registry``), and one module per family.

Adding a family: write its module (hooks and a ``FAMILY``), then register it below.
"""

from nquant.families import asq, blockwise, codebook, kmeans_blockwise, mx, outliers, significant, uniform
from nquant.families.registry import register
from nquant.schemes import ASQ, NF4, Blockwise, Codebook, KMeansBlockwise, Outliers, Uniform

register(Uniform, uniform.FAMILY, presets={
    "int8": Uniform(bits=8), "int8-sym": Uniform(bits=8, symmetric=True),
    "int8-channel": Uniform(bits=8, symmetric=True, axis=0), "int4": Uniform(bits=4),
    "int4-block64": Uniform(bits=4, block_size=64), "int4-mse": Uniform(bits=4, range="mse"),
    "int2": Uniform(bits=2, range="mse"),
    "int4-sym-block64-f16": Uniform(bits=4, symmetric=True, block_size=64, scale_dtype="float16",
                                    zero_point_storage="packed")})
register(Codebook, codebook.FAMILY)
register(Blockwise, blockwise.FAMILY, presets={"nf4": NF4(), "nf4-dq": NF4(double_quant=True)})
register(KMeansBlockwise, kmeans_blockwise.FAMILY)
register(Outliers, outliers.FAMILY)
register(ASQ, asq.FAMILY, presets={"asq4": ASQ(bits=4, method="quiver_approx"),
                                   "asq4-exact": ASQ(bits=4, method="quiver")})
register(mx.MXFP4, mx.FAMILY, presets={"mxfp4": mx.MXFP4()})
register(mx.MXFP8, mx.FAMILY, presets={"mxfp8": mx.MXFP8()})
register(significant.Significant, significant.FAMILY, presets={"significant6": significant.Significant(keepbits=6)})
