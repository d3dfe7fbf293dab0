#!/bin/bash
# Back to back, the same bench scripts (this commit's) on the old code (24cd5aa, a worktree on PYTHONPATH) and the new.
# Run from the repository root: bash bench/results/call-split/run.sh /tmp/hotline-24cd5aa
set -x
OLD=$1; PY=.venv/bin/python; OUT=bench/results/call-split
for code in old new; do
  [ $code = old ] && PP=$OLD || PP=$PWD
  PYTHONPATH=$PP $PY bench/latency.py --modes oracle --out /tmp/call-split-$code > /tmp/call-split-latency-$code.log 2>&1
  cp /tmp/call-split-$code/latency-oracle.json $OUT/latency-$code.json
  PYTHONPATH=$PP $PY bench/capacity.py --steps 100 200 --seconds 30 --out $OUT/capacity-$code.json > /tmp/call-split-capacity-$code.log 2>&1
  PYTHONPATH=$PP $PY bench/results/engine-step2/frames.py $code >> $OUT/frames.txt  # the per-frame script of the earlier step
done
