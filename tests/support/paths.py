"""Fixtures that locate test data: the repo's own fixture models and ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_MODELS = REPO / "tests" / "fixtures" / "models"
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared")).resolve()


def shared_file(relative: str) -> Path:
    """Return a file under the shared data dir, or skip the test with the reason."""
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(
            f"shared test data {relative} not found under {SHARED} "
            "(set EDGE_AGENT_SHARED to the folder holding models/ and images/)"
        )
    return path


def fixture_model(name: str) -> Path:
    """Return a self-made fixture model; these are committed, so absence is a failure."""
    path = FIXTURE_MODELS / name
    assert path.is_file(), f"{path} missing: run `python models/make_models.py`"
    return path


@pytest.fixture
def repo_root() -> Path:
    return REPO
