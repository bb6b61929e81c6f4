"""Shared test fixtures: paths to ../shared/data (tests needing it skip with a reason when absent)."""

import os

import pytest  # (XLA_FLAGS, with the fake CPU devices of the data-parallel tests: ../conftest.py)

DATA_DIR = os.environ.get("HWNAS_DATA_DIR",
                          os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(scope="session")
def data_dir() -> str:
    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"shared data not found at {DATA_DIR} (set HWNAS_DATA_DIR)")
    return DATA_DIR
