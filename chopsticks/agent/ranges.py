"""Transfers over byte ranges, the agent's half: a big file put or fetched over extra SSH
sessions (``chopsticks.bulk``, ``chopsticks.bulk_fetch``). Remote-safe: standard library and
the agent, Python 3.9.

Imported only when such a transfer happens; everything else of put and fetch is in
``agent.files``, whose ``AtomicFile`` writes a put's file here too. Each session runs a
``python3 -S -c`` of its own on the host, ``RANGE_WRITER`` or ``RANGE_READER``, which opens
the file by path without following a symlink and works only on the very file (device and
inode) the agent made or keeps open.
"""

import errno
import os
import stat

from chopsticks.agent.files import TransferAborted, identity, running_agent, writer_for

# -- put over byte ranges ------------------------------------------------------------------
#
# A big file may come over extra SSH sessions (``chopsticks.bulk``): ``open_part`` makes its
# temporary file, each session's ``RANGE_WRITER`` writes one byte range of it, and
# ``finish_part`` commits it (or ``drop_part`` removes it). The writer is a ``python3 -S -c``
# of its own: it opens the temporary file by path without following a symlink and writes
# only if it is the very file (device and inode) ``open_part`` made.

_parts = {}  # token -> the AtomicFile of a put over byte ranges, until finished or dropped


def open_part(token, path, size, make_dirs=False):
    """The temporary file of a put over byte ranges, known as ``token`` (the controller's, so
    that it can drop the file even if this answer never reaches it), ``size`` bytes reserved
    (a disk too full for them fails here, before a byte is sent); its path, device and inode."""
    if not isinstance(token, str) or token in _parts:
        raise ValueError("a put over byte ranges needs a token of its own, not %r" % (token,))
    agent = running_agent()
    writer = writer_for(agent, path, make_dirs)
    try:
        _reserve(writer, size)
        st = os.fstat(writer.fd)
    except BaseException:
        writer.discard()
        agent.temp_files.discard(writer.temp_path)
        raise
    _parts[token] = writer
    return {"token": token, "temp_path": writer.temp_path, "dev": st.st_dev, "ino": st.st_ino}


def _reserve(writer, size):
    """Blocks for ``size`` bytes where the filesystem can promise them, else only the length."""
    allocate = getattr(os, "posix_fallocate", None)  # not on macOS
    if size and allocate is not None:
        try:
            allocate(writer.fd, 0, size)
            return
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OSError(exc.errno, "no space left on the device for %d bytes" % size, writer.path) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    os.ftruncate(writer.fd, size)


def finish_part(token, size, mode, mtime_ns):
    """Commit the file of ``open_part`` once every range is written (``size`` bytes)."""
    writer = _take_part(token)
    try:
        actual = os.fstat(writer.fd).st_size
        if actual != size:
            raise TransferAborted("the temporary file is %d bytes, not %d" % (actual, size))
        created = writer.commit(mode, mtime_ns)
        return {"remote_path": writer.path, "size": size, "created": created}
    finally:
        writer.discard()


def drop_part(token):
    """Remove the file of ``open_part`` (a put over byte ranges that failed); fine if gone."""
    if token in _parts:
        _take_part(token).discard()


def _take_part(token):
    writer = _parts.pop(token, None)
    if writer is None:
        raise TransferAborted("no put over byte ranges is open as %r" % (token,))
    running_agent().temp_files.discard(writer.temp_path)
    return writer


# argv: path, device, inode, offset, length. Says "R" once its file is open, then "D <bytes>
# <crc32, 8 hex digits>" once its stdin ended (it stops at ``length``), or "E <why>" and exits.
RANGE_WRITER = r"""
import os, sys, zlib
def main(path, dev, ino, offset, length):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return "E cannot open the temporary file: %s" % (exc.strerror or exc)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino):
        return "E the temporary file is not the one the agent made"
    sys.stdout.write("R\n")
    sys.stdout.flush()
    crc, buf, done, src = 0, bytearray(1 << 20), 0, sys.stdin.buffer.raw
    view = memoryview(buf)
    try:
        while done < length:
            got = src.readinto(view[:min(length - done, len(buf))])
            if not got:
                break
            crc = zlib.crc32(view[:got], crc)
            put = 0
            while put < got:
                put += os.pwrite(fd, view[put:got], offset + done + put)
            done += got
    except OSError as exc:
        return "E %s" % (exc.strerror or exc)
    return "D %d %08x" % (done, crc)
sys.stdout.write(main(sys.argv[1], *map(int, sys.argv[2:6])) + "\n")
"""



# -- fetch over byte ranges ----------------------------------------------------------------
#
# A big file may go to the controller over extra SSH sessions (``chopsticks.bulk_fetch``):
# ``files.send_or_open`` opens it and keeps it open (``keep_source``), each session's
# ``RANGE_READER`` reads one byte range of that very file (device and inode), and
# ``close_source`` says whether it changed meanwhile (TransferAborted, as ``send``).

_sources = {}  # token -> (fd, fstat at open) of a fetch over byte ranges, until closed


def keep_source(fd, path):
    """Keep the regular file ``fd`` (at ``path``) open for range readers; its token, path,
    size, mode, mtime, device and inode."""
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    token = os.urandom(8).hex()
    _sources[token] = (fd, st)
    return {"token": token, "remote_path": path, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
            "mtime_ns": st.st_mtime_ns, "dev": st.st_dev, "ino": st.st_ino}


def close_source(token):
    """Forget the file of ``keep_source``; TransferAborted if it changed since it was opened."""
    fd, before = _sources.pop(token, (None, None))
    if fd is None:
        raise TransferAborted("no fetch over byte ranges is open as %r" % (token,))
    try:
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if identity(after) != identity(before):
        raise TransferAborted("the remote file changed while it was being sent")
    return True


# argv: path, device, inode, offset, length. Says "R" once the very file (device and inode)
# is open, then writes exactly ``length`` bytes from ``offset`` and "D <crc32, 8 hex digits>";
# "E <why>" if it cannot start. A file that ends early is not padded: the reader says why on
# stderr and exits, and the controller sees its range cut short.
RANGE_READER = r"""
import os, stat, sys, zlib
def read_range(path, dev, ino, offset, length):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return "E cannot open the file: %s" % (exc.strerror or exc)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
        return "E the file is not the one the agent opened"
    out = sys.stdout.buffer
    out.write(b"R\n")
    out.flush()
    crc, done = 0, 0
    while done < length:
        data = os.pread(fd, min(1 << 20, length - done), offset + done)
        if not data:
            sys.stderr.write("the file ended after %d bytes of the range\n" % done)
            sys.exit(1)
        crc = zlib.crc32(data, crc)
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
        done += len(data)
    return "D %08x" % crc
line = read_range(sys.argv[1], *map(int, sys.argv[2:6]))
sys.stdout.write(line + "\n")
sys.stdout.flush()
"""
