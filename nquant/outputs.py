"""Where nquant writes, and what it may replace: the rules every writer follows.

Every writer (``save``, ``quantize_zarr``, ``dequantize_zarr``, ``quantize_safetensors``,
workflow jobs, the CLI through them) applies these rules before it writes anything:

- **Names from files** (tensor names, job names, source names) pass :func:`check_name`: a
  non-empty string of ``/``-separated parts, none empty, ``.`` or ``..``, none ending in
  ``.partial`` or ``.lock``; no absolute path, no backslash, no NUL or control character.
  Every path built from such a name is checked with :func:`inside` to lie under the
  output root before it is written.
- **Source and destination** never overlap (:func:`check_source_destination`): a destination
  equal to, inside, or containing the source is refused, overwrite or not.
- **Ownership** (:func:`check_destination`): an existing destination is written only when it
  is an nquant output (:func:`owned`) or an empty directory.  Without ``overwrite`` a
  finished output is kept (a no-op when its recorded fingerprint matches the request,
  refused otherwise, the message showing both).  With ``overwrite`` an nquant output is
  replaced.  Anything else -- a folder of other files, a file nquant did not write -- is
  refused with or without ``overwrite``: nquant never deletes what it did not make.  A
  file output (``.npy``, ``.safetensors``) cannot carry a mark; an existing one is replaced
  only with ``overwrite`` and only when it is a file of that format.
- **Atomic replacement**: the new output is written complete under ``<dst>.partial`` and
  then swapped in (:func:`replace_dir`), so the path always holds a complete output.
- **One writer per destination**: :func:`writing` holds ``<dst>.lock`` (exclusive create,
  holding host, pid and time); a second writer gets a ``StoreError`` naming the holder,
  and a lock left by a dead process on this host is taken over.

Object stores (``s3://`` and other URLs, zarr store objects) have no rename and no
exclusive create: there the complete flag written last marks a result, ownership is
read from the group attributes, and no lock is taken.
"""

import asyncio
import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import time
import uuid

import zarr
from zarr.core.sync import sync as zarr_sync

from nquant.errors import StoreError

PARTIAL = ".partial"
LOCK = ".lock"
# group (or array) attributes that mark an nquant output
MARKS = ("nquant", "nquant_model", "nquant_pq", "nquant_array", "nquant_partial", "nquant_calibration",
         "nquant_dataset")
ARRAY_MARK = "nquant_array"
PARTIAL_MARK = "nquant_partial"
"""Attribute of a partial Zarr group from the moment nquant creates it (removed when complete),
so that a leftover partial of nquant's is known from a user's group of the same name."""
RESERVED_SUFFIXES = (PARTIAL, LOCK)
ZARR_FILES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")
FILE_MAGIC = {".npy": b"\x93NUMPY"}


# ----------------------------------------------------------------------------- names


def check_name(name, what="name", error=StoreError):
    """Raise ``error`` unless ``name`` (from a file: tensor, job or source name) is a safe relative path.

    The rule: a non-empty ``str``; no absolute path, backslash, NUL or control character;
    ``/``-separated parts, each non-empty, not ``.`` or ``..``, not a Zarr metadata file name
    (``zarr.json``, ``.zattrs``, ...) and not ending in ``.partial`` or ``.lock``.
    ``"encoder/layer.0.weight"`` is valid (nested groups under the output).
    """
    def bad(rule):
        raise error(f"{what}={name!r} is not a valid name: {rule}")

    if not isinstance(name, str) or not name:
        bad("expected a non-empty string")
    if name.startswith("/") or os.path.isabs(name):
        bad("an absolute path")
    if "\\" in name:
        bad("a backslash")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        bad("a NUL or control character")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            bad("an empty, '.' or '..' part (names are relative paths without '..')")
        if part in ZARR_FILES:
            bad(f"a part named {part!r} (a Zarr metadata file)")
        if part.endswith(RESERVED_SUFFIXES):
            bad("a part ending in '.partial' or '.lock' (reserved for nquant's temporary files)")
    return name


def check_nested(names, what="name", error=StoreError):
    """Raise ``error`` when one name is a parent path of another (``"a"`` and ``"a/b"``)."""
    seen = set(names)
    for n in names:
        parts = n.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise error(f"{what}={n!r} lies inside {what}={'/'.join(parts[:i])!r}: one output "
                            "cannot hold another")


def inside(root, path):
    """``path`` resolved; a ``StoreError`` unless it lies under ``root`` (both resolved)."""
    r, p = os.path.realpath(root), os.path.realpath(path)
    if p != r and not p.startswith(r.rstrip(os.sep) + os.sep):
        raise StoreError(f"path {os.fspath(path)!r} resolves to {p!r}, outside the output {r!r}")
    return p


# ----------------------------------------------------------------------------- locations


def local_path(store):
    """The filesystem path of a local ``store`` (str, PathLike, ``file://`` URL or zarr
    ``LocalStore``), or None for object stores and in-memory stores."""
    if isinstance(store, (str, os.PathLike)):
        s = os.fspath(store)
        if s.startswith("file://"):
            return s[len("file://"):]
        return None if "://" in s else s
    root = getattr(store, "root", None)  # zarr.storage.LocalStore
    if type(store).__name__ == "LocalStore" and root is not None:
        return os.fspath(root)
    return None


def _url(store):
    return os.fspath(store).rstrip("/") if isinstance(store, (str, os.PathLike)) else None


def _store_location(store, sub=""):
    """Location of a zarr store object (``LocalStore`` root, ``FsspecStore`` URL), or None."""
    root = local_path(store)
    if root is not None:
        return ("path", os.path.realpath(os.path.join(root, sub)))
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and isinstance(path, str):  # zarr.storage.FsspecStore
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        return ("url", "/".join(p.strip("/") for p in (f"{protocol}://{path}", sub) if p.strip("/")))
    return None


def source_location(src):
    """``("path", resolved path)``, ``("url", url)`` or None (an in-memory source: no identity)."""
    if isinstance(src, (str, os.PathLike)):
        p = local_path(src)
        return ("path", os.path.realpath(p)) if p is not None else ("url", _url(src))
    arr_store = getattr(src, "store", None)
    if hasattr(src, "path") and hasattr(src, "metadata") and arr_store is not None:
        return _store_location(arr_store, src.path or "")  # a zarr.Array: its store and path
    return _store_location(src)


def check_source_destination(src, dst, what="dst", source="the source"):
    """Refuse a destination equal to, inside, or containing the source (``StoreError``)."""
    s, d = source_location(src), source_location(dst)
    if s is None or d is None or s[0] != d[0]:
        return
    sep = os.sep if s[0] == "path" else "/"
    a, b = s[1].rstrip(sep) or sep, d[1].rstrip(sep) or sep
    if a == b:
        rel = f"is {source}"
    elif b.startswith(a.rstrip(sep) + sep):
        rel = f"lies inside {source}"
    elif a.startswith(b.rstrip(sep) + sep):
        rel = f"contains {source}"
    else:
        return
    raise StoreError(f"{what}={_show(dst)!r} {rel} {_show(src)!r}: choose another destination "
                     "(overwrite never applies to a source)")


def _show(x):
    return os.fspath(x) if isinstance(x, (str, os.PathLike)) else repr(x)


def source_identity(src):
    """What identifies a source for an output's fingerprint: ``{"path", "size", "mtime_ns"}`` for
    local files and Zarr arrays (the array's ``zarr.json``), ``{"url"}`` for URLs, None for
    in-memory sources (Dask arrays), which have no identity."""
    loc = source_location(src)
    if loc is None:
        return None
    if loc[0] == "url":
        return {"url": loc[1]}
    path = loc[1]
    meta = path
    if os.path.isdir(path):
        meta = next((os.path.join(path, m) for m in ("zarr.json", ".zarray") if
                     os.path.exists(os.path.join(path, m))), path)
    try:
        st = os.stat(meta)
    except OSError:
        return {"path": path}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint_difference(recorded, requested):
    """None when a finished output's ``recorded`` fingerprint matches the ``requested`` one,
    else ``"recorded {...}; requested {...}"`` over the differing fields.

    Both are dicts; a ``source`` that is None on either side (an in-memory source, or an output
    written before sources were recorded) is not compared: the other fields decide.
    """
    keys = [k for k in requested if k != "source" or (recorded.get("source") is not None and
                                                      requested.get("source") is not None)]
    diff = [k for k in keys if recorded.get(k) != requested.get(k)]
    if not diff:
        return None
    old, new = {}, {}
    for k in diff:
        a, b = recorded.get(k), requested.get(k)
        if isinstance(a, dict) and isinstance(b, dict):  # a scheme: only the fields that differ
            sub = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
            a, b = {f: a.get(f) for f in sub}, {f: b.get(f) for f in sub}
        old[k], new[k] = a, b
    return f"recorded {json.dumps(old, sort_keys=True)}; requested {json.dumps(new, sort_keys=True)}"


# ----------------------------------------------------------------------------- ownership


def _attributes(path):
    """Attributes of the Zarr node at a local ``path`` (read from its metadata file), or None."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        f = os.path.join(path, name)
        if os.path.isfile(f):
            try:
                with open(f, "rb") as fh:
                    doc = json.load(fh)
            except (OSError, ValueError):
                return None
            if not isinstance(doc, dict):
                return None
            attrs = doc.get(key, {}) if key else doc
            return attrs if isinstance(attrs, dict) else None
    return None


def zarr_node_type(path):
    """``"array"`` or ``"group"`` for a local Zarr v3 node directory, else None."""
    try:
        with open(os.path.join(path, "zarr.json"), "rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc.get("node_type") if isinstance(doc, dict) else None


def owned(path):
    """Whether the existing ``path`` is an nquant output: a Zarr group or array whose attributes
    carry an nquant mark (``nquant``, ``nquant_model``, ``nquant_pq``, ``nquant_array``).
    Object stores and zarr store objects are judged by their group attributes."""
    p = local_path(path)
    if p is not None:
        attrs = _attributes(p) if os.path.isdir(p) else None
        return bool(attrs) and any(m in attrs for m in MARKS)
    try:
        attrs = zarr.open(path, mode="r").attrs.asdict()
    except Exception:
        return False
    return any(m in attrs for m in MARKS)


def _exists_remote(store):
    """Whether an object store location holds a Zarr node (array or group)."""
    try:
        zarr.open(store, mode="r")
        return True
    except Exception:
        return False


def _empty_dir(path):
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def check_destination(dst, overwrite, what="dst", file_kind=None):
    """Whether ``dst`` may be written; ``"absent"``, ``"empty"`` or ``"ours"`` (an nquant output).

    A ``StoreError`` for anything else (user files, a foreign Zarr node, a file of another
    format), with or without ``overwrite``.  ``file_kind`` (``".npy"``, ``".safetensors"``):
    ``dst`` is a file output; an existing file of that kind is ``"file"`` and needs ``overwrite``.
    """
    p = local_path(dst)
    if p is None:
        if owned(dst):
            return "ours"
        if _exists_remote(dst):
            raise StoreError(f"{what}={_show(dst)!r} holds a Zarr node that nquant did not write; it "
                             "is never replaced (not even with --overwrite): remove it by hand or choose "
                             "another path")
        return "absent"
    if not os.path.lexists(p):
        return "absent"
    if file_kind is not None:
        if os.path.isfile(p) and not os.path.islink(p) and is_file_kind(p, file_kind):
            if not overwrite:
                raise StoreError(f"{what}={p!r} already exists; pass overwrite=True (--overwrite) to replace "
                                 "it")
            return "file"
        raise StoreError(f"{what}={p!r} exists and is not a {file_kind} file; nquant never replaces it (not "
                         "even with --overwrite): remove it by hand or choose another path")
    if _empty_dir(p):
        return "empty"
    if os.path.isdir(p) and not os.path.islink(p) and owned(p):
        return "ours"
    kind = "directory" if os.path.isdir(p) else "file"
    raise StoreError(f"{what}={p!r} is an existing {kind} that is not an nquant output; nquant never deletes "
                     "or replaces it (not even with --overwrite): remove it by hand or choose another path")


def is_file_kind(path, kind):
    """Whether the file ``path`` starts as a ``kind`` file does (``.npy`` magic; a ``.safetensors``
    header length that fits the file, then ``{``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    if kind == ".safetensors":
        return len(head) == 9 and int.from_bytes(head[:8], "little") <= size - 8 and head[8:] == b"{"
    magic = FILE_MAGIC.get(kind)
    return magic is not None and head.startswith(magic)


def _partial_file(path):
    """Whether the file ``path`` can be a half-written file output of nquant's: empty, or
    starting as a ``.npy`` or ``.safetensors`` file does (a length, then the JSON header)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return not head or head.startswith(FILE_MAGIC[".npy"]) or (len(head) == 9 and head[8:] == b"{")


def clear_partial(partial):
    """Remove a leftover ``<dst>.partial`` of nquant's: a Zarr node carrying an nquant mark
    (every partial group is marked when created: :func:`partial_group`), a directory holding
    only Zarr's temporary files (a writer killed before its first metadata file), or a file
    that can be a half-written ``.npy`` / ``.safetensors``; a ``StoreError`` for anything else."""
    if not os.path.lexists(partial):
        return
    if os.path.isfile(partial) and not os.path.islink(partial) and _partial_file(partial):
        os.remove(partial)
        return
    if os.path.isdir(partial) and not os.path.islink(partial) and (
            owned(partial) or all(e.endswith(PARTIAL) and os.path.isfile(os.path.join(partial, e))
                                  for e in os.listdir(partial))):
        shutil.rmtree(partial)
        return
    raise StoreError(f"{partial!r} exists and is not an nquant partial output; nquant never deletes it: "
                     "remove it by hand")


def partial_group(location):
    """Create the Zarr group of a partial output at ``location``, marked as nquant's
    (:data:`PARTIAL_MARK`) from its first metadata file on; :func:`complete_group` removes the mark."""
    return zarr.open_group(location, mode="w", attributes={PARTIAL_MARK: True})


def complete_group(group, attr, value):
    """Write the attribute ``attr`` (the output's completion record) and drop the partial mark."""
    group.attrs[attr] = value
    if PARTIAL_MARK in group.attrs:
        del group.attrs[PARTIAL_MARK]


def write_regions(writes, last=None):
    """Write ``(zarr.Array, region, values)`` triples in one round trip to Zarr's event loop:
    ``writes`` concurrently, then ``last`` once every one of them is stored (a record that
    they are, such as a chunk's done flag).  Each ``array[region] = values`` on its own would
    wait for the loop thread, its compression and its file write in turn."""
    async def write_all():
        await asyncio.gather(*(z.async_array.setitem(region, values) for z, region, values in writes))
        if last is not None:
            z, region, values = last
            await z.async_array.setitem(region, values)

    zarr_sync(write_all())


def clear_debris(partial):
    """Remove the temporary files (``*.partial``) that a killed writer left inside the partial
    output ``partial`` (Zarr writes each chunk under a temporary name, then renames it)."""
    for root, _, files in os.walk(partial):
        for f in files:
            if f.endswith(PARTIAL):
                os.remove(os.path.join(root, f))


# ----------------------------------------------------------------------------- replace


AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _exchange(a, b):
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)`` (Linux); False when the
    system or the filesystem has no such call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def replace_dir(new, dst):
    """Make the complete directory ``new`` the output ``dst``: ``dst`` holds a complete output at
    every moment (the old one until the swap, the new one after).

    ``dst`` absent or an empty directory: one rename.  Otherwise (an nquant output, checked by
    the caller) the two are exchanged atomically with ``renameat2(RENAME_EXCHANGE)`` and the
    old output, now under ``new``'s name, is deleted.  Where that call is missing (not Linux,
    or a filesystem without it) the old output is renamed aside and the new one renamed in:
    a moment without ``dst``, never a partial one.
    """
    if not os.path.lexists(dst) or _empty_dir(dst):
        os.replace(new, dst)
        return
    if _exchange(new, dst):
        shutil.rmtree(new)
        return
    aside = f"{dst.rstrip(os.sep)}.old-{uuid.uuid4().hex[:8]}{PARTIAL}"
    os.rename(dst, aside)
    os.rename(new, dst)
    shutil.rmtree(aside)


# ----------------------------------------------------------------------------- lock


EMPTY_LOCK_SECONDS = 60  # an empty lock file older than this is a writer's that died right after creating it


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(path):
    try:
        with open(path) as f:
            info = json.load(f)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _acquire(path, dst):
    host, pid = socket.gethostname(), os.getpid()
    token = uuid.uuid4().hex
    body = json.dumps({"host": host, "pid": pid, "time": time.time(), "token": token}).encode()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _read_lock(path)
            stale = (info.get("host") == host and isinstance(info.get("pid"), int)
                     and info["pid"] != pid and not _alive(info["pid"]))
            if not info:  # no content: a writer killed between the create and the write, if not new
                with contextlib.suppress(OSError):
                    stale = time.time() - os.stat(path).st_mtime > EMPTY_LOCK_SECONDS
            if stale:  # left by a process of this host that died: take it over
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["time"])) \
                if isinstance(info.get("time"), (int, float)) else "?"
            raise StoreError(f"dst={dst!r} is being written by another nquant process (host "
                             f"{info.get('host', '?')}, pid {info.get('pid', '?')}, since {since}); wait for "
                             f"it, or remove {path!r} if that process is gone") from None
        except OSError as e:
            raise StoreError(f"dst={dst!r} cannot be written: {e.strerror or e} ({path!r})") from None
        try:
            os.write(fd, body)
        except OSError as e:
            os.close(fd)
            os.remove(path)
            raise StoreError(f"dst={dst!r} cannot be written: {e.strerror or e} ({path!r})") from None
        os.close(fd)
        return token
    raise StoreError(f"dst={dst!r}: could not take the lock {path!r}")


@contextlib.contextmanager
def writing(dst):
    """Hold ``<dst>.lock`` while writing ``dst`` (local paths; a no-op on object stores)."""
    p = local_path(dst)
    if p is None:
        yield
        return
    p = p.rstrip(os.sep) or p
    parent = os.path.dirname(os.path.abspath(p))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise StoreError(f"dst={p!r} cannot be written: {e.strerror or e}") from None
    path = p + LOCK
    token = _acquire(path, p)
    try:
        yield
    finally:
        if _read_lock(path).get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def write_errors(dst):
    """Turn a full disk, a quota, a read-only or forbidden destination into one ``StoreError`` line."""
    try:
        yield
    except StoreError:
        raise
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise StoreError(f"dst={_show(dst)!r} cannot be written: {e.strerror or e}"
                         + (f" ({e.filename})" if e.filename else "")) from e
