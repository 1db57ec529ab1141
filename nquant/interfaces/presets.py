"""Named scheme presets for the CLI and workflow files (``--scheme int8 --axis 0``)."""

import dataclasses
import json
import os

from nquant.errors import SchemeError
from nquant.families.registry import presets
from nquant.interfaces.levels import load_levels_scheme
from nquant.schemes import Scheme, scheme_from_json

PRESETS = presets()
"""``{name: scheme}``: the presets the families declare at registration (:mod:`nquant.families`)."""


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
        scheme = PRESETS[spec]
    elif isinstance(spec, str) and spec.endswith((".json", ".npy")):
        if not os.path.isfile(spec):
            raise SchemeError(f"scheme={spec!r}: no such file (a scheme JSON or levels .npy file)")
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
        fields = {f.name for f in dataclasses.fields(scheme)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise SchemeError(f"{unknown[0]}={changes[unknown[0]]!r} is not a field of scheme type "
                              f"{scheme.type!r}: fields are {sorted(fields)}")
        scheme = scheme.replace(**changes)
    return scheme
