"""Everything the benchmarks read from /proc: CPU per thread, process trees, memory.

One module for every bench script and child (ours and the peers'), so that each quantity
is read one way. Linux only; stdlib only.
"""
import os

CLK_TCK = os.sysconf('SC_CLK_TCK')
PAGE = os.sysconf('SC_PAGE_SIZE')

MACHINE_FIELDS = ('user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal')
BUSY_FIELDS = ('user', 'nice', 'system', 'irq', 'softirq')


def _meminfo_bytes(path, key):
    """The ``key:`` line of a /proc status-style file, in bytes (its unit is kB); None if absent."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    return None


def mem_available():
    """MemAvailable of /proc/meminfo, in bytes."""
    value = _meminfo_bytes('/proc/meminfo', 'MemAvailable')
    if value is None:
        raise RuntimeError('no MemAvailable in /proc/meminfo')
    return value


def self_rss():
    """This process's current RSS (VmRSS of /proc/self/status), in bytes."""
    return _meminfo_bytes('/proc/self/status', 'VmRSS') or 0


def open_fds():
    """How many file descriptors this process has open."""
    return len(os.listdir('/proc/self/fd'))


def machine_cpu():
    """/proc/stat's first line: seconds of all CPUs since boot, per field."""
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return {name: value / CLK_TCK for name, value in zip(MACHINE_FIELDS, fields)}


def machine_busy_s(cpu=None):
    """Busy CPU seconds of all CPUs since boot: user+nice+system+irq+softirq (guest time
    is already inside user; idle, iowait and steal are not ours)."""
    cpu = cpu or machine_cpu()
    return sum(cpu[name] for name in BUSY_FIELDS)


def cpu_model():
    """The first ``model name`` of /proc/cpuinfo, or '?'."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '?')
    except OSError:
        return '?'


def threads_cpu_s(pid):
    """CPU seconds of a live process's current threads, in ns resolution: the sum of
    /proc/<pid>/task/*/schedstat field 1 (time on a CPU, kernel scheduler accounting).
    Threads that already exited are not in it. None if the process cannot be read."""
    if not pid:
        return None
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return None
    total = 0
    for tid in tasks:
        try:
            with open('/proc/%d/task/%s/schedstat' % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that exited while we looked
    return total / 1e9


def thread_count(pid):
    """How many threads ``pid`` has now (0 if it is gone)."""
    try:
        return len(os.listdir('/proc/%d/task' % pid))
    except OSError:
        return 0


def read_procs(precise=False):
    """pid -> (ppid, comm, own cpu s, reaped children's cpu s, rss bytes) for every process.

    /proc/<pid>/stat gives CPU in clock ticks (10 ms), truncated per value: summed over
    thousands of short-lived processes that loses ~5 ms per process and value (measured:
    ~25 ms per fleet host, a quarter of the total). With ``precise`` the own CPU is the
    larger of that and the exact sum over the live threads (schedstat); the ticks value
    still wins when exited threads make it larger. Reaped children stay in ticks, but
    they are summed in ns by the kernel and truncated once per parent."""
    procs = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                raw = f.read()
        except OSError:
            continue
        head, _, tail = raw.rpartition(')')
        comm = head.split('(', 1)[1]
        f = tail.split()
        own = (int(f[11]) + int(f[12])) / CLK_TCK
        if precise and f[0] != 'Z':
            exact = threads_cpu_s(int(entry))
            if exact is not None and exact > own:
                own = exact
        procs[int(entry)] = (int(f[1]), comm, own, (int(f[13]) + int(f[14])) / CLK_TCK,
                             int(f[21]) * PAGE)
    return procs


def descendants(root, procs=None):
    """PIDs of every live descendant of ``root``, from the parent links of ``procs`` (a
    ``read_procs()`` result; read now when not given)."""
    if procs is None:
        procs = read_procs()
    kids = {}
    for pid, p in procs.items():
        kids.setdefault(p[0], []).append(pid)
    found, todo = [], [root]
    while todo:
        for kid in kids.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return found


def subtree_cpu_s(root):
    """CPU seconds of ``root`` and its live descendants, each with the children it reaped
    (so processes that came and went under it count too; ``precise`` live threads)."""
    procs = read_procs(precise=True)
    return sum(procs[pid][2] + procs[pid][3] for pid in [root] + descendants(root, procs) if pid in procs)


def kernel_threads_cpu():
    """CPU seconds of the kernel's threads (kthreadd's children: ksoftirqd, kworkers...)."""
    return sum(p[2] for pid, p in read_procs().items() if p[0] == 2 or pid == 2)


def cmdline(pid):
    """/proc/<pid>/cmdline with its NULs as spaces; '' if the process is gone."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def pss(pid):
    """Proportional set size of a process in bytes (shared pages split among their users)."""
    try:
        value = _meminfo_bytes('/proc/%d/smaps_rollup' % pid, 'Pss')
    except (OSError, ValueError, IndexError):
        return 0
    return value or 0


def tcp_bytes_sent(pid):
    """Bytes sent so far on the TCP sockets ``pid`` holds open (``ss -tinp``'s ``bytes_sent``;
    sockets already closed are not counted)."""
    import re
    import subprocess
    out = subprocess.run(['ss', '-tinpH'], capture_output=True, text=True, check=True).stdout.splitlines()
    total, mine = 0, False
    for line in out:
        if not line.startswith(('\t', ' ')):  # a socket's line; its TCP details follow on the next
            mine = ('pid=%d,' % pid) in line
        elif mine:
            found = re.search(r'\bbytes_sent:(\d+)', line)
            total += int(found.group(1)) if found else 0
    return total
