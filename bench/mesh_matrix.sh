#!/usr/bin/env bash
# The whole equivalence matrix of issue 11: meshes (1,1,2) (1,2,1) (2,1,1) (2,2,2) (1,1,4) × remat
# none/selective/full × AdamW/Adafactor × micro-batches 1, 2 × dropout 0, 0.1, each a 3-update run
# of the one Trainer on the debug config against the mesh (1,1,1) (LocalCluster, one thread a rank).
# CI runs a covering subset (ShardedModelTests.cases); this runs all 120 cases and prints one line each.
set -euo pipefail
cd "$(dirname "$0")/.."
PALM_MESH_MATRIX=1 KMP_BLOCKTIME=0 swift test -c release --filter 'ShardedModelTests/fullMatrix' 2>&1 | grep -E '^matrix|✘|passed|failed'
