"""Local files read once for many tunnels: the sending side of put. Controller-side, no I/O but the file's.

A ``Source`` is one local file (a path, or a file object spooled once) read in
``STREAM_CHUNK`` pieces by any number of tunnels: a piece is read and hashed (SHA-1 for the
original's ``sha1sum``, SHA-256 for the check) once while the tunnels keep up with each
other, kept in a 16 MiB window, and re-read from the file only by a tunnel that falls behind
that window. It also notices a file that changes while it is being sent. ``Sources`` opens
each file of one put once, shared by every tunnel.
"""

import collections
import os
import shutil
import stat
import tempfile
from typing import Dict, Optional, Tuple

import gevent

from chopsticks.agent.files import Tally, open_regular
from chopsticks.wire import protocol
from chopsticks.errors import SpecialFileError

CHUNK = protocol.STREAM_CHUNK
# Pieces of a file kept for tunnels sending it together (16 MiB).
CACHE_PIECES = 64


class Source:
    """A local file (a path, or a file object) read in pieces by any number of tunnels."""

    def __init__(self, src):
        self.spooled = False
        if isinstance(src, (str, os.PathLike)):
            self.name = os.fspath(src)
            self.fd = open_regular(self.name, SpecialFileError)
        else:
            name = getattr(src, "name", None)
            self.name = name if isinstance(name, str) else None
            self.fd = self._fd_of(src)
            self.spooled = True
        st = os.fstat(self.fd)
        self._stat = (st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        self.mode = 0o644 if self.spooled else stat.S_IMODE(st.st_mode)
        self.mtime_ns = st.st_mtime_ns
        self.pieces = (self.size + CHUNK - 1) // CHUNK
        self._cache: "collections.OrderedDict[int, bytes]" = collections.OrderedDict()
        self._hashed = 0
        self._tally = Tally(sha1=True)
        self.changed: Optional[str] = None
        self.users = 0  # tunnels sending it now
        self.shared = False  # several tunnels will send it: keep recent pieces for them

    @staticmethod
    def _fd_of(fileobj) -> int:
        """A file object's bytes from its current position on, spooled to a temporary file."""
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(fileobj, spool, 1 << 20)
            spool.flush()
            return os.dup(spool.fileno())

    def piece(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            return data
        data = self._read(index)
        if self.shared:
            self._cache[index] = data
            while len(self._cache) > CACHE_PIECES:
                self._cache.popitem(last=False)
        return data

    def _read(self, index: int) -> bytes:
        """Piece ``index`` from the file, hashed if it is the next one not yet hashed."""
        want = min(CHUNK, self.size - index * CHUNK)
        data = os.pread(self.fd, want, index * CHUNK)
        if len(data) != want:
            self.changed = "%s shrank while it was being sent" % self.label
            data = data + bytes(want - len(data))  # a placeholder: the transfer is aborted
        if index == self._hashed:
            self._tally.update(data)
            self._hashed += 1
        return data

    def digest(self) -> Tuple[int, str]:
        """The size and SHA-256 of the whole file before it is sent (put's ``if_changed``): the
        pieces not hashed yet are read and hashed now, once for every tunnel asking; a shared
        file keeps its first window for the tunnels that will send it (a file up to 16 MiB is
        read once in all). It yields to the hub between pieces; a tunnel sending meanwhile
        hashes in turn, as it would."""
        while self._hashed < self.pieces:
            index = self._hashed
            data = self._read(index)
            if self.shared and index < CACHE_PIECES:
                self._cache[index] = data
            gevent.sleep(0)
        return self.size, self.sha256

    def change(self) -> Optional[str]:
        """Why the file cannot be trusted as sent (it changed since it was opened), or None."""
        if self.changed is None:
            st = os.fstat(self.fd)
            if (st.st_size, st.st_mtime_ns) != self._stat:
                self.changed = "%s changed while it was being sent" % self.label
        return self.changed

    @property
    def label(self) -> str:
        return self.name or "the file object"

    @property
    def sha1(self) -> str:
        return self._tally.sha1

    @property
    def sha256(self) -> str:
        return self._tally.sha256

    def release(self) -> None:
        """A tunnel is done with it; the last one drops the cache."""
        self.users -= 1
        if self.users <= 0:
            self._cache.clear()

    def close(self) -> None:
        self._cache.clear()
        os.close(self.fd)


class Sources:
    """The Sources of one put, opened once each and shared by every tunnel (``shared``)."""

    def __init__(self, shared: bool = False):
        self._open: Dict[str, Source] = {}
        self.shared = shared

    def acquire(self, path: str) -> Source:
        source = self._open.get(path)
        if source is None:
            source = self._open[path] = Source(path)
            source.shared = self.shared
        source.users += 1
        return source

    def close(self) -> None:
        for source in self._open.values():
            source.close()
        self._open.clear()
