"""What makes a sweep start fast: each lever, what it does, and the switch that turns it off.

As Ray ships them, every run starts a Tune trial, a Train controller, a queue between the two,
a placement-group cleaner, a DatasetManager, a PreemptionWatcher, a synchronization actor and
its Train workers, each a fresh Python process that imports Ray (and most of them torch). On
a GPU cluster that is a few seconds per run against hours of training; on a laptop's CPU,
eight runs at once spend half the sweep importing. With the levers, a run starts its trial
(with the controller in it) and its workers, and a synchronization actor only when it has
more than one worker.
The levers (measured one at a time by ``python -m bench.orchestration --ablate``,
docs/BENCHMARKS.md section 2):

- ``concurrency``: in local mode on a CPU-only machine, only as many runs at once as the
  cores hold (:func:`orchestrator.launch.localize`); never on a GPU or a cluster.
- ``dataset_manager``: no DatasetManager actor, which Ray Train starts for every run even
  without Ray Datasets (:class:`~orchestrator.sweep.ray_workarounds.TorchTrainer`).
- ``controller_in_trial``: each run's Train controller runs in its Tune trial's process, which
  then takes the results directly: no controller actor and no queue actor between the two
  (:class:`~orchestrator.sweep.ray_workarounds.TorchTrainer`).
- ``placement_group_janitor``: one actor per sweep holds every run's placement group and
  releases it when Tune ends the run, instead of Ray Train's PlacementGroupCleaner actor per
  run, which cannot see a run end without Ray's dashboard
  (:class:`~orchestrator.sweep.ray_workarounds.PlacementGroupJanitor`).
- ``sync_actor``: a run of one worker gets no SynchronizationActor, whose barriers a single
  worker meets on arrival; a stand-in answers in the worker's own process
  (:class:`~orchestrator.sweep.ray_workarounds.SoloSynchronization`). Needs ``controller_in_trial``.
- ``autoscaling_coordinator``: the driver starts the actor Train asks for resources through,
  one per cluster, as soon as it is connected, instead of the first runs starting it and
  waiting for it (:func:`~orchestrator.sweep.ray_workarounds.start_autoscaling_coordinator`).
- ``preemption_watcher``: no PreemptionWatcher actor per run. It only reports node drains to
  training code that asks (``ray.train.get_preemption_info``), which ours does not; a
  drained node's workers are restarted from the latest checkpoint like any lost worker.

Measured and dropped: ``RAY_preload_python_modules=torch`` (Ray's idle workers import torch
before they are given an actor). Every worker process then imports torch, also those that
become a trial actor, a Train controller or a sync actor, which never need it: on 2 cores it
made the default job 84 s slower, not faster (docs/BENCHMARKS.md section 2).

``PLATEAU_STARTUP_OFF=lever,lever`` turns levers off, to measure them or to rule them out.
"""

from __future__ import annotations

import os

LEVERS = (
    "concurrency",
    "dataset_manager",
    "preemption_watcher",
    "controller_in_trial",
    "placement_group_janitor",
    "sync_actor",
    "autoscaling_coordinator",
)
OFF_ENV = "PLATEAU_STARTUP_OFF"


def on(lever: str) -> bool:
    """Whether ``lever`` (one of :data:`LEVERS`) is in use in this process."""
    assert lever in LEVERS, lever
    return lever not in os.environ.get(OFF_ENV, "").split(",")


def train_env() -> dict[str, str]:
    """Environment for the process that builds a TorchTrainer; Train propagates it to its controller."""
    return {} if not on("preemption_watcher") else {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
