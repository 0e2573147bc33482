#!/usr/bin/env bash
# Create benchmarks/.venv-keras: the tutorials' Keras/TensorFlow stack, apart from medsight's
# environment (the product does not depend on TensorFlow). About 20 s and 1.6 GB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.venv-keras"
"$here/.venv-keras/bin/pip" install -q -r "$here/requirements-keras.txt"
"$here/.venv-keras/bin/python" -c \
  "import tensorflow as tf, keras; print('tensorflow', tf.__version__, 'keras', keras.__version__)"
