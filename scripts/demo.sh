#!/usr/bin/env bash
# Set-up, then the main job on the bundled default: compile the MNIST MLP (models/mlp-mnist.onnx) for the
# PCM target and emulate it from 1 s to 1 year on 5 simulated chips with three drift compensations.
# Data: ../shared/data/mnist if present, else the bundled 1,000-image subset in models/data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
mkdir -p out
acompile models/mlp-mnist.onnx --target pcm -o out/mlp-mnist.pcm.onnx \
  --eval --data mnist --times 1s,1h,1d,30d,1y --chips 5 --compensation none,global,column --seed 0 \
  --json out/retention.json --csv out/retention.csv --plot out/retention.png "$@"
echo "outputs: out/mlp-mnist.pcm.onnx, out/mlp-mnist.pcm.{json,md,png}, out/retention.{json,csv,png}"
