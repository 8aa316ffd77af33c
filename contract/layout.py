"""The names inside a run's folder that both sides write or read: its checkpoints' folders.

A run's folder (``<storage.path>/<experiment>/<run>/``, owned by the driver's
:class:`~orchestrator.folder.ExperimentFolder`) holds Ray Train's run, named by the driver
(``train-<trial id>``), and in it one folder per checkpoint, named here by its step. The
worker names each checkpoint it writes, and records where it went relative to the run's
folder, so the record still points at it when the experiment folder is moved, copied, or
synced between a bucket and a disk.
"""

from __future__ import annotations

import re

_STEP = re.compile(r"step_(\d+)")


def step_folder(step: int) -> str:
    """The checkpoint folder of the evaluation after ``step`` optimizer steps: ``step_000020``."""
    return f"step_{step:06d}"


def step_of(folder: str) -> int | None:
    """The step of a checkpoint folder's name (``step_000020`` -> 20; ``step_1000000`` too), None for another name.

    Checkpoints are ordered by this number, never by their names: six digits run out at step 999,999.
    """
    found = _STEP.fullmatch(folder)
    return int(found.group(1)) if found else None


def checkpoint_in_run(train_run: str, step: int) -> str:
    """Where the checkpoint after ``step`` is, relative to its run's folder: ``train-<trial id>/step_000020``
    (``train_run``: Ray Train's run, as its context names it)."""
    return f"{train_run}/{step_folder(step)}"
