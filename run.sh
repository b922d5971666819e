#!/usr/bin/env bash
# stnkit's two entry points. Each creates or refreshes the virtual environment (.venv) itself.
#   ./run.sh demo [stnkit demo options]   train an ST-CNN and a CNN on RTS MNIST, print both errors, draw the figure
#   ./run.sh test [pytest options]        the whole test suite
#   ./run.sh setup                        only create/refresh .venv (with the dev and training extras)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${STNKIT_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {  # $1 = extras (train | dev)
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.stnkit-$1" want
  want=$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up $VENV ($1 dependencies; log in $VENV/pip.log) ..." >&2
    local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)
    # torch first, pinned (a CPU wheel is on this machine's disk); then the project under the same constraints
    if ! { "${pip[@]}" --upgrade pip && "${pip[@]}" -c constraints.txt torch \
           && "${pip[@]}" -c constraints.txt -e ".[$1]"; } > "$VENV/pip.log" 2>&1; then
      tail -n 30 "$VENV/pip.log" >&2
      echo "run.sh: installing the $1 environment failed (full log: $VENV/pip.log)" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
  fi
}

# real MNIST beside the checkout (../shared/data/mnist) unless the user points elsewhere
if [ -z "${STNKIT_DATA:-}" ] && [ -f ../shared/data/mnist/train-images-idx3-ubyte.gz ]; then
  export STNKIT_DATA
  STNKIT_DATA=$(cd ../shared/data/mnist && pwd)
fi

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    setup train
    exec "$VENV/bin/stnkit" demo "$@"
    ;;
  test)
    setup dev
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  setup)
    setup dev
    ;;
  *)
    echo "usage: ./run.sh demo [options] | ./run.sh test [pytest options] | ./run.sh setup" >&2
    exit 2
    ;;
esac
