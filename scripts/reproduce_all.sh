#!/usr/bin/env bash
# Fill every CPU-budget reproduction of results/ in the background, in two lanes (one per core, one thread
# each: two 1-thread jobs beat one 2-thread job on a 2-core machine, and never oversubscribe it). Everything is
# resumable per cell: kill it at any time and run this again to continue. Logs: results/<name>.log.
#   scripts/reproduce_all.sh            # start both lanes in the background
#   scripts/reproduce_all.sh --wait     # ... and wait for them
set -euo pipefail
cd "$(dirname "$0")/.."
./run.sh setup                      # creates/refreshes .venv
export OMP_WAIT_POLICY=PASSIVE      # yield instead of spinning when the other lane or the user needs the CPU
r() {  # experiment budget output [extra args]
  local name=$1 budget=$2 out=$3
  shift 3
  .venv/bin/stnkit reproduce "$name" --budget "$budget" --threads 1 --out "$out" --no-progress "$@" \
    >> "$out.log" 2>&1
}
# Both lanes pull Table 1's (and the addition's) cells from one list: a cell being trained by one lane is locked
# (`cells/<key>/.stnkit.lock`, dropped by the kernel if its lane is killed) and the other lane moves on, so the two
# balance themselves; each finished cell rewrites the table from all finished ones. Co-localisation's encoder is the
# exception: a lane that reaches it while the other trains it waits, since every set needs its checkpoint.
lane1() {
  r table1 cpu-15k results/table1-long --cells rts:cnn
  r table1 cpu-3k results/table1
  r mnist3d cpu-2.5k results/mnist3d
  r coloc cpu-1k results/coloc
  r addition cpu-60k results/addition   # shared with lane 2 (cells are locked while trained)
}
lane2() {
  r table1 cpu-3k results/table1
  r table1 cpu-15k results/table1-long --cells rts:st-cnn:affine
  r attention cpu-1.5k results/attention
  r addition cpu-60k results/addition
}
mkdir -p results
lane1 & p1=$!
lane2 & p2=$!
echo "reproductions running in the background (pids $p1 $p2); logs in results/*.log"
if [ "${1:-}" = --wait ]; then wait; fi
