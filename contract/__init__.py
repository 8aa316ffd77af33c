"""The contract between driver and worker: what one training run is, and where its files go.

``orchestrator`` (the driver) builds these objects and ``jobs`` (the worker) receives
them; both import this package and neither imports the other's internals. It holds
the run spec and its parts (:mod:`contract.spec`), the storage filesystem
(:mod:`contract.storage`) and the bundled model presets (:mod:`contract.presets`).
"""
