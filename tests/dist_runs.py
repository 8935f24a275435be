"""Runs several rlx configs one after another in one process group, so that a torchrun launch (its start-up
and rendezvous) serves several equality cases (tests/test_distributed.py):

    torchrun --standalone --nproc_per_node 2 tests/dist_runs.py <out dir> '<json {name: [overrides]}>'

Each case's run dir is <out dir>/<name>.
"""

import json
import sys

import rlx

if __name__ == "__main__":
    out, cases = sys.argv[1], json.loads(sys.argv[2])
    for name, overrides in cases.items():
        rlx.run(rlx.compose(overrides), run_dir=f"{out}/{name}")
