"""The driver side: specs, launch, the Tune sweep, early stopping, storage and the report.

The public surface is the spec models (:mod:`orchestrator.spec`) and the
``python -m orchestrator.launch`` command; everything else is an implementation detail.
"""
