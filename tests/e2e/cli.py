"""Run the installed ``latentfarm`` command the way a user does, in a directory of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def latentfarm_bin() -> str:
    found = Path(sys.executable).parent / "latentfarm"
    return str(found) if found.exists() else shutil.which("latentfarm") or "latentfarm"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTFARM_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([latentfarm_bin(), *args], cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"latentfarm {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_json(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Any:
    return json.loads(run([*args, "--json"], cwd, env).stdout)
