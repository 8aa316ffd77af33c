"""The sweep's Ray Tune scheduler: it stops a run whose val loss regresses, and prunes an LR search's arms.

Both rules are small pure classes, tested at exact evaluations: :class:`RegressionRule`
(early stopping) and :class:`SuccessiveHalving` (asynchronous successive halving over one
search's arms, as Ray Tune's ``ASHAScheduler`` does, which stops trials and never pauses
them). The scheduler only feeds them results and records why it stopped each run, in
the experiment folder, so a relaunch resumes their state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from contract.report import Report
from orchestrator.folder import EARLY_STOPPING, LR_SEARCH, ExperimentFolder
from orchestrator.spec import EarlyStoppingSpec, Search


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


@dataclass
class SuccessiveHalving:
    """One LR search's arms, pruned at its rungs: asynchronous successive halving (Li et al. 2020, "A System for
    Massively Parallel Hyperparameter Tuning"; Ray Tune's ``ASHAScheduler``).

    An arm that reaches a rung goes on only if its val loss ranks among the best ``ceil(n / eta)``
    of the ``n`` arms that have reached that rung so far, itself included. The first arm at a
    rung always goes on; a later one must beat the ones before it. Nothing waits for the
    others, so no arm is ever paused.
    """

    rungs: list[int]
    eta: int
    seen: dict[int, dict[str, float]] = field(default_factory=dict)  # rung -> arm -> its val loss there

    def observe(self, arm: str, step: int, val_loss: float) -> str | None:
        """Feed one evaluation of ``arm``; returns why it is pruned, or None to continue."""
        if step not in self.rungs:
            return None
        at_rung = self.seen.setdefault(step, {})
        if arm in at_rung:  # a resumed run may report a step again
            return None
        at_rung[arm] = val_loss
        keep = math.ceil(len(at_rung) / self.eta)
        rank = sum(v < val_loss for v in at_rung.values())  # arms strictly better; ties go on together
        if rank < keep:
            return None
        return (
            f"pruned at rung {self.rungs.index(step) + 1} (step {step}): val {val_loss:.4f} ranks {rank + 1} of the "
            f"{len(at_rung)} arms there so far, and only the best {keep} go on (eta {self.eta})"
        )


class SweepScheduler(FIFOScheduler):
    """Runs trials first-in first-out; stops any whose :class:`RegressionRule` fires, and prunes an LR search's arms
    by its :class:`SuccessiveHalving`.

    Every rule's state and every reason is written to the experiment folder after each
    evaluation, so a relaunched sweep (whose Tuner is restored from its initial pickle)
    picks up each run's best and streak, and each rung's arms, where they were.
    """

    def __init__(self, spec: EarlyStoppingSpec, searches: list[Search], folder: ExperimentFolder):
        super().__init__()
        self.spec, self.folder = spec, folder
        self.searches = {s.name: s for s in searches}
        self.arms = {run: s.name for s in searches for run in s.runs}  # run name -> its search
        self.rules: dict[str, RegressionRule] | None = None  # trial_id -> rule, loaded lazily
        self.reasons: dict[str, str] = {}  # run name -> why it was stopped
        self.halving: dict[str, SuccessiveHalving] = {}  # search -> its rule
        self.pruned: dict[str, str] = {}  # run name -> why it was pruned

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        report = Report.from_result(result)
        if report.diverged or report.val_loss is None:
            return TrialScheduler.CONTINUE
        if self.rules is None:
            self._load()
        name, step, val = trial.config["job"]["run_name"], report.step, report.val_loss
        stop = self._regressed(trial.trial_id, name, step, val) or self._pruned(name, step, val)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def _regressed(self, trial_id: str, name: str, step: int, val: float) -> bool:
        if not self.spec.enabled:
            return False
        rule = self.rules.setdefault(
            trial_id, RegressionRule(self.spec.min_delta, self.spec.patience, self.spec.grace_evals)
        )
        reason = rule.observe(step, val)
        if reason is not None:
            self.reasons[name] = reason
            print(f"[{name}] early stop: {reason}", flush=True)
        self._save(EARLY_STOPPING, self.folder.write_early_stopping, self._early_stopping_state())
        return reason is not None

    def _pruned(self, name: str, step: int, val: float) -> bool:
        search = self.arms.get(name)
        if search is None:
            return False
        rule = self.halving.setdefault(
            search, SuccessiveHalving(self.searches[search].rungs, self.searches[search].eta)
        )
        reason = rule.observe(name, step, val)
        if reason is not None:
            self.pruned[name] = reason
            print(f"[{name}] {reason}", flush=True)
        self._save(LR_SEARCH, self.folder.write_lr_search, self._lr_search_state())
        return reason is not None

    def _load(self) -> None:
        state = self.folder.early_stopping()
        self.rules = {k: RegressionRule(**{**v, "seen_steps": set(v["seen_steps"])}) for k, v in state["rules"].items()}
        self.reasons = state["reasons"]
        search = self.folder.lr_search()
        self.halving = {
            name: SuccessiveHalving(
                self.searches[name].rungs,
                self.searches[name].eta,
                {int(step): arms for step, arms in seen.items()},
            )
            for name, seen in search["rungs"].items()
            if name in self.searches
        }
        self.pruned = search["pruned"]

    def _early_stopping_state(self) -> dict:
        return {
            "rules": {k: {**asdict(r), "seen_steps": sorted(r.seen_steps)} for k, r in self.rules.items()},
            "reasons": self.reasons,
        }

    def _lr_search_state(self) -> dict:
        return {
            "rungs": {name: {str(step): arms for step, arms in h.seen.items()} for name, h in self.halving.items()},
            "pruned": self.pruned,
        }

    @staticmethod
    def _save(file: str, write, state: dict) -> None:
        try:
            write(state)
        except OSError as err:  # kept in memory; saved again after the next evaluation
            print(f"warning: {file} not saved yet, storage unavailable: {err}", flush=True)
