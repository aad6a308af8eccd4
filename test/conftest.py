"""Shared pytest fixtures: where the repo and the read-only shared material are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """``../shared`` beside the checkout (present in CI); tests needing it skip with a reason otherwise."""
    if not SHARED_ROOT.is_dir():
        pytest.skip(f"shared material not found at {SHARED_ROOT}")
    return SHARED_ROOT
