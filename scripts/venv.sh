# Sourced by the demo and test scripts: make .venv (once) and install p2pdist into it.
# Usage: . scripts/venv.sh [EXTRA]   e.g. "test" installs the test dependencies too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extra=${1:-}
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || { echo "p2pdist: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi
stamp="$venv/.installed-${extra:-base}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root${extra:+[$extra]}"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
