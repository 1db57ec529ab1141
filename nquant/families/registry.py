"""The one registry of families, keyed by scheme class.

Everything that needs a scheme's family reads it here (:func:`family`): ``nquant.api``,
``store``, ``codec``, ``validate``, the report and workflow helpers and the CUDA dispatch.
The families are registered in :mod:`nquant.families` (its ``__init__``), one line each,
which runs before any module of the package is used.
"""

from nquant.errors import SchemeError
from nquant.families.base import Family
from nquant.schemes import Scheme

_FAMILIES: dict[type, Family] = {}
_PRESETS: dict[str, Scheme] = {}


def register(scheme_class, fam, presets=None):
    """Make ``fam`` (a :class:`Family`) the family of ``scheme_class`` (a ``Scheme`` subclass);
    ``presets``: ``{name: scheme}``, the names the CLI and workflow files accept for it."""
    if not (isinstance(scheme_class, type) and issubclass(scheme_class, Scheme)):
        raise TypeError(f"{scheme_class!r} is not a Scheme class")
    if not isinstance(fam, Family):
        raise TypeError(f"{fam!r} is not a Family")
    for name, scheme in (presets or {}).items():
        if not isinstance(scheme, scheme_class) or name in _PRESETS:
            raise TypeError(f"preset {name!r}: expected a new name for a {scheme_class.__name__}")
        _PRESETS[name] = scheme
    _FAMILIES[scheme_class] = fam
    return fam


def family(scheme):
    """The :class:`Family` implementing ``scheme`` (``SchemeError`` for what is not a scheme or
    has no family)."""
    if not isinstance(scheme, Scheme):
        raise SchemeError(f"scheme={scheme!r} is invalid: expected an nquant scheme such as nq.Uniform(...)")
    try:
        return _FAMILIES[type(scheme)]
    except KeyError:
        raise SchemeError(f"scheme type={scheme.type!r} has no implementation") from None


def presets():
    """``{preset name: scheme}`` of every registered family, in registration order (a copy)."""
    return dict(_PRESETS)


def registered():
    """``{scheme class: Family}`` of every registered family (a copy)."""
    return dict(_FAMILIES)
