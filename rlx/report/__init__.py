"""Reports over run and sweep dirs: ``compare`` (tables, ``python -m rlx.compare``), ``html`` (the
interactive dashboard) and ``png`` (the static figure)."""
