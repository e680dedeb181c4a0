#!/usr/bin/env python3
"""W3, file push: 256 MiB to 1 host and 16 MiB to 50 hosts, ours and the peers in one run.

Starts a loopback fleet (one sshd), writes random source files, and runs each
implementation as its own process (so its peak RSS is its own): connect every host first,
then time the push alone. Every host gets its own destination path under a tmpfs
(``/dev/shm``), so the disk is not what is measured; after each run the orchestrator checks
every destination's SHA-256. The floor is OpenSSH itself, with the cipher our sessions
negotiate first (``transports.ssh.CIPHERS``) and the same kind of destination: ``ssh -c
aes128-gcm@openssh.com host 'cat > /dev/shm/.../HOST.bin' < file``, minus ``ssh host true``
(the login). Each record says the controller's CPU per GiB sent (the implementation's process
and its live descendants over the push: OpenSSH clients, shards; or the floor's ssh clients)
and the hosts' (the fleet's sshd and everything under it: sshd sessions, agents, ``cat``).
Ours runs once per ``--sessions`` value (put's ``sessions``: extra SSH sessions per host).
One JSON line per measurement on stdout; then a table on stderr.

    .venv/bin/python bench/w3_files.py            # ours and the floor
    .venv/bin/python bench/w3_files.py --peers    # and chopsticks 1.0, parallel-ssh (SCP, SFTP), execnet, mitogen
    .venv/bin/python bench/w3_files.py --only 16MiB-50hosts --relay 4   # and ours through relays of degree 4

Each of ours says how many MiB it sent on its own TCP sockets (``ss``): through relays, the
controller sends the file to the tree's roots only.
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Tuple

from chopsticks.transports.ssh import CIPHERS
from harness import procfs
from harness.runner import BENCH, PEERS, PEERS_PY, ROOT, append_results, peers_env, start_fleet

MIB = 1 << 20
CASES = [("256MiB-1host", 256, 1), ("16MiB-50hosts", 16, 50)]


def random_file(path: str, mib: int) -> str:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    return path


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def run_child(argv, cwd, env):
    """Run one implementation; its JSON answer, wall time it reported, and its peak RSS."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    answer = None
    for line in out.splitlines():
        if line.startswith("{"):
            answer = json.loads(line)
    return answer, err, usage.ru_maxrss / 1024, time.monotonic() - started, proc.returncode


CIPHER = CIPHERS.split(",")[0]  # the one our sessions negotiate with OpenSSH's sshd


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor(fleet, src: str, hosts, dest_dir: str) -> Tuple[float, float, float]:
    """Seconds OpenSSH needs to move the file to each host at once (each into its own file of
    ``dest_dir``, with our cipher), the CPU seconds of its clients for it, and the hosts';
    logins excluded."""
    base = ["ssh", "-F", fleet.ssh_config, "-o", "BatchMode=yes", "-c", CIPHER]

    def timed(command, stdin_path=None):
        host_cpu = procfs.subtree_cpu_s(fleet.proc.pid)
        started, cpu = time.monotonic(), children_cpu_s()
        procs = []
        for host in hosts:
            stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
            procs.append(subprocess.Popen(base + [host, command.format(host=host)], stdin=stdin))
            if stdin_path:
                stdin.close()
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError("ssh failed")
        wall, cpu = time.monotonic() - started, children_cpu_s() - cpu
        time.sleep(0.3)  # the sessions' processes: reaped by the fleet's sshd by now
        return wall, cpu, procfs.subtree_cpu_s(fleet.proc.pid) - host_cpu

    logins = [timed("true") for _ in range(3)]
    login, login_cpu, login_host = (min(each) for each in zip(*logins))
    os.makedirs(dest_dir, exist_ok=True)
    try:
        wall, cpu, host = timed("cat > %s/{host}.bin" % dest_dir, src)
        return max(0.001, wall - login), max(0.0, cpu - login_cpu), max(0.0, host - login_host)
    finally:
        shutil.rmtree(dest_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", action="store_true", help="also run chopsticks 1.0, parallel-ssh, execnet and mitogen")
    parser.add_argument("--only", action="append", help="run only these cases (256MiB-1host, 16MiB-50hosts)")
    parser.add_argument("--workers", default="1", metavar="LIST",
                        help="ours with each of these shard counts, comma-separated (default 1: no shards)")
    parser.add_argument("--sessions", default="auto", metavar="LIST",
                        help="ours with each of these put sessions= values, comma-separated (default auto)")
    parser.add_argument("--relay", default="", metavar="LIST",
                        help="also ours through relays, a tree of each of these degrees (comma-separated)")
    parser.add_argument("--json-out", default="w3.jsonl", help="results file (under bench/results/)")
    args = parser.parse_args()
    ours = (ROOT, dict(os.environ))  # cwd, env
    peer = (PEERS, peers_env())
    impls = [("chopsticks" + ("" if w == "1" else " workers=" + w) + ("" if n == "auto" else " sessions=" + n),
              [sys.executable, os.path.join(BENCH, "w3_ours.py"), "--workers", w, "--sessions", n], ours)
             for w in args.workers.split(",") for n in args.sessions.split(",")]
    impls += [("chopsticks relay=" + degree, [sys.executable, os.path.join(BENCH, "w3_ours.py"), "--relay", degree],
               ours) for degree in args.relay.split(",") if degree]
    if args.peers:
        if not os.path.exists(PEERS_PY):
            raise SystemExit("no peers venv: run bench/peers/setup_env.sh")
        impls += [("chopsticks-1.0", [PEERS_PY, os.path.join(PEERS, "w3_chopsticks1.py")], peer),
                  ("parallel-ssh-scp", [PEERS_PY, os.path.join(PEERS, "w3_pssh.py"), "--scp"], peer),
                  ("parallel-ssh-sftp", [PEERS_PY, os.path.join(PEERS, "w3_pssh.py")], peer),
                  ("execnet", [PEERS_PY, os.path.join(PEERS, "w3_execnet.py")], peer),
                  ("mitogen", [PEERS_PY, os.path.join(PEERS, "w3_mitogen.py")], peer)]
    work = tempfile.mkdtemp(prefix="chopsticks-w3-")
    dest_root = tempfile.mkdtemp(prefix="chopsticks-w3-", dir="/dev/shm")
    fleet = start_fleet(max(hosts for _, _, hosts in CASES))
    for _, _, (_, env) in impls:
        env["W3_FLEET_PID"] = str(fleet.proc.pid)  # the hosts' side of each push (harness.w3.Push)
    records = []
    try:
        hosts_file = os.path.join(work, "hosts")
        for name, mib, count in CASES:
            if args.only and name not in args.only:
                continue
            src = random_file(os.path.join(work, "src-%d" % mib), mib)
            want = sha256_of(src)
            hosts = fleet.hosts[:count]
            with open(hosts_file, "w") as f:
                f.write("\n".join(hosts) + "\n")
            seconds, cpu, host_cpu = floor(fleet, src, hosts, os.path.join(dest_root, "floor"))
            record = {"workload": "W3", "case": name, "impl": "floor: ssh -c %s 'cat > /dev/shm/...'" % CIPHER,
                      "mib_per_s": round(mib * count / seconds, 1),
                      "controller_cpu_s_per_gib": round(cpu / (mib * count / 1024), 2),
                      "host_cpu_s_per_gib": round(host_cpu / (mib * count / 1024), 2)}
            print(json.dumps(record), flush=True)
            records.append(record)
            for impl, argv, (cwd, env) in impls:
                dest_dir = os.path.join(dest_root, impl)
                os.makedirs(dest_dir, exist_ok=True)
                answer, err, rss_mib, wall, status = run_child(
                    argv + ["--hosts-file", hosts_file, "--port", str(fleet.port), "--key", fleet.key,
                            "--known-hosts", fleet.known_hosts, "--ssh-config", fleet.ssh_config,
                            "--src", src, "--dest", os.path.join(dest_dir, "{host}.bin")], cwd, env)
                record = {"workload": "W3", "case": name, "impl": impl, "hosts": count, "mib": mib,
                          "controller_peak_rss_mib": round(rss_mib, 1), "exit_status": status}
                if answer is None or status != 0:
                    record["error"] = (err.strip().splitlines() or ["no output"])[-1][:300]
                else:
                    bad = [h for h in hosts if not os.path.exists(os.path.join(dest_dir, h + ".bin"))
                           or sha256_of(os.path.join(dest_dir, h + ".bin")) != want]
                    record.update(seconds=answer["seconds"], ok=count - len(bad),
                                  mib_per_s=round(mib * count / answer["seconds"], 1),
                                  controller_cpu_s_per_gib=round(answer["cpu_s"] / (mib * count / 1024), 2))
                    if answer.get("sent_bytes") is not None:
                        record["controller_sent_mib"] = round(answer["sent_bytes"] / MIB, 1)
                    if "host_cpu_s" in answer:
                        record["host_cpu_s_per_gib"] = round(answer["host_cpu_s"] / (mib * count / 1024), 2)
                print(json.dumps(record), flush=True)
                records.append(record)
                shutil.rmtree(dest_dir, ignore_errors=True)
            os.unlink(src)
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest_root, ignore_errors=True)
    append_results(args.json_out, records)
    print("\n| implementation | case | MiB/s | controller CPU-s per GiB | hosts' CPU-s per GiB | controller peak RSS MiB "
          "| MiB the controller sent |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |", file=sys.stderr)
    for r in records:
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["impl"], r["case"], r.get("mib_per_s", r.get("error")), r.get("controller_cpu_s_per_gib", ""),
            r.get("host_cpu_s_per_gib", ""), r.get("controller_peak_rss_mib", ""), r.get("controller_sent_mib", "")),
            file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
