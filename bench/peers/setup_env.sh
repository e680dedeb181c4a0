#!/usr/bin/env bash
# Create bench/.peers-venv and install the W1 peer libraries into it:
#   mitogen 0.3.x (latest pip resolves for this Python), execnet==2.1.2,
#   chopsticks==1.0 (the original 2017 project on PyPI),
#   parallel-ssh==2.16.0.post1 (SSH only: W1 over SSH and W2).
#
# Idempotent: when the venv already holds acceptable versions it prints
# nothing and exits 0. If an exact version cannot be installed, the nearest
# fallback is installed, reported on stderr, and remembered in
# $VENV/.peers-fallbacks so later runs accept it quietly.
#
# The venv is separate from the project's environment because the original
# chopsticks has the same import name as our package.
#
# Env: PYTHON (default python3): interpreter the venv is made from.
#      PEERS_VENV (default bench/.peers-venv): where the venv goes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEERS_VENV:-$(cd "$HERE/.." && pwd)/.peers-venv}"
PYTHON="${PYTHON:-python3}"
VPY="$VENV/bin/python"
FALLBACKS="$VENV/.peers-fallbacks"

# Prints the names of packages that are missing or at an unaccepted version.
check_versions() {
    "$VPY" - "$FALLBACKS" <<'PYEOF'
import os, sys
from importlib.metadata import version, PackageNotFoundError
accepted = set()
if os.path.exists(sys.argv[1]):
    accepted = set(open(sys.argv[1]).read().split())
want = {
    'mitogen': lambda v: v.startswith('0.3.'),
    'execnet': lambda v: v == '2.1.2',
    'chopsticks': lambda v: v == '1.0',
    'parallel-ssh': lambda v: v == '2.16.0.post1',
}
for name, ok in want.items():
    try:
        v = version(name)
    except PackageNotFoundError:
        print(name)
        continue
    if not ok(v) and '%s==%s' % (name, v) not in accepted:
        print(name)
PYEOF
}

if [ ! -x "$VPY" ]; then
    pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [ "$pyver" != "3.11" ]; then
        echo "setup_env.sh: warning: $PYTHON is Python $pyver, expected 3.11" >&2
    fi
    "$PYTHON" -m venv "$VENV"
fi

missing="$(check_versions)"
[ -z "$missing" ] && exit 0

# Try the wanted spec, then looser fallbacks, in order.
install_one() {
    local name="$1"; shift
    local wanted="$1" spec
    for spec in "$@"; do
        if "$VPY" -m pip install -q --disable-pip-version-check "$spec"; then
            if [ "$spec" != "$wanted" ]; then
                local got
                got="$("$VPY" -c "from importlib.metadata import version; print(version('$name'))")"
                echo "setup_env.sh: $wanted unavailable; installed $name==$got ($spec)" >&2
                echo "$name==$got" >> "$FALLBACKS"
            fi
            return 0
        fi
    done
    echo "setup_env.sh: could not install $name" >&2
    return 1
}

rc=0
for name in $missing; do
    case "$name" in
        mitogen)    install_one mitogen 'mitogen>=0.3,<0.4' || rc=1 ;;
        execnet)    install_one execnet 'execnet==2.1.2' 'execnet>=2.1,<2.2' 'execnet>=2,<3' || rc=1 ;;
        chopsticks) install_one chopsticks 'chopsticks==1.0' 'chopsticks<2' || rc=1 ;;
        parallel-ssh) install_one parallel-ssh 'parallel-ssh==2.16.0.post1' 'parallel-ssh>=2.16,<2.17' 'parallel-ssh>=2,<3' || rc=1 ;;
    esac
done

# Report what is there now (only reached when something was installed).
"$VPY" - "$VENV" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
out = []
for name in ('mitogen', 'execnet', 'chopsticks', 'parallel-ssh'):
    try:
        out.append('%s==%s' % (name, version(name)))
    except PackageNotFoundError:
        out.append('%s MISSING' % name)
print('setup_env.sh: %s (Python %d.%d.%d): %s'
      % ((sys.argv[1],) + sys.version_info[:3] + (', '.join(out),)))
PYEOF
exit $rc
