#!/usr/bin/env bash
# Warn (never fail) when the disk holding the virtual environment looks too small for the
# full install: PyTorch's x86_64 wheel brings its CUDA libraries, about 7.5 GB in all.
set -u
venv=${1:-.venv}
"$venv/bin/python" -c "import torch" >/dev/null 2>&1 && exit 0   # already installed
free_kb=$(df -Pk "$(dirname "$(realpath -m "$venv")")" 2>/dev/null | awk 'NR==2 {print $4}')
[ -n "$free_kb" ] || exit 0
if [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: $((free_kb / 1024)) MB free for $venv; the full install needs about 8 GB" \
       "(PyTorch and its CUDA libraries). pip will stop with 'No space left on device' if it runs out." >&2
fi
exit 0
