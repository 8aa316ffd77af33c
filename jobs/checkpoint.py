"""Checkpoints: self-describing folders that resume a run exactly.

A LoRA checkpoint holds the adapter only (``adapter_model.safetensors`` +
``adapter_config.json``), never the frozen base; a full fine-tune holds the full
``save_pretrained`` folder with its tokenizer. Both add ``README.md`` (a model
card: which run, which step, its losses), ``training_state.pt`` (optimizer,
step, RNG; the data position and the learning rate are pure functions of the
step), ``spec.json`` (the resolved spec that produced it) and, written last,
``manifest.json`` listing every file with its size. A folder whose manifest is
missing or disagrees with its files is incomplete and never resumed from. ``metrics.json``
is the run's report of that evaluation (:class:`contract.report.Report`).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contract.layout import step_of
from contract.report import Report
from contract.spec import JobConfig

MANIFEST = "manifest.json"
STATE = "training_state.pt"
METRICS = "metrics.json"


class IncompleteCheckpoint(RuntimeError):
    pass


@dataclass
class Snapshot:
    """A checkpoint's tensors copied to host memory: training may go on while it is written."""

    step: int
    weights: dict[str, torch.Tensor]  # LoRA: the adapter's trainable weights only; full: every weight
    optimizer: dict[str, Any]
    rng: dict[str, Any]


def _to_host(value: Any, copies: dict[tuple, torch.Tensor]) -> Any:
    """``value`` with every tensor copied to the CPU; tensors that share storage (GPT-2's tied
    embedding and head) share their copy, so save_pretrained still sees them as tied."""
    if isinstance(value, torch.Tensor):
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.dtype)
        if value.numel() == 0 or key not in copies:
            copies[key] = value.detach().to("cpu", copy=True)
        return copies[key]
    if isinstance(value, dict):
        return {k: _to_host(v, copies) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v, copies) for v in value)
    return value


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, adapter_only: bool) -> Snapshot:
    """Copy what a checkpoint of ``model`` after ``step`` steps needs to host memory (a memcpy, no disk)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    weights = {k: v for k, v in model.state_dict().items() if not adapter_only or k in trainable}
    return Snapshot(
        step=step,
        weights=_to_host(weights, {}),
        optimizer=_to_host(optimizer.state_dict(), {}),
        rng={
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
    )


def write(
    directory: str | Path,
    snap: Snapshot,
    model: torch.nn.Module,
    job: JobConfig,
    report: Report,
    tokenizer=None,
) -> None:
    """Write a complete checkpoint of ``snap`` into ``directory``; ``model`` gives only its config and structure."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Written first: peft then only adds its tags to this card. Without one it renders
    # huggingface_hub's full Jinja template, which cost 25x the rest of an adapter save.
    (directory / "README.md").write_text(model_card(job, report))
    model.save_pretrained(directory, state_dict=snap.weights)  # peft: adapter only; transformers: full weights
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    torch.save({"step": snap.step, "optimizer": snap.optimizer, "rng": snap.rng}, directory / STATE)
    (directory / "spec.json").write_text(job.model_dump_json(indent=2))
    (directory / METRICS).write_text(report.model_dump_json(indent=2))
    files = {p.relative_to(directory).as_posix(): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}
    (directory / MANIFEST).write_text(json.dumps({"step": snap.step, "files": files}, indent=2))


def save(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    job: JobConfig,
    report: Report,
) -> None:
    """Write a complete checkpoint of ``model`` at ``report``'s step into ``directory``, now (tests, benchmarks)."""
    write(directory, snapshot(model, optimizer, report.step, job.spec.method == "lora"), model, job, report)


class Checkpointer:
    """Checkpoints that do not stall training: a snapshot to host memory, then the write and
    the upload in Ray Train's background upload thread (``checkpoint_upload_mode=ASYNC``).

    At most one checkpoint is in flight: when the next one comes before the last upload
    has finished, training waits for it, so no checkpoint is skipped and host memory
    holds one snapshot at most. Ray registers a checkpoint only once its upload is
    done, and its manifest is written last, so resume never sees a partial one.
    """

    def __init__(self, model: torch.nn.Module, job: JobConfig, persist: Callable[[Any, str], Any], tokenizer=None):
        self.model, self.job, self.persist, self.tokenizer = model, job, persist, tokenizer
        self.idle = threading.Event()
        self.idle.set()

    def prepare(self, optimizer: torch.optim.Optimizer, report: Report) -> tuple[Any, Callable]:
        """Snapshot now, at ``report``'s step; returns the ray.train.Checkpoint to report and the upload function that
        writes and uploads it."""
        from ray.train import Checkpoint

        self.idle.wait()  # the previous checkpoint is uploaded (or failed, which Ray raises in this thread)
        snap = snapshot(self.model, optimizer, report.step, self.job.spec.method == "lora")
        directory = tempfile.mkdtemp(prefix=f"ckpt-{report.step:06d}-")  # Ray deletes it after the upload
        self.idle.clear()

        def upload(checkpoint: Checkpoint, dir_name: str) -> Checkpoint:
            try:
                write(directory, snap, self.model, self.job, report, self.tokenizer)
                return self.persist(checkpoint, dir_name)
            finally:
                self.idle.set()

        return Checkpoint.from_directory(directory), upload

    def wait(self) -> None:
        """Block until the last checkpoint's upload is done (before the run ends)."""
        self.idle.wait()


def model_card(job: JobConfig, report: Report) -> str:
    """A Hugging Face model card (README.md) saying what this checkpoint is and how to load it."""
    spec, step = job.spec, report.step
    library = "peft" if spec.method == "lora" else "transformers"
    load = (
        "base = AutoModelForCausalLM.from_pretrained(...)  # the base model in spec.json\n"
        'model = PeftModel.from_pretrained(base, "<this folder>")'
        if spec.method == "lora"
        else 'model = AutoModelForCausalLM.from_pretrained("<this folder>")'
    )
    losses = ", ".join(
        f"{name} {loss:.4f}"
        for name, loss in (("val loss", report.val_loss), ("train loss", report.train_loss))
        if loss is not None
    )
    return (
        f"---\nlibrary_name: {library}\ntags:\n- {spec.method}\n- "
        f"{json.dumps(job.experiment)}\n---\n\n"  # a JSON string is valid YAML
        f"# {job.experiment} / {job.run_name}, step {step}\n\n"
        f"A {'LoRA' if spec.method == 'lora' else 'full'} fine-tune of `{spec.model.name}`, option `{job.option}` of "
        "experiment "
        f"`{job.experiment}`, after step {step} of {spec.run.steps}{': ' + losses if losses else ''}.\n\n"
        f"`spec.json` is the resolved spec that produced it; `metrics.json` has every metric at this step.\n\n"
        f"```python\n{load}\n```\n"
    )


def verify(directory: str | Path) -> int:
    """The checkpoint's step if every file in its manifest is present with the right size; raises otherwise."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise IncompleteCheckpoint(f"{directory}: no {MANIFEST}; the checkpoint was not completely written")
    listed = json.loads(manifest.read_text())
    for name, size in listed["files"].items():
        file = directory / name
        if not file.is_file() or file.stat().st_size != size:
            raise IncompleteCheckpoint(f"{directory}: {name} is missing or truncated")
    return int(listed["step"])


def read_report(directory: str | Path) -> Report:
    """The report of the checkpoint's evaluation."""
    return Report.model_validate_json((Path(directory) / METRICS).read_text())


def restore_state(directory: str | Path, optimizer: torch.optim.Optimizer) -> int:
    """Load optimizer and RNG state; returns the step to continue from."""
    state = torch.load(Path(directory) / STATE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


@contextlib.contextmanager
def newest_complete(latest, skipped: Callable[[IncompleteCheckpoint], None]) -> Iterator[str | None]:
    """The local folder of the newest checkpoint, from ``latest`` back, that verifies; None if none does.

    ``skipped`` hears about each incomplete one passed over.
    """
    for checkpoint in candidates(latest):
        with checkpoint.as_directory() as directory:
            try:
                verify(directory)
            except IncompleteCheckpoint as err:
                skipped(err)
                continue
            yield directory
            return
    yield None


def candidates(checkpoint) -> list:
    """``checkpoint`` (a ray.train.Checkpoint, the latest Ray registered) then its older siblings, newest first.

    Resume tries them in this order and takes the first that verifies, so a
    corrupt latest checkpoint costs one more interval instead of the run.
    """
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    fs = checkpoint.filesystem
    parent, name = posixpath.split(checkpoint.path)
    latest = step_of(name)
    older = [
        (step, info.path)
        for info in fs.get_file_info(pafs.FileSelector(parent))
        if info.type == pafs.FileType.Directory and (step := step_of(info.base_name)) is not None and step < latest
    ]
    siblings = sorted(older, reverse=True)  # by step, never by name
    return [checkpoint] + [Checkpoint(path, filesystem=fs) for _, path in siblings]
