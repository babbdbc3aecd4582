"""Filesystem access for every stored artefact: fsspec URIs, atomic writes, OS errors mapped.

Everything facescale stores goes through an fsspec filesystem, so a local directory and
an object store (``s3://bucket/prefix``, ``memory://`` in tests) behave the same.
Atomicity follows each backend's own guarantee: on a local disk a file is written under a
temporary name and renamed into place (POSIX rename is atomic); on S3 a single PUT /
completed multipart upload is atomic, so the object is written directly with its commit
deferred. Any other backend (``memory://`` among them) may ignore deferred commits, so a
file is written there under a temporary name and moved into place once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import filelock
import fsspec
from fsspec.implementations.local import LocalFileSystem

from facescale.errors import NotFoundError, StorageError

TMP_PREFIX = "_tmp-"
LOCK_TIMEOUT_S = 60.0  # how long an edit waits for another process's edit of the same document

# Object stores whose uploads stay invisible until ``commit()`` when a file is opened with
# ``autocommit=False`` (checked against a real S3 API in tests/storage/test_s3.py). Other
# fsspec backends may accept the flag and ignore it: the memory filesystem publishes a
# file the moment it is opened and cannot discard it.
DEFERRED_COMMIT_PROTOCOLS = frozenset({"s3", "s3a"})


@dataclass(frozen=True)
class Location:
    """A filesystem plus a root path on it: the handle every store is built on."""

    fs: fsspec.AbstractFileSystem
    root: str
    uri: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_uri(cls, uri: str, storage_options: Mapping[str, Any] | None = None) -> Location:
        """Resolve ``uri`` (a local path or any fsspec URL) to a filesystem and root path."""
        if not uri or not str(uri).strip():
            raise StorageError("storage root is empty: set storage.root to a path or URI")
        opts = dict(storage_options or {})
        try:
            fs, root = fsspec.core.url_to_fs(str(uri), **opts)
        except (ImportError, ValueError) as exc:
            raise StorageError(f"cannot open storage {uri!r}: {exc}") from exc
        if isinstance(fs, LocalFileSystem):
            root = os.path.abspath(root)
        return cls(fs=fs, root=root.rstrip("/") or "/", uri=str(uri), storage_options=opts)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the root with forward slashes (valid for every backend)."""
        return posixpath.join(self.root, *parts)

    def child(self, *parts: str) -> Location:
        """A Location rooted at a sub-directory of this one."""
        return Location(self.fs, self.path(*parts), self.uri, self.storage_options)

    def display(self, path: str) -> str:
        """``path`` as a user would type it (with the protocol for remote stores)."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    # -- reading ---------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        with os_errors(path, self):
            return bool(self.fs.exists(path))

    def read_bytes(self, path: str) -> bytes:
        with os_errors(path, self):
            try:
                return bytes(self.fs.cat_file(path))
            except FileNotFoundError as exc:
                raise NotFoundError(f"not found: {self.display(path)}") from exc

    def list_dirs(self, path: str) -> list[str]:
        """Names of the sub-directories of ``path`` (empty when it does not exist)."""
        with os_errors(path, self):
            if not self.fs.exists(path):
                return []
            entries = self.fs.ls(path, detail=True)
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    def list_files(self, path: str) -> list[str]:
        """Names of the files directly in ``path`` (empty when it does not exist)."""
        with os_errors(path, self):
            if not self.fs.exists(path):
                return []
            entries = self.fs.ls(path, detail=True)
        return sorted(posixpath.basename(e["name"]) for e in entries if e["type"] == "file")

    # -- writing ---------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents; a path that cannot be created is a StorageError."""
        with os_errors(path, self, writing=True):
            self.fs.makedirs(path, exist_ok=True)

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
        with self.open_atomic(path) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        """Open ``path`` for writing; it appears (whole) only if the block exits cleanly."""
        parent = posixpath.dirname(path)
        self.makedirs(parent)
        tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
        if not self.is_local and not self._defers_commit():
            try:
                with os_errors(path, self), self.fs.open(tmp, "wb") as fh:
                    yield fh
                with os_errors(path, self):
                    self.fs.mv(tmp, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.fs.rm_file(tmp)
                raise
            return
        if not self.is_local:
            # S3 publishes an object only when its upload is committed; with autocommit
            # off, s3fs holds the data until commit() / discard().
            with os_errors(path, self):
                fh = self.fs.open(path, "wb", autocommit=False)
            try:
                yield fh
                with os_errors(path, self):
                    fh.close()
                    fh.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    fh.discard()
                raise
            return
        with os_errors(path, self, writing=True), local_atomic_path(path) as tmp_path, open(tmp_path, "wb") as fh:
            yield fh

    def _defers_commit(self) -> bool:
        protocols = self.fs.protocol
        if isinstance(protocols, str):
            protocols = (protocols,)
        return not DEFERRED_COMMIT_PROTOCOLS.isdisjoint(protocols)

    def remove_file(self, path: str) -> None:
        """Remove one file; a missing one is not an error."""
        with os_errors(path, self), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def remove_tree(self, path: str) -> None:
        with os_errors(path, self):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)


@contextlib.contextmanager
def edit_lock(location: Location, path: str, what: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``<path>.lock`` while the document at ``path`` is read, changed and rewritten.

    Only local disks have file locks: on an object store this holds nothing and two editors
    of one document race (the last write wins). ``what`` names the document in errors; a
    lock that cannot be taken is a `StorageError`, not a traceback.
    """
    if not location.is_local:
        yield
        return
    location.makedirs(posixpath.dirname(path))
    shown = location.display(path)
    lock = filelock.FileLock(path + ".lock", timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise StorageError(f"{what} {shown} is locked by another process (waited {timeout:g} s)") from None
    except OSError as exc:
        raise StorageError(f"cannot lock {what} {shown}: {exc.strerror or exc}") from exc
    try:
        yield
    finally:
        lock.release()


def sha256_file(location: Location, path: str, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a stored file, streamed."""
    digest = hashlib.sha256()
    with os_errors(path, location), location.fs.open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter:
    """A write-only file wrapper that counts bytes and hashes them on the way through."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.bytes_written = 0
        self.closed = False
        self._detached = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._detached:  # an aborted file: drop late writes (a writer's footer)
            return len(data)
        self._digest.update(data)
        self.bytes_written += len(data)
        self._raw.write(data)
        return len(data)

    def detach(self) -> None:
        """Stop passing writes through to the raw file (it is being discarded)."""
        self._detached = True

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        if not self._detached:
            self._raw.flush()

    def close(self) -> None:  # the owner of the raw file closes it (it may be atomic)
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@contextlib.contextmanager
def os_errors(path: str, location: Location | None = None, *, writing: bool = False) -> Iterator[None]:
    """Turn low-level OS errors into a one-line StorageError naming the path.

    A missing file stays a `FileNotFoundError` for readers (they decide whether that is an
    error); when ``writing``, a path whose parents cannot be made (a root under ``/proc``, a
    vanished mount) is a StorageError like any other.
    """
    try:
        yield
    except FileNotFoundError as exc:
        if not writing:
            raise
        raise StorageError(f"cannot create {_shown(path, location)}: {exc.strerror or 'no such directory'}") from exc
    except (PermissionError, NotADirectoryError, IsADirectoryError, OSError) as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise StorageError(f"cannot access {_shown(path, location)}: {reason}") from exc


def _shown(path: str, location: Location | None) -> str:
    return location.display(path) if location else path


@contextlib.contextmanager
def local_atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary name beside the local file ``path``; what is written there replaces it atomically.

    For writers that want a file name rather than a handle (``keras.Model.save``, h5py):
    the name is ``_tmp-<uuid>-<basename>`` in the same directory (so it keeps the suffix
    such writers check). If the block exits cleanly the file is fsynced, renamed over
    ``path`` (POSIX rename is atomic) and the directory fsynced; otherwise it is removed.

    Args:
        path: the local file to replace (its directory must exist).

    Yields:
        The temporary file name to write.
    """
    target = os.fspath(path)
    parent = os.path.dirname(target) or "."
    tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(target)}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
