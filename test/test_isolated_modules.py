"""Runs each module of ``conftest.ISOLATED_MODULES`` in a fresh interpreter (see there why).

The child is a full pytest run of that module: its failures, with their output, fail this test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ISOLATED_ENV, ISOLATED_MODULES, REPO_ROOT


@pytest.mark.parametrize("module", ISOLATED_MODULES)
def test_module_passes_in_its_own_process(module: str) -> None:
    path = REPO_ROOT / "test" / module
    assert path.is_file(), f"{module} is listed in ISOLATED_MODULES but does not exist"
    env = {**os.environ, ISOLATED_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(f"{module}: {summary}")
    # 0: all passed; 5: nothing collected (e.g. no onnxruntime: the module skips itself) is not a pass.
    assert done.returncode == 0, f"{module} failed in its own process (exit {done.returncode}):\n" + (
        done.stdout[-12000:] + done.stderr[-3000:]
    )
