#!/bin/bash
# back to back: the same (old) bench scripts on the old and the new code
set -x
PY=/work/main/.venv/bin/python
for code in old new; do
  [ $code = old ] && PP=/work/wt/old || PP=/work/main
  PYTHONPATH=$PP $PY bench/latency.py --corpus /work/shared/corpus --modes ours --out /tmp/oldbench/latency-$code.json > /tmp/oldbench/latency-$code.log 2>&1
done
for code in old new; do
  [ $code = old ] && PP=/work/wt/old || PP=/work/main
  PYTHONPATH=$PP $PY bench/capacity.py --corpus /work/shared/corpus --steps 100 200 --seconds 30 --out /tmp/oldbench/capacity-$code.json > /tmp/oldbench/capacity-$code.log 2>&1
done
