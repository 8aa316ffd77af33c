"""The sweep on Ray: the only part of the driver that imports Ray.

Every run is a Ray Tune trial driving its own Ray Train ``TorchTrainer``
(:mod:`.trial`: connect, run_sweep); early stopping and an LR search's successive halving are one
Tune scheduler (:mod:`.scheduler`); the experiment folder, the console, TensorBoard and MLflow are
Tune callbacks (:mod:`.callbacks`); every reach into Ray's internals is in :mod:`.ray_workarounds`;
the start-up levers are in :mod:`.startup` (which imports no Ray, so the launcher can ask it).
"""
