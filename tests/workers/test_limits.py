"""A job's memory budget: an allocation past it fails in the job, and the limit is lifted when the job ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_an_allocation_past_the_budget_fails_and_the_limit_is_lifted_after() -> None:
    code = textwrap.dedent("""
        import resource
        import numpy as np
        from workers.limits import memory_budget
        before = resource.getrlimit(resource.RLIMIT_AS)
        with memory_budget(256 << 20):
            small = np.ones(16 << 20, np.uint8)  # 16 MiB: within
            try:
                np.ones(1 << 30, np.uint8)  # 1 GiB: past it
                print("allocated")
            except MemoryError:
                print("MemoryError")
        assert resource.getrlimit(resource.RLIMIT_AS) == before
        big = np.ones(1 << 30, np.uint8)  # lifted
        print("after", big.nbytes)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MemoryError", "after", str(1 << 30)]
