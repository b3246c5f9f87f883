#!/usr/bin/env bash
# `make demo`: the whole platform on the local defaults (tiny profile, CPU).
#   1. the local MLflow + Prefect servers (left running: their UIs show what happened);
#   2. `motionctl pipeline`: curate -> train stages 0-3 -> distill -> evaluate -> promote, the
#      student ending as `champion` (stages already done with the same inputs are reused);
#   3. `motionctl serve`: the Triton model repository built from `champion`, tritonserver up;
#   4. `motionctl animate`: a real photo (the astronaut portrait) driven by real footage
#      (a pedestrian of vtest.avi, followed by the crop) over gRPC -> mp4, then
#      `motionctl verify` on it.
set -euo pipefail
cd "$(dirname "$0")/.."
MC=.venv/bin/motionctl
PY=.venv/bin/python
OUT=${MC_HOME:-.local}/demo
mkdir -p "$OUT"
started=$(date +%s)

$MC stack up
# Every promotion gate applies, the baseline gate (student vs the static reference) too.
$MC pipeline

$MC serve > "$OUT/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
echo "demo: waiting for tritonserver (log $OUT/serve.log)"
HTTP_PORT=$($PY -c 'from flows.settings import load_settings; print(load_settings().triton_http_port)')
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$OUT/serve.log"; exit 1; }
  sleep 1
done

# inputs: a real portrait and 7 s of real footage of a walking pedestrian, in a window that
# follows him (the evaluation's real items drive with the start of the same clip)
$PY - "$OUT" <<'PYTHON'
import sys
from pathlib import Path

import cv2
from skimage.data import astronaut

from models.person_crop import walking_pedestrian
from models.video import write_mp4

out = Path(sys.argv[1])
cv2.imwrite(str(out / "reference.png"), astronaut()[..., ::-1])  # cv2 writes BGR
clip = walking_pedestrian(36)
write_mp4(out / "driving.mp4", clip.frames, fps=clip.fps)
PYTHON
$MC animate --reference "$OUT/reference.png" --driving "$OUT/driving.mp4" \
  --prompt "an astronaut walking down the street, the camera slowly zooms in" --seed 0 \
  --out "$OUT/animated.mp4"
$MC verify "$OUT/animated.mp4"

echo
echo "demo: done in $(( $(date +%s) - started )) s"
echo "  video:        $OUT/animated.mp4 (inputs: $OUT/reference.png, $OUT/driving.mp4)"
$MC stack status
echo "  MLflow UI:    experiments curation, teacher, distillation, evaluation; models"
echo "                motioncontrol-teacher and motioncontrol-student@champion"
echo "  Prefect UI:   the flow run 'pipeline' and its subflows"
echo "  stop the servers: make stack-down"
