# Sourced by the demo and test scripts: make .venv (once) and install p2pdist into it.
# Usage: P2PDIST_EXTRA=test . scripts/venv.sh   ("test" installs the test dependencies too).
# (A variable, not an argument: a sourced file sees the caller's arguments when given none.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extra=${P2PDIST_EXTRA:-}
venv="$root/.venv"
# The interpreter: $P2PDIST_PYTHON if set, else the distribution's /usr/bin/python3 when it is
# 3.11 or newer, else python3 from PATH. The engine is pure Python, and distribution builds
# (Debian, Ubuntu, Fedora) are compiled with PGO and LTO: on the benchmark machine Debian's
# 3.11 runs it about 1.3x faster than a default source build such as pyenv's.
python=${P2PDIST_PYTHON:-}
if [ -z "$python" ]; then
  python=python3
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=/usr/bin/python3
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv support separately.
    rm -rf "$venv"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    "$python" -m venv "$venv" || { echo "p2pdist: $python -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
  fi
fi
# An editable install that is one path in a .pth file (editable_mode=compat), not an import
# hook: the hook imported pathlib and importlib.util at every interpreter start, 25 ms that
# every p2pdist command and benchmark in this venv paid and an installed p2pdist does not.
stamp="$venv/.installed-${extra:-base}-compat"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "p2pdist: installing into $venv (first run only)..." >&2
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root${extra:+[$extra]}" \
      --config-settings editable_mode=compat >"$venv/install.log" 2>&1; then
    cat "$venv/install.log" >&2
    echo "p2pdist: pip install failed (log above)" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
