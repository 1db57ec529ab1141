"""The one registry of families, keyed by scheme class.

Everything that needs a scheme's family reads it here (:func:`family`): ``nquant.api``,
``store``, ``codec``, ``validate``, the report and workflow helpers and the CUDA dispatch.
The families are registered in :mod:`nquant.families` (its ``__init__``), one line each,
which runs before any module of the package is used.
"""

from nquant.errors import SchemeError
from nquant.families.base import Family
from nquant.schemes import Scheme

_FAMILIES = {}


def register(scheme_class, fam):
    """Make ``fam`` (a :class:`Family`) the family of ``scheme_class`` (a ``Scheme`` subclass)."""
    if not (isinstance(scheme_class, type) and issubclass(scheme_class, Scheme)):
        raise TypeError(f"{scheme_class!r} is not a Scheme class")
    if not isinstance(fam, Family):
        raise TypeError(f"{fam!r} is not a Family")
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


def registered():
    """``{scheme class: Family}`` of every registered family (a copy)."""
    return dict(_FAMILIES)
