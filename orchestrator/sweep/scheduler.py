"""Early stopping: a Ray Tune scheduler that stops a run whose val loss regresses.

The rule is a small pure class so it can be tested at exact evaluations; the
scheduler only feeds it results and records why it stopped each run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.folder import EARLY_STOPPING, ExperimentFolder
from orchestrator.spec import EarlyStoppingSpec


@dataclass
class RegressionRule:
    """Stop when val loss exceeds the run's own best by more than ``min_delta`` for ``patience``
    evaluations in a row, never during the first ``grace_evals`` evaluations."""

    min_delta: float
    patience: int
    grace_evals: int
    best: float = math.inf
    best_step: int = 0
    evals: int = 0
    streak: int = 0
    seen_steps: set[int] = field(default_factory=set)

    def observe(self, step: int, val_loss: float) -> str | None:
        """Feed one evaluation; returns the reason to stop, or None to continue."""
        if step in self.seen_steps:  # a resumed run may report a step again
            return None
        self.seen_steps.add(step)
        self.evals += 1
        if val_loss < self.best:
            self.best, self.best_step, self.streak = val_loss, step, 0
            return None
        if self.evals <= self.grace_evals:
            return None
        if val_loss > self.best + self.min_delta:
            self.streak += 1
        else:
            self.streak = 0
        if self.streak < self.patience:
            return None
        rise = (val_loss - self.best) / self.best
        return (
            f"val {val_loss:.2f} at step {step} > best {self.best:.2f} at step {self.best_step} "
            f"({rise:+.1%}, patience {self.patience})"
        )


class RegressionStopper(FIFOScheduler):
    """Runs trials first-in first-out and stops any whose :class:`RegressionRule` fires.

    Every rule and stop reason is written to the experiment folder after each evaluation,
    so a relaunched sweep (whose Tuner is restored from its initial pickle) picks up each
    run's best and streak where they were.
    """

    def __init__(self, spec: EarlyStoppingSpec, folder: ExperimentFolder):
        super().__init__()
        self.spec, self.folder = spec, folder
        self.rules: dict[str, RegressionRule] | None = None  # trial_id -> rule, loaded lazily
        self.reasons: dict[str, str] = {}  # run name -> why it was stopped

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if not self.spec.enabled or result.get("diverged") or not isinstance(result.get("val_loss"), float):
            return TrialScheduler.CONTINUE
        if self.rules is None:
            self._load()
        rule = self.rules.setdefault(
            trial.trial_id, RegressionRule(self.spec.min_delta, self.spec.patience, self.spec.grace_evals)
        )
        reason = rule.observe(int(result["step"]), result["val_loss"])
        name = trial.config["job"]["run_name"]
        if reason is not None:
            self.reasons[name] = reason
            print(f"[{name}] early stop: {reason}", flush=True)
        self._save()
        return TrialScheduler.CONTINUE if reason is None else TrialScheduler.STOP

    def _load(self) -> None:
        state = self.folder.early_stopping()
        self.rules = {k: RegressionRule(**{**v, "seen_steps": set(v["seen_steps"])}) for k, v in state["rules"].items()}
        self.reasons = state["reasons"]

    def _save(self) -> None:
        state = {
            "rules": {k: {**asdict(r), "seen_steps": sorted(r.seen_steps)} for k, r in self.rules.items()},
            "reasons": self.reasons,
        }
        try:
            self.folder.write_early_stopping(state)
        except OSError as err:  # kept in memory; saved again after the next evaluation
            print(f"warning: {EARLY_STOPPING} not saved yet, storage unavailable: {err}", flush=True)
