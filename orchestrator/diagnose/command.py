"""The current configuration from a training command: ``USE_LORA=True LORA_RANK=8 ... python training.py``.

Reads the environment-variable interface of the training script in the seed document
into a (partial) run spec: only what the command states, so the import is exactly the
values given. A variable this does not know is reported, never dropped silently.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec import deep_merge, set_path

_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def _bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (True/False)")


def _method(value: str) -> dict[str, Any]:
    return {"method": "lora"} if _bool(value) else {"method": "full", "lora": None}


def _set(path: str, convert):
    def apply(value: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        set_path(out, path.split("."), convert(value))
        return out

    return apply


def _interval(value: str) -> dict[str, Any]:
    # The seed's script evaluates where it checkpoints; so do we (checkpoints are ranked by val loss at their step).
    n = int(value)
    return {"run": {"checkpoint_every": n, "eval_every": n}}


# Every variable of the seed's training.py interface, and where it lands in a run spec.
VARIABLES = {
    "TRAINING_DATA_SOURCE": _set("data.path", str),
    "MODEL_TYPE": _set("model.name", str),
    "USE_LORA": _method,
    "LORA_RANK": _set("lora.rank", int),
    "LORA_ALPHA": _set("lora.alpha", float),
    "TRAINING_STEPS": _set("run.steps", int),
    "LEARNING_RATE": _set("optim.lr", float),
    "BLOCK_SIZE": _set("data.block_size", int),
    "BATCH_SIZE": _set("data.batch_size", int),
    "CHECKPOINT_INTERVAL": _interval,
}
# Known, but nothing to set: every run of ours checkpoints.
ACKNOWLEDGED = {"ENABLE_CHECKPOINTS": "every run checkpoints (run.checkpoint_every)"}


class CommandError(ValueError):
    """The command cannot be imported; the message names the variable."""


@dataclass
class Imported:
    config: dict[str, Any]  # a partial run spec: only what the command states
    unknown: list[str] = field(default_factory=list)  # assignments this does not read
    notes: list[str] = field(default_factory=list)


def import_command(command: str) -> Imported:
    """Read ``VAR=value ... program`` into a partial run spec. Raises :class:`CommandError`."""
    try:
        words = shlex.split(command.replace("\\\n", " "))
    except ValueError as err:
        raise CommandError(f"--command: cannot split it into words ({err}); quote it as in a shell") from None
    assignments: dict[str, str] = {}
    for word in words:  # the assignments, up to the program they prefix
        m = _ASSIGNMENT.match(word)
        if m is None:
            break
        assignments[m.group(1)] = m.group(2)
    if not assignments:
        raise CommandError(
            "--command: no VAR=value assignments before the program; expected e.g. 'USE_LORA=True LORA_RANK=8 python "
            "training.py'"
        )
    imported = Imported(config={})
    # method first, so `lora.*` settings of a LoRA run are not read as belonging to a full one
    for name in sorted(assignments, key=lambda n: n != "USE_LORA"):
        value = assignments[name]
        if name in ACKNOWLEDGED:
            imported.notes.append(f"{name}={value}: {ACKNOWLEDGED[name]}")
            continue
        if name not in VARIABLES:
            imported.unknown.append(f"{name}={value}")
            continue
        try:
            imported.config = deep_merge(imported.config, VARIABLES[name](value))
        except ValueError as err:
            raise CommandError(f"--command: {name}={value!r}: {err}") from None
    if imported.config.get("method") == "full" and any(k in assignments for k in ("LORA_RANK", "LORA_ALPHA")):
        imported.notes.append("LORA_RANK/LORA_ALPHA are ignored: USE_LORA=False trains every weight")
        imported.config["lora"] = None
    return imported
