"""The framework's start-up notices are dropped from stderr; whatever else the import prints is passed on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_load_drops_the_notices_and_keeps_other_lines() -> None:
    code = textwrap.dedent("""
        import os, sys
        import workers.framework as fw
        # a stand-in for the framework: prints a notice and a real warning on fd 2 while it is imported
        sys.modules["keras"] = None
        import importlib.abc, importlib.machinery
        class Noisy(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path, target=None):
                return importlib.machinery.ModuleSpec(name, self) if name == "keras" else None
            def create_module(self, spec):
                return None
            def exec_module(self, module):
                os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see...\\n")
                os.write(2, b"W0000 something the user should see\\n")
                module.backend = type("Backend", (), {"backend": staticmethod(lambda: "jax")})
        del sys.modules["keras"]
        sys.meta_path.insert(0, Noisy())
        fw.load()
        fw.load()  # once
        print("loaded", "keras" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded True"
    assert "oneDNN" not in proc.stderr
    assert proc.stderr.count("something the user should see") == 1
