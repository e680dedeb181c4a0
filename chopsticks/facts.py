"""Facts about a host, gathered on the host itself. Remote-safe: standard library only, Python 3.9.

Call them through a tunnel or a group: ``group.call(facts.all)``. Each reads the kernel's own
files (``/proc``, ``/etc/os-release``) or the standard library, runs no command, and returns
plain values that travel back as results. ``ip`` and ``python_version`` keep the original
chopsticks' signatures and results.
"""

import os
import platform
import socket
import sys

# Pseudo filesystems that disks() leaves out.
_PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "pstore",
              "debugfs", "tracefs", "mqueue", "hugetlbfs", "configfs", "fusectl", "bpf", "autofs",
              "binfmt_misc", "rpc_pipefs", "nsfs", "overlay", "squashfs", "ramfs", "efivarfs"}


def hostname():
    """The host's name, as the kernel has it."""
    return socket.gethostname()


def fqdn():
    """The host's fully qualified domain name (may ask its resolver)."""
    return socket.getfqdn()


def _interface_addresses():
    """(interface, IPv4 address) of every interface that has one."""
    import fcntl
    import struct
    found = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            found.append((name, socket.inet_ntoa(packed[20:24])))
    finally:
        probe.close()
    return found


def ips():
    """Every IPv4 address of the host, by interface: ``{'eth0': '10.0.0.5', ...}``."""
    return dict(_interface_addresses())


def ip():
    """The host's first global IPv4 address (not loopback or link-local), or None."""
    for _, address in _interface_addresses():
        if not address.startswith(("127.", "169.254.")):
            return address
    return None


def python_version(short=False):
    """The Python version as a list: ``[3, 11, 2, 'final', 0]``, or ``[3, 11]`` if short."""
    if short:
        return list(sys.version_info[:2])
    return list(sys.version_info)


def python_executable():
    """The path of the remote interpreter."""
    return sys.executable


def os_release():
    """/etc/os-release as a dict (``{'ID': 'debian', 'VERSION_ID': '12', ...}``), or {}."""
    info = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                info[key.strip()] = value
        break
    return info


def kernel():
    """The kernel's name and release: ``{'system': 'Linux', 'release': '6.1.0-13-amd64', ...}``."""
    uname = os.uname()
    return {"system": uname.sysname, "release": uname.release, "version": uname.version}


def arch():
    """The machine architecture (``x86_64``, ``aarch64`` ...)."""
    return platform.machine()


def cpus():
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def memory():
    """Memory in bytes: ``{'total': ..., 'available': ..., 'swap_total': ..., 'swap_free': ...}``."""
    wanted = {"MemTotal": "total", "MemAvailable": "available", "SwapTotal": "swap_total", "SwapFree": "swap_free"}
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in wanted:
                info[wanted[key]] = int(rest.split()[0]) * 1024
    return info


def disks():
    """Mounted real filesystems: ``{mountpoint: {'device', 'fstype', 'total', 'free', 'available'}}``."""
    found = {}
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3 or fields[2] in _PSEUDO_FS or fields[1] in found:
                continue
            device, mountpoint, fstype = fields[0], fields[1].replace("\\040", " "), fields[2]
            try:
                st = os.statvfs(mountpoint)
            except OSError:
                continue
            if st.f_blocks == 0:
                continue
            found[mountpoint] = {"device": device, "fstype": fstype, "total": st.f_blocks * st.f_frsize,
                                 "free": st.f_bfree * st.f_frsize, "available": st.f_bavail * st.f_frsize}
    return found


def uptime():
    """Seconds since boot."""
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def load():
    """The 1, 5 and 15 minute load averages."""
    return tuple(os.getloadavg())


FACTS = ("hostname", "fqdn", "ip", "ips", "python_version", "python_executable", "os_release", "kernel",
         "arch", "cpus", "memory", "disks", "uptime", "load")


def all(names=None):  # noqa: A001 (the name the fan-out CLI and users ask for)
    """Every fact (or those named) in one call: ``{name: value}``; a fact that fails is None."""
    result = {}
    for name in names or FACTS:
        if name not in FACTS:
            raise ValueError("unknown fact %r; facts are: %s" % (name, ", ".join(FACTS)))
        try:
            result[name] = globals()[name]()
        except Exception:
            result[name] = None
    return result
