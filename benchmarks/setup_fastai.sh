#!/usr/bin/env bash
# Create benchmarks/.venv-fastai: fastai (the PyTorch user's alternative) for the time-to-accuracy
# comparison, apart from medsight's environment (the product does not depend on fastai).
# About 1-2 min and 5 GB (torch's CUDA build, which runs on the CPU as well).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.venv-fastai"
"$here/.venv-fastai/bin/pip" install -q -r "$here/requirements-fastai.txt"
"$here/.venv-fastai/bin/python" -c \
  "import fastai, timm, torch; print('fastai', fastai.__version__, 'torch', torch.__version__, 'timm', timm.__version__)"
