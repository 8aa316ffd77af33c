"""TensorBoard event files (``events.out.tfevents.*``): one file, or a run directory. The Trainer's TensorBoard
callback writes ``train/loss``, ``train/learning_rate``, ``train/grad_norm``, ``train/epoch`` and ``eval/loss``;
Lightning's logger writes the names the model logs (``train_loss_step``, ``val_loss``, ``epoch``). Every scalar of a
step becomes one record. Reading them needs the ``tensorboard`` package: ``pip install 'plateau-sweep[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.diagnose.logs.curve import LogError, Record, Rows

PREFIX = "events.out.tfevents"
MAGIC = b"brain.Event:"  # the file_version of an event file's first record, within its first bytes


def is_event_file(path: Path) -> bool:
    if path.name.startswith(PREFIX):
        return True
    try:
        with path.open("rb") as f:
            return MAGIC in f.read(64)
    except OSError:
        return False


def run_dirs(root: Path) -> list[Path]:
    """The directories under ``root`` (itself included) that hold event files, sorted."""
    return sorted({p.parent for p in root.rglob(f"{PREFIX}*") if p.is_file()})


def read(path: Path, run: str | None) -> Rows:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.util import tensor_util
    except ImportError:
        raise LogError(
            f"{path}: reading TensorBoard event files needs the tensorboard package: pip install "
            "'plateau-sweep[tensorboard]'"
        ) from None
    notes = []
    target = path
    if path.is_dir():
        dirs = run_dirs(path)
        if not dirs:
            raise LogError(f"{path}: no TensorBoard event files ({PREFIX}.*) in this directory")
        names = [str(d.relative_to(path)) for d in dirs]
        if run is not None and run not in names:
            raise LogError(f"{path}: --run {run!r}: no such run here; choose from {', '.join(names)}")
        target = dirs[names.index(run)] if run is not None else dirs[0]
        if len(dirs) > 1:
            others = ", ".join(f"`{n}`" for n in names if n != str(target.relative_to(path)))
            notes.append(
                f"{len(dirs)} runs here; read `{target.relative_to(path)}` (pick another with --run): {others}."
            )
    accumulator = EventAccumulator(str(target), size_guidance={"scalars": 0, "tensors": 0})
    try:
        accumulator.Reload()
    except Exception as err:  # a corrupt or truncated file: the library raises its own types
        raise LogError(f"{path}: not a readable TensorBoard event file ({type(err).__name__}: {err})") from None
    by_step: dict[int, dict[str, float]] = {}
    tags = accumulator.Tags()
    for tag in tags.get("scalars", []):
        for event in accumulator.Scalars(tag):
            by_step.setdefault(event.step, {})[tag] = event.value
    for tag in tags.get("tensors", []):  # TF2-style summaries keep scalars as 0-d tensors
        for event in accumulator.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if value.size == 1:
                by_step.setdefault(event.step, {})[tag] = float(value.reshape(()))
    records = [Record(f"step {step}", {"step": step, **values}) for step, values in sorted(by_step.items())]
    return Rows("TensorBoard event file", records, notes)
