#!/usr/bin/env python3
"""Bulk off the one core: the ways to push one big file to one host, measured side by side.

Issue 15's design choice. One loopback host (``scripts/fleet.py``), a random file in
/dev/shm pushed to /dev/shm on the remote, login excluded, options interleaved round by
round (A B C ... A B C ...) so drift shows. Every option but ``ours-put`` uses the same
remote writer, a ``python3 -c`` that prints ``r`` once its file is open, reads exactly its
byte range from stdin into the file with ``os.pwrite`` at the range's offset (1 MiB reads),
prints ``d`` and waits for EOF. The orchestrator snapshots /proc (``harness.procfs``,
``precise``: live threads by schedstat, plus reaped children) after every sender printed
``r`` (logins done) and after every sender saw ``d`` (all bytes on the remote), so the CPU
split is exactly the transfer's:

- ``controller``: the sender processes (the ssh clients, or our Python children) and their
  descendants; for the OpenSSH options the orchestrator's thread that ``sendfile``s the file
  into the client's stdin pipe is reported apart (``feeder_cpu_s``);
- ``sshd``: the fleet's sshd processes (listener, per-connection monitor and net children);
- ``remote``: everything else under the fleet's sshd (the remote writers, our agent).

Options (``--only`` picks some; N is the number of sessions, each its own process, each
sending one byte range of ~size/N):

- ``openssh-aes128gcm``, ``openssh-chacha20`` (N=1): the floor, ``ssh -F <fleet config>
  -c CIPHER host <writer>``;
- ``openssh-aes128gcm-x2``: the same, two ssh clients, one range each (option 5: the OpenSSH
  client as a bulk pipe with its own login);
- ``ours-put`` (N=1): ``SSHTunnel.put`` of this checkout, a connected tunnel (a 1-byte put
  first so the agent has its modules), the library's defaults (SHA-256 on both sides, fsync,
  rename);
- ``libssh2-x1``, ``libssh2-x2``: ssh2-python (libssh2 1.11.1), our cipher list, one
  blocking session per process writing its range (``channel.write`` of 1 MiB preads);
- ``libssh-x1``, ``libssh-x2``: ssh-python (libssh), the same, cipher list
  aes128-gcm first (``pip install ssh-python``; measurement only, not a project dependency).
  Neither raw child verifies the host key (a measurement; see ``ours-put`` for the real one).

Plus ``openssh-literal`` (wall time only): exactly ``ssh -c aes128-gcm@openssh.com host
'cat > /dev/shm/f' < file`` minus the best of three ``ssh host true``, as W3 measures its
floor.

    PYTHONPATH=$PWD .venv/bin/python bench/bulk_options.py [--sizes 256,64] [--rounds 3] [--only ...]
    .venv/bin/python bench/bulk_options.py --table run1.jsonl run2.jsonl   # medians over saved runs

One JSON line per (option, size, round) on stdout, the median table on stderr; the lines go
to bench/results/bulk_options.jsonl too.
"""

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from harness import procfs
from harness.runner import ROOT, append_results, start_fleet

MIB = 1 << 20
GIB = 1 << 30
HERE = os.path.abspath(__file__)
# libssh2 is given the project's own list (chopsticks/transports/ssh.py CIPHERS).
LIBSSH2_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr,"
                   "chacha20-poly1305@openssh.com,aes192-ctr")
LIBSSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr,chacha20-poly1305@openssh.com"

WRITER = r"""
import os, sys, hashlib
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tally = hashlib.sha256() if sys.argv[4:] == ['sha'] else None
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
out = sys.stdout
out.write('r\n'); out.flush()
buf = bytearray(1 << 20); view = memoryview(buf); src = sys.stdin.buffer.raw
while n:
    k = src.readinto(view[:min(n, len(buf))])
    if not k:
        sys.exit('short input')
    done = 0
    while done < k:
        done += os.pwrite(fd, view[done:k], off + done)
    if tally is not None:
        tally.update(view[:k])
    off += k; n -= k
os.close(fd)
out.write('d\n'); out.flush()
while src.read(65536):
    pass
"""


def writer_command(path, off, length, sha=False):
    return "python3 -c %s %s %d %d%s" % (shlex.quote(WRITER), shlex.quote(path), off, length, " sha" if sha else "")


def ranges(size, parts):
    """``parts`` (offset, length) ranges covering ``size``, cut on MiB boundaries."""
    step = -(-size // parts // MIB) * MIB
    out, off = [], 0
    while off < size:
        out.append((off, min(step, size - off)))
        off += step
    return out


# ---------------------------------------------------------------------------------------
# children: one session each, lock-step with the orchestrator over stdin/stdout
# ---------------------------------------------------------------------------------------

def _say(word, **info):
    sys.stdout.write(json.dumps(dict(info, say=word)) + "\n")
    sys.stdout.flush()


def _wait(word):
    line = sys.stdin.readline().strip()
    if line != word:
        raise SystemExit("expected %r from the orchestrator, got %r" % (word, line))


class Libssh2Session:
    """One blocking ssh2-python (libssh2) session running the writer for one range."""

    def __init__(self, a, offset, length):
        import socket
        from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC, Session
        self.sock = socket.create_connection((a.host, a.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = s = Session()
        for method in (LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC):
            s.method_pref(method, LIBSSH2_CIPHERS)
        s.handshake(self.sock)
        s.userauth_publickey_fromfile(a.user, a.key)
        self.ch = s.open_session()
        self.ch.execute(writer_command(a.dest, offset, length, a.sha))
        self.read_until(b"r\n")
        self.cipher = s.methods(LIBSSH2_METHOD_CRYPT_CS)

    def read_until(self, word):
        got = b""
        while not got.endswith(word):
            size, data = self.ch.read()
            if size <= 0:
                raise SystemExit("libssh2: channel closed before the writer said %r (%d)" % (word, size))
            got += data

    def write(self, data):
        sent = 0
        while sent < len(data):
            rc, n = self.ch.write(data[sent:] if sent else data)
            sent += n

    def close(self):
        self.ch.send_eof()
        self.ch.close()
        self.s.disconnect()
        del self.ch, self.s
        self.sock.close()


class LibsshSession(Libssh2Session):
    """The same with ssh-python (libssh)."""

    def __init__(self, a, offset, length):
        import socket
        from ssh import options
        from ssh.key import import_privkey_file
        from ssh.session import Session
        self.sock = socket.create_connection((a.host, a.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = s = Session()
        s.options_set(options.HOST, a.host)
        s.options_set(options.USER, a.user)
        s.options_set_port(a.port)
        s.options_set(options.CIPHERS_C_S, LIBSSH_CIPHERS)
        s.options_set(options.CIPHERS_S_C, LIBSSH_CIPHERS)
        s.set_socket(self.sock)
        s.connect()
        s.userauth_publickey(import_privkey_file(a.key))
        self.ch = s.channel_new()
        self.ch.open_session()
        self.ch.request_exec(writer_command(a.dest, offset, length, a.sha))
        self.read_until(b"r\n")
        cipher = s.get_cipher_out()
        self.cipher = cipher.decode() if isinstance(cipher, bytes) else cipher

    def read_until(self, word):
        got = b""
        while not got.endswith(word):
            size, data = self.ch.read()
            if size < 0:
                raise SystemExit("libssh: channel closed before the writer said %r (%d)" % (word, size))
            got += data

    def write(self, data):
        sent = 0
        while sent < len(data):
            n = self.ch.write(data[sent:] if sent else data)
            if isinstance(n, tuple):
                n = n[-1]
            if n <= 0:
                raise SystemExit("libssh: write returned %r" % (n,))
            sent += n


def child_raw(a, kind):
    """``a.threads`` sessions in this one process (a thread each), or one."""
    cls = Libssh2Session if kind == "libssh2" else LibsshSession
    parts = ranges(a.length, a.threads) if a.threads > 1 else [(0, a.length)]
    sessions = [(cls(a, a.offset + off, n), a.offset + off, n) for off, n in parts]
    fd = os.open(a.src, os.O_RDONLY)
    _say("ready", cipher=sessions[0][0].cipher)
    _wait("go")

    def send(session, off, n):
        import hashlib
        tally = hashlib.sha256() if a.sha else None
        end = off + n
        while off < end:
            data = os.pread(fd, min(MIB, end - off), off)
            if tally is not None:
                tally.update(data)
            session.write(data)
            off += len(data)
        session.read_until(b"d\n")
    if len(sessions) == 1:
        send(*sessions[0])
    else:
        threads = [threading.Thread(target=send, args=item) for item in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    _say("done")
    _wait("close")
    for session, _, _ in sessions:
        session.close()


def child_ours(a):
    import chopsticks
    from chopsticks import SSHOptions, SSHTunnel
    from harness import runner
    runner.check_checkout(chopsticks)
    options = SSHOptions(port=a.port, key=a.key, known_hosts=a.known_hosts, ssh_config="", agent=False)
    tiny = os.path.join(os.path.dirname(a.src), "tiny")
    with open(tiny, "wb") as f:
        f.write(b"x")
    with SSHTunnel(a.host, options=options) as t:
        t.connect()
        t.put(tiny, a.dest + ".warm")  # the agent's put modules are loaded before the timing
        conn = t._conn
        pipe = getattr(conn, "pipe", None) or getattr(conn, "_pipe", None)
        cipher = "?"
        try:
            from ssh2.session import LIBSSH2_METHOD_CRYPT_CS
            link = pipe.link if hasattr(pipe, "link") else pipe._link
            cipher = link.session.methods(LIBSSH2_METHOD_CRYPT_CS)
        except Exception as exc:  # best effort: only a label
            cipher = "? (%s)" % type(exc).__name__
        _say("ready", cipher=cipher, agent_pid=t.remote_info.get("pid"))
        _wait("go")
        t.put(a.src, a.dest)
        _say("done")
        _wait("close")


def child_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("libssh2", "libssh", "ours"))
    for flag in ("--host", "--user", "--key", "--known-hosts", "--src", "--dest"):
        ap.add_argument(flag)
    ap.add_argument("--port", type=int)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--length", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sha", action="store_true", help="SHA-256 on both ends, as put does")
    a = ap.parse_args(argv)
    if a.kind == "ours":
        child_ours(a)
    else:
        child_raw(a, a.kind)
    return 0


# ---------------------------------------------------------------------------------------
# the orchestrator
# ---------------------------------------------------------------------------------------

class Sender:
    """One sending process: a Python child (lock-step JSON lines) or an OpenSSH client fed
    through a pipe by a thread here."""

    def __init__(self, argv, ssh_range=None, src=None, env=None):
        self.ssh_range = ssh_range  # (offset, length) when this is an ssh client
        self.src = src
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, bufsize=0)
        if ssh_range is not None:  # fewer feeder/ssh switches: a 1 MiB pipe (the default max)
            try:
                import fcntl
                fcntl.fcntl(self.proc.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), MIB)
            except OSError:
                pass
        self.info = {}
        self.feeder_cpu = 0.0
        self.thread = None

    def _line(self):
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError("sender %s ended: %s" % (self.proc.args[:3], (err or ["no output"])[-1][:300]))
        return line.decode().strip()

    def wait_ready(self):
        line = self._line()
        if self.ssh_range is None:
            self.info = json.loads(line)
            if self.info.get("say") != "ready":
                raise RuntimeError("not ready: %s" % line)
        elif line != "r":
            raise RuntimeError("ssh writer said %r" % line)

    def go(self):
        if self.ssh_range is None:
            self.proc.stdin.write(b"go\n")
            return

        def feed():
            t0 = time.thread_time()
            off, length = self.ssh_range
            with open(self.src, "rb") as f:
                out = self.proc.stdin.fileno()
                while length:
                    n = os.sendfile(out, f.fileno(), off, min(length, 4 * MIB))
                    off += n
                    length -= n
            self.feeder_cpu = time.thread_time() - t0
        self.thread = threading.Thread(target=feed, daemon=True)
        self.thread.start()

    def wait_done(self):
        line = self._line()
        if self.ssh_range is None:
            if json.loads(line).get("say") != "done":
                raise RuntimeError("not done: %s" % line)
        elif line != "d":
            raise RuntimeError("ssh writer said %r" % line)
        if self.thread:
            self.thread.join()

    def close(self):
        try:
            if self.ssh_range is None:
                self.proc.stdin.write(b"close\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def cpu_split(fleet_pid, sender_pids):
    """Cumulative CPU seconds (own + reaped children) per group, and per pid."""
    procs = procfs.read_procs(precise=True)
    fleet = set(procfs.descendants(fleet_pid, procs)) | {fleet_pid}
    ctl = set(sender_pids)
    for pid in sender_pids:
        ctl |= set(procfs.descendants(pid, procs))
    per = {}
    for pid in fleet | ctl:
        p = procs.get(pid)
        if p is None:
            continue
        group = "controller" if pid in ctl else ("sshd" if p[1].startswith("sshd") else "remote")
        # the listener reaps earlier connections' processes whenever they end: its reaped
        # children's CPU is never this transfer's
        per[pid] = (group, p[2] + (0.0 if pid == fleet_pid else p[3]))
    return per


def diff(before, after):
    out = {"controller": 0.0, "sshd": 0.0, "remote": 0.0}
    for pid, (group, value) in after.items():
        out[group] += value - (before[pid][1] if pid in before else 0.0)
    return out


def run_option(opt, fleet, src, mib, dest_dir, py):
    size = mib * MIB
    name, kind, parts = opt[:3]
    threads = opt[3] if len(opt) > 3 else 1
    sha = name.endswith("-sha")
    dest = os.path.join(dest_dir, "%s.bin" % name)
    for path in (dest, dest + ".warm"):
        if os.path.exists(path):
            os.unlink(path)
    host = fleet.hosts[0]
    quiet = time.monotonic() + 10  # the previous option's sessions gone from the fleet
    while procfs.descendants(fleet.proc.pid) and time.monotonic() < quiet:
        time.sleep(0.02)
    senders = []
    try:
        for off, length in (ranges(size, parts) if threads == 1 else [(0, size)]):
            if kind.startswith("openssh"):
                cipher = "chacha20-poly1305@openssh.com" if kind == "openssh-chacha20" else "aes128-gcm@openssh.com"
                argv = ["ssh", "-F", fleet.ssh_config, "-o", "BatchMode=yes", "-c", cipher, host,
                        writer_command(dest, off, length)]
                senders.append(Sender(argv, ssh_range=(off, length), src=src))
                senders[-1].info = {"cipher": cipher}
            else:
                argv = [py, HERE, "--child", kind, "--host", host, "--port", str(fleet.port), "--user",
                        fleet.user, "--key", fleet.key, "--known-hosts", fleet.known_hosts, "--src", src,
                        "--dest", dest, "--offset", str(off), "--length", str(length),
                        "--threads", str(threads)] + (["--sha"] if sha else [])
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), ROOT]))
                senders.append(Sender(argv, env=env))
        for s in senders:
            s.wait_ready()
        before = cpu_split(fleet.proc.pid, [s.proc.pid for s in senders])
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        for s in senders:
            s.go()
        for s in senders:
            s.wait_done()
        wall = time.monotonic() - t0
        after = cpu_split(fleet.proc.pid, [s.proc.pid for s in senders])
    finally:
        for s in senders:
            s.close()
    cpu = diff(before, after)
    ok = os.path.getsize(dest) == size
    gib = size / GIB
    rec = {"bench": "bulk_options", "option": name, "sessions": parts, "mib": mib, "wall_s": round(wall, 3),
           "mib_per_s": round(mib / wall, 1), "cipher": senders[0].info.get("cipher"),
           "controller_cpu_s_per_gib": round(cpu["controller"] / gib, 3),
           "sshd_cpu_s_per_gib": round(cpu["sshd"] / gib, 3),
           "remote_cpu_s_per_gib": round(cpu["remote"] / gib, 3),
           "feeder_cpu_s_per_gib": round(sum(s.feeder_cpu for s in senders) / gib, 3),
           "total_cpu_s_per_gib": round((sum(cpu.values()) + sum(s.feeder_cpu for s in senders)) / gib, 3),
           "size_ok": ok, "load1": round(load, 2)}
    return rec, dest


def literal_floor(fleet, src, mib, dest_dir):
    host = fleet.hosts[0]
    base = ["ssh", "-F", fleet.ssh_config, "-o", "BatchMode=yes", "-c", "aes128-gcm@openssh.com", host]

    def timed(command, stdin_path=None):
        with open(stdin_path or os.devnull, "rb") as stdin:
            t0 = time.monotonic()
            subprocess.run(base + [command], stdin=stdin, check=True)
            return time.monotonic() - t0
    login = min(timed("true") for _ in range(3))
    dest = os.path.join(dest_dir, "literal.bin")
    wall = max(0.001, timed("cat > %s" % shlex.quote(dest), src) - login)
    ok = os.path.getsize(dest) == mib * MIB
    os.unlink(dest)
    return {"bench": "bulk_options", "option": "openssh-literal", "sessions": 1, "mib": mib,
            "wall_s": round(wall, 3), "mib_per_s": round(mib / wall, 1), "cipher": "aes128-gcm@openssh.com",
            "size_ok": ok, "load1": round(os.getloadavg()[0], 2)}


OPTIONS = [
    ("openssh-aes128gcm", "openssh-aes128gcm", 1),
    ("ours-put", "ours", 1),
    ("libssh2-x1", "libssh2", 1),
    ("libssh2-x2", "libssh2", 2),
    ("libssh-x1", "libssh", 1),
    ("libssh-x2", "libssh", 2),
    ("libssh2-2threads", "libssh2", 2, 2),
    ("libssh-2threads", "libssh", 2, 2),
    ("libssh2-x2-sha", "libssh2", 2),
    ("libssh-x1-sha", "libssh", 1),
    ("libssh-x2-sha", "libssh", 2),
    ("openssh-aes128gcm-x2", "openssh-aes128gcm", 2),
    ("openssh-chacha20", "openssh-chacha20", 1),
]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        return table_from_files(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,64", help="MiB, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", action="append", help="option names (repeatable); openssh-literal too")
    ap.add_argument("--no-literal", action="store_true")
    ap.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of each result")
    ap.add_argument("--json-out", default="bulk_options.jsonl")
    args = ap.parse_args()
    opts = [o for o in OPTIONS if not args.only or o[0] in args.only]
    literal = not args.no_literal and (not args.only or "openssh-literal" in args.only)
    work = tempfile.mkdtemp(prefix="chopsticks-bulk-", dir="/dev/shm")
    os.chmod(work, 0o755)
    fleet = start_fleet(1)
    records = []
    run = "%s-%d" % (time.strftime("%Y%m%dT%H%M%S"), os.getpid())
    print("uptime at start: %s" % subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
          file=sys.stderr)
    try:
        for mib in [int(x) for x in args.sizes.split(",")]:
            src = os.path.join(work, "src-%d" % mib)
            with open(src, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MIB))
            want = None if args.no_verify else sha256_of(src)
            for rnd in range(1, args.rounds + 1):
                for opt in opts:
                    try:
                        rec, dest = run_option(opt, fleet, src, mib, work, sys.executable)
                        if want is not None:
                            rec["sha_ok"] = sha256_of(dest) == want
                        os.unlink(dest)
                    except Exception as exc:
                        rec = {"bench": "bulk_options", "option": opt[0], "mib": mib,
                               "error": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
                    rec["round"], rec["run"] = rnd, run
                    print(json.dumps(rec), flush=True)
                    records.append(rec)
                if literal:
                    rec = literal_floor(fleet, src, mib, work)
                    rec["round"], rec["run"] = rnd, run
                    print(json.dumps(rec), flush=True)
                    records.append(rec)
            os.unlink(src)
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("uptime at end: %s" % subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
          file=sys.stderr)
    append_results(args.json_out, records)
    table(records)
    return 0


def table(records):
    """Medians per (size, option) over every round of every run given, plus ``x literal``:
    the median of each round's MiB/s over the same round's ``openssh-literal`` (a paired
    ratio, so the machine's drift between rounds cancels), and its range."""
    keys = ("wall_s", "mib_per_s", "controller_cpu_s_per_gib", "sshd_cpu_s_per_gib", "remote_cpu_s_per_gib",
            "feeder_cpu_s_per_gib", "total_cpu_s_per_gib", "load1")
    groups, literal = {}, {}
    for r in records:
        if "error" in r:
            continue
        groups.setdefault((r["mib"], r["option"]), []).append(r)
        if r["option"] == "openssh-literal":
            literal[(r.get("run"), r["mib"], r.get("round"))] = r["mib_per_s"]
    print("\n| MiB | option | cipher | rounds | wall s | MiB/s (min-max) | x literal, paired (min-max) | "
          "ctl CPU-s/GiB | sshd CPU-s/GiB | remote CPU-s/GiB | feeder CPU-s/GiB | total CPU-s/GiB | load1 |\n"
          + "| --- " * 3 + "| ---: " * 10 + "|", file=sys.stderr)
    fmt = lambda v: "-" if v is None else ("%.3g" % v)
    for (mib, name), rows in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        med = {k: statistics.median(r[k] for r in rows) if all(k in r for r in rows) else None for k in keys}
        ratios = [r["mib_per_s"] / literal[(r.get("run"), mib, r.get("round"))] for r in rows
                  if (r.get("run"), mib, r.get("round")) in literal]
        speeds = [r["mib_per_s"] for r in rows]
        print("| %d | %s | %s | %d | %s | %s (%s-%s) | %s | %s | %s | %s | %s | %s | %s |" % (
            mib, name, rows[0].get("cipher"), len(rows), fmt(med["wall_s"]), fmt(med["mib_per_s"]),
            fmt(min(speeds)), fmt(max(speeds)),
            "%.2fx (%.2f-%.2f)" % (statistics.median(ratios), min(ratios), max(ratios)) if ratios else "-",
            fmt(med["controller_cpu_s_per_gib"]), fmt(med["sshd_cpu_s_per_gib"]), fmt(med["remote_cpu_s_per_gib"]),
            fmt(med["feeder_cpu_s_per_gib"]), fmt(med["total_cpu_s_per_gib"]), fmt(med["load1"])), file=sys.stderr)
    for r in records:
        if "error" in r:
            print("error: %s %s MiB: %s" % (r["option"], r["mib"], r["error"]), file=sys.stderr)


def table_from_files(paths):
    records = []
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.startswith("{"):
                    rec = json.loads(line)
                    rec.setdefault("run", path)
                    records.append(rec)
    table(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
