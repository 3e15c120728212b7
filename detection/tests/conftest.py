"""Dry runs shared by the test files: each detector trained once per test session."""

from pathlib import Path

import pytest

from shared.testing import run_script

PROJECT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory):
    """dry_run(detector): the run folder of `train.py --dry-run --detector D --threads 1`, made
    on first use. One thread, as each process of the torchrun tests has."""
    folders = {}

    def folder(detector: str) -> Path:
        if detector not in folders:
            out = tmp_path_factory.mktemp(detector)
            flags = ("--dry-run", "--detector", detector, "--threads", "1", "--out", out)
            run_script(PROJECT, "train.py", *flags)
            folders[detector] = out
        return folders[detector]

    return folder
