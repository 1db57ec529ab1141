"""Verification of stored quantized arrays: whether a group is sealed, and a read of every chunk.

The checks themselves live in :mod:`nquant.validate` (what ``nquant.open`` checks before
decoding, and each chunk read); this module reads whole groups and model groups with them
(``nquant verify``), so it sits above :mod:`nquant.store` and :mod:`nquant.models`.
"""

from typing import Any

import dask.array as da
import numpy as np
from nquant._types import StoreLike

from nquant import chunked, validate
from nquant.errors import StoreError
from nquant.families.registry import family
from nquant.models import member_location, open_model
from nquant.store import as_store, group_meta, open_group
from nquant.store import open as open_store


def is_verified(store: StoreLike, *, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether the nquant group ``store`` is sealed (checksums and a record of its chunks),
    so that reads detect missing and corrupt chunks; False for groups written before."""
    store = as_store(store, storage_options)
    return validate.integrity_record(open_group(store), store) is not None


def verify_chunks(store, *, decode=True, storage_options=None, max_problems=20):
    """Read every chunk of every array of the nquant group ``store`` and report.

    The group is validated as by :func:`nquant.open` (a ``StoreError`` when it cannot be
    opened); then each chunk of ``codes``, of every side array and of ``chunk_stats`` is read
    and checked (present when sealed, checksum, values), and with ``decode`` the array is
    dequantized chunk by chunk (codes within the levels) and the values discarded.

    A model group (``nquant.quantize_safetensors``) is checked tensor by tensor, its arrays
    named ``tensor/array``.

    Returns
    -------
    dict: ``verified`` (the group is sealed: missing chunks and flipped bits are detectable),
    ``arrays`` (name -> chunks read), ``chunks`` (total), ``problems`` (list of one-line
    messages, at most ``max_problems``), ``ok`` (no problem found).
    """
    store = as_store(store, storage_options)
    group = open_group(store)
    attrs = group.attrs.asdict()
    if "nquant_model" in attrs and "nquant" not in attrs:
        return _verify_model(store, decode, max_problems)
    lay = validate.check_group(group, group_meta(group, store), store)
    problems, counts = [], {}
    for name in sorted(group.array_keys()):
        z = group[name]
        reader = validate.ChunkReader(z, name, store, lay.verified, lay.side.get(name))
        n = 0
        for cid in np.ndindex(*z.cdata_shape):
            sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(cid, z.chunks, z.shape))
            n += 1
            try:
                reader[sel]
            except StoreError as e:
                if len(problems) < max_problems:
                    problems.append(str(e))
        counts[name] = n
    if decode and not problems:
        q = open_store(store)
        try:
            da.store(chunked.dequantize(family(q.scheme), q), _Discard(), lock=False)
        except StoreError as e:
            problems.append(str(e))
    return {"verified": lay.verified, "arrays": counts, "chunks": sum(counts.values()),
            "problems": problems, "ok": not problems}


def _verify_model(store, decode, max_problems):
    """:func:`verify_chunks` of every tensor group of a model group (arrays named ``tensor/array``)."""
    report = {"verified": True, "arrays": {}, "chunks": 0, "problems": [], "ok": True}
    for name in open_model(store):  # validates the model attributes and every tensor group
        sub = verify_chunks(member_location(store, name), decode=decode, max_problems=max_problems)
        report["verified"] &= sub["verified"]
        report["arrays"].update({f"{name}/{k}": v for k, v in sub["arrays"].items()})
        report["chunks"] += sub["chunks"]
        report["problems"] += sub["problems"][:max_problems - len(report["problems"])]
    report["ok"] = not report["problems"]
    return report


class _Discard:
    """A ``dask.array.store`` target that drops what it is given."""

    def __setitem__(self, key, value):
        pass
