"""Diagnosis: from a training log to findings, ranked causes, prioritised fixes and a runnable sweep.

``python -m orchestrator.diagnose`` reads a log (:mod:`.logs`) and the current
configuration (:mod:`.command`), applies rules with documented thresholds
(:mod:`.rules`), and writes the diagnosis and an experiment spec (:mod:`.advice`).
After every sweep, :mod:`.sweep` says why each run won or lost and writes the next
experiment's spec beside the report.
"""
