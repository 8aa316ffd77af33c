"""The driver: the experiment spec, launch, the Tune sweep, early stopping, the verdict, the report and diagnosis.

The public surface is the spec models (:mod:`orchestrator.spec`, with the run-level parts
in :mod:`contract.spec`), ``python -m orchestrator.launch`` and ``python -m
orchestrator.diagnose``; everything else is an implementation detail. Nothing in
``jobs`` (the worker) imports from here.
"""
