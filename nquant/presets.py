"""Named scheme presets for the CLI and workflow files (``--scheme int8 --axis 0``)."""

import json
import os

from nquant.errors import SchemeError
from nquant.schemes import ASQ, MXFP4, MXFP8, NF4, Scheme, Uniform, scheme_from_json

PRESETS = {
    "int8": lambda: Uniform(bits=8),
    "int8-sym": lambda: Uniform(bits=8, symmetric=True),
    "int8-channel": lambda: Uniform(bits=8, symmetric=True, axis=0),
    "int4": lambda: Uniform(bits=4),
    "int4-block64": lambda: Uniform(bits=4, block_size=64),
    "int4-mse": lambda: Uniform(bits=4, range="mse"),
    "int2": lambda: Uniform(bits=2, range="mse"),
    "nf4": lambda: NF4(),
    "nf4-dq": lambda: NF4(double_quant=True),
    "asq4": lambda: ASQ(bits=4, method="quiver_approx"),
    "asq4-exact": lambda: ASQ(bits=4, method="quiver"),
    "mxfp4": lambda: MXFP4(),
    "mxfp8": lambda: MXFP8(),
}


def register_preset(name, factory):
    """Add a preset: ``factory()`` returns a Scheme."""
    PRESETS[name] = factory


def resolve_scheme(spec, **overrides):
    """A Scheme from a preset name, a scheme JSON text/dict, or a Scheme, with field overrides.

    Parameters
    ----------
    spec : str, dict or Scheme
        ``"int8"``, ``'{"type": "uniform", "bits": 4}'``, a dict of the same, a scheme, or
        the path of a ``.json`` scheme file or a ``.npy`` file of levels (a ``Codebook``;
        ``nquant fit-codebook`` writes both).
    **overrides
        Scheme fields to change (``axis=0``); ``None`` values are ignored.
    """
    if isinstance(spec, Scheme):
        scheme = spec
    elif isinstance(spec, dict):
        scheme = scheme_from_json(spec)
    elif isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            scheme = scheme_from_json(json.loads(spec))
        except json.JSONDecodeError as e:
            raise SchemeError(f"scheme={spec!r} is not valid JSON: {e}") from e
    elif isinstance(spec, str) and spec in PRESETS:
        scheme = PRESETS[spec]()
    elif isinstance(spec, str) and spec.endswith((".json", ".npy")):
        if not os.path.isfile(spec):
            raise SchemeError(f"scheme={spec!r}: no such file (a scheme JSON or levels .npy file)")
        from nquant.levels import load_levels_scheme

        try:
            scheme = load_levels_scheme(spec)
        except (OSError, ValueError, EOFError) as e:  # unreadable, not a scheme, not a .npy file
            if spec in str(e):
                raise
            raise SchemeError(f"scheme file {spec!r} is invalid: {e}") from None
    else:
        raise SchemeError(f"scheme={spec!r} is not a preset, a scheme JSON or a .json/.npy file: "
                          f"presets are {sorted(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        fields = set(scheme.to_dict()) - {"type", "format_version"}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise SchemeError(f"{unknown[0]}={changes[unknown[0]]!r} is not a field of scheme type "
                              f"{scheme.type!r}: fields are {sorted(fields)}")
        scheme = scheme.replace(**changes)
    return scheme
