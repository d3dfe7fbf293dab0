#!/bin/bash
# Back to back on one quiet machine, this commit's bench script each time: the code before the sockets were the default
# (c720b80, a worktree put first on PYTHONPATH), this code with both sockets off, and this code as it ships.
# Run from the repository root: bash bench/results/capacity-ab/run.sh /tmp/hotline-c720b80
set -x
OLD=$1; PY=.venv/bin/python; OUT=bench/results/capacity-ab
PYTHONPATH=$OLD $PY bench/capacity.py --steps 100 --seconds 40 --out $OUT/old-c720b80.json > /tmp/capacity-ab-old.log 2>&1
$PY bench/capacity.py --steps 100 --seconds 40 --setting STT_STREAMING=false --setting TTS_STREAMING=false --out $OUT/new-no-sockets.json > /tmp/capacity-ab-nosockets.log 2>&1
$PY bench/capacity.py --steps 100 --seconds 40 --out $OUT/new.json > /tmp/capacity-ab-new.log 2>&1
