#!/usr/bin/env bash
# Issue 21, criterion 3: bench/e2e.py on the very scenes of its baseline (114.7 / 259 mm MPJPE / root error,
# 6 default scenes, bench/results/e2e.md at 721e12f). The scenes are drawn from the cache's validation split,
# which issue 17 changed (split by performer, two more archives), so the baseline's scenes need the cache as
# 721e12f built it: its posebert-data, on the three archives it knew. Today's code then scores those scenes.
#
#   bash bench/e2e_baseline_scenes.sh [workdir]      # ~15 min on 2 cores (YOLO on 8 scenes)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$ROOT/cache/e2e_721e12f}
PY=${PYTHON:-$ROOT/.venv/bin/python}
MOCAP=$ROOT/../shared/data/mocap
mkdir -p "$WORK/src"
if [ ! -f "$WORK/cache/val.npz" ]; then
  [ -d "$WORK/old" ] || git -C "$ROOT" worktree add --detach "$WORK/old" 721e12f
  for f in bandai-namco-1.tar.xz bandai-namco-2.tar.xz cmu-asfamc-01-03.tar.xz; do ln -sf "$MOCAP/$f" "$WORK/src/$f"; done
  (cd "$WORK/old" && PYTHONPATH="$WORK/old" "$PY" -c \
    "from posebert_plug.mocap.dataset import main; main(['build', '--src', '$WORK/src', '--out', '$WORK/cache'])")
fi
cd "$ROOT"
"$PY" bench/e2e.py --cache "$WORK/cache" --no-video --raised 2 --out "$WORK/results" \
  --save-detections "$WORK/results/detections.json"
