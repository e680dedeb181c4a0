"""``--out-dir DIR``: each host's result in files of its own, written as the host finishes. CLI layer.

``DIR/HOST.json`` holds the host's record as ``--format jsonl`` prints it. For ``run``, the
command's stdout and stderr go to ``DIR/HOST.out`` and ``DIR/HOST.err`` as it wrote them (bytes
that are not UTF-8 included), and the record keeps the rest of its value (``exit_code``,
``timed_out``, ``truncated``); a ``run`` host that never ran the command has its error in
``HOST.err`` and no ``HOST.out`` (like ``pssh -o -e``, ``clush --outdir``).

File names come from host names, which the command line or a hosts file gives (``--container``
makes ``HOST -> NAME``): ``file_name`` keeps ASCII letters and digits and ``-_.@:+=,`` and writes
any other byte, and a leading dot, as ``%XX``. So each host is one file name in DIR: never a
path out of it, never ``.``, ``..`` or hidden, and no two hosts share one (``a/b`` is
``a%2Fb``, ``a_b`` stays). A name too long for a file keeps its start and ends in ``~`` and a
digest of the whole. Each file is written under a temporary name in DIR and renamed into place
(mode 600, as the temporary file is made): it appears whole, and a symlink already there is
replaced, never followed.
"""

import hashlib
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import structlog

from chopsticks.fanout.options import UsageError
from chopsticks.fanout.output import to_json

_UNSAFE = re.compile(rb"[^A-Za-z0-9\-_.@:+=,]|^\.")
MAX_NAME = 240  # bytes of a file name before its suffix (most file systems allow 255)
SUFFIXES = (".json", ".out", ".err")


def check(path: Optional[str]) -> None:
    """Make ``--out-dir``'s directory if missing; a UsageError if it cannot be written to."""
    if path is None:
        return
    if not path:
        raise UsageError("--out-dir needs a directory, got ''")
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise UsageError("--out-dir %s is not a directory" % path) from None
    except OSError as exc:
        raise UsageError("--out-dir %s: %s" % (path, exc.strerror)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError("--out-dir %s: cannot write there" % path)


def file_name(host: str) -> str:
    """A file name for ``host`` that is safe and its own (see the module's docstring)."""
    raw = host.encode("utf-8", "surrogateescape")
    name = _UNSAFE.sub(lambda match: b"%%%02X" % match.group()[0], raw).decode("ascii") or "%"
    if len(name) > MAX_NAME:
        name = "%s~%s" % (name[:MAX_NAME - 33], hashlib.sha256(raw).hexdigest()[:32])
    return name


def _bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # the command's own bytes back
    except UnicodeEncodeError:  # a lone surrogate no decoder made (a hostile host's)
        return text.encode("utf-8", "backslashreplace")


class OutDir:
    """Writes each host's files into ``path`` (checked by ``check``); ``run`` splits output
    out of the record. The first write that fails is logged, and no more are tried: ``failed``
    says why, and the command then exits 1."""

    def __init__(self, path: str, run: bool) -> None:
        self.path = path
        self.run = run
        self.failed: Optional[str] = None

    def files(self, entry: Dict[str, Any], value: Any) -> List[Tuple[str, Optional[bytes]]]:
        """``(suffix, content)`` for one host: ``entry`` is its record, ``value`` what the host
        returned (run's output as the command wrote it). None: a file to remove, left by an
        earlier run."""
        if not self.run:
            return [(".json", (to_json(entry) + "\n").encode())]
        if "value" not in entry:
            return [(".out", None), (".err", (entry.get("error", "") + "\n").encode("utf-8", "backslashreplace")),
                    (".json", (to_json(entry) + "\n").encode())]
        rest = {key: item for key, item in entry["value"].items() if key not in ("stdout", "stderr")}
        return [(".out", _bytes(value["stdout"])), (".err", _bytes(value["stderr"])),
                (".json", (to_json(dict(entry, value=rest)) + "\n").encode())]

    def write(self, entry: Dict[str, Any], value: Any) -> None:
        """Write ``entry``'s files (see ``files``), each whole or not at all."""
        if self.failed is not None:
            return
        base = os.path.join(self.path, file_name(entry["host"]))
        for suffix, content in self.files(entry, value):
            try:
                if content is None:
                    try:
                        os.unlink(base + suffix)
                    except FileNotFoundError:
                        pass
                else:
                    _replace(base + suffix, content, self.path)
            except OSError as exc:
                self.failed = "cannot write %s: %s" % (base + suffix, exc.strerror or exc)
                structlog.get_logger("chopsticks.fanout").error("out_dir_failed", reason=self.failed)
                return


def _replace(path: str, content: bytes, directory: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
