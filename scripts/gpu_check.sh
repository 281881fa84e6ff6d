#!/usr/bin/env bash
# The large Lorenz96 fit and one posterior with device="cuda", and the speed-up over the CPU on
# the same fit (issue 19). Unattended; stops after 8 minutes. Needs one CUDA GPU: without one it
# exits with status 2 and says so. Nothing else in the project depends on a GPU.
#
#   scripts/gpu_check.sh                 # python from $PYTHON, else the first python on PATH
#   PYTHON=.venv/bin/python scripts/gpu_check.sh --epochs 20
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: CUDA is not available (torch.cuda.is_available() is False): this check needs a GPU" >&2
    exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
status=0
timeout --signal=INT --kill-after=20 480 "$PY" scripts/gpu_check.py "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
    echo "gpu_check: stopped after 8 minutes" >&2
fi
exit "$status"
