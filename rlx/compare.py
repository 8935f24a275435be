"""``python -m rlx.compare <run or sweep dirs>``: the comparison report (rlx/report/compare.py)."""

import sys

from rlx.report.compare import main

if __name__ == "__main__":
    sys.exit(main())
