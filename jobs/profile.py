"""Profiling the job's own steps (``compute.profile``): a trace, and a table of where the time went.

The training loop holds a :class:`StepProfiler`, calls ``step(step)`` after each update
and ``close()`` at its end, and knows nothing else of it. Rank 0 runs ``torch.profiler`` over the steps the
spec names, then writes into ``profile/``:

- ``trace.pt.trace.json.gz``: the Chrome trace (chrome://tracing, Perfetto, TensorBoard's
  profiler plugin);
- ``summary.txt`` and ``summary.json``: the time by category, per step.

The categories are what a step's time goes to: matrix products, attention, the LM head
and its cross-entropy, elementwise kernels and norms, the optimizer (with gradient
clipping), host syncs and data. On a GPU the table adds up kernel time, and says how busy
the GPU was over the wall time of the steps (the rest it waited for the CPU); on the CPU,
operator time. Each kernel is put in a category by the operator that launched it:

1. the scopes the loop marks (``plateau.data``, ``plateau.optimizer``);
2. then by name (:data:`CATEGORIES`), where an operator with an input whose last
   dimension is the vocabulary (the head's product, the logits of a chunked loss) belongs
   to the LM head.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.autograd.profiler_util import FunctionEvent

from contract.spec import ProfileSpec

DATA, OPTIMIZER = "plateau.data", "plateau.optimizer"  # the loop's scopes (record_function names)
LM_HEAD = "lm head + loss"
# First match wins; a name is a kernel's (GPU) or an operator's (both).
CATEGORIES: list[tuple[str, re.Pattern]] = [
    ("host sync", re.compile(r"_local_scalar_dense|aten::item\b|Synchronize|^cudaMemcpy$")),
    (LM_HEAD, re.compile(r"log_?softmax|nll_?loss|cross_?entropy|logsumexp|liger", re.IGNORECASE)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|softmax", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|gemv|nvjet|xmma|cublas|cutlass|aten::(mm|addmm|bmm|baddbmm|matmul|linear)$")),
    ("optimizer", re.compile(r"Optimizer\.|adam|_foreach_|multi_tensor|clip_grad", re.IGNORECASE)),
    # compiled: Triton kernels on a GPU; on the CPU, inductor's fused C++ kernels run as the graph call's own time
    (
        "elementwise",
        re.compile(r"^aten::|elementwise|vectorized|reduce_kernel|triton_|layer_?norm|CompiledFxGraph", re.I),
    ),
]
ORDER = ["matmul", "attention", LM_HEAD, "elementwise", "optimizer", "host sync", "data", "other"]
SCOPES = {DATA: "data", OPTIMIZER: "optimizer"}
_EMBEDDING = re.compile(r"embedding", re.IGNORECASE)
# What counts as one host sync: on a GPU the runtime's waits (an .item() is a copy and a stream sync); on the CPU the
# operator that reads a tensor's value into Python, outside the data and the optimizer scopes, whose reads are of
# tensors that stay on the CPU in a GPU run too (the batch order's permutation, unfused AdamW's step counters)
SYNCS = {True: re.compile(r"Synchronize|^cudaMemcpy$"), False: re.compile(r"_local_scalar_dense")}


def category(name: str, op: FunctionEvent | None, vocab: int | None) -> str:
    """The category of a kernel or operator called ``name``, launched by (or being) the operator ``op``."""
    scope = op
    while scope is not None:
        if scope.name in SCOPES:
            return SCOPES[scope.name]
        scope = scope.cpu_parent
    for label, pattern in CATEGORIES[:2]:  # syncs and the loss, before a size says "LM head" for a sync
        if pattern.search(name) or (op is not None and pattern.search(op.name)):
            return label
    if vocab and op is not None and not _EMBEDDING.search(op.name) and _last_dim_is(op.input_shapes, vocab):
        return LM_HEAD
    for label, pattern in CATEGORIES[2:]:
        if pattern.search(name) or (op is not None and pattern.search(op.name)):
            return label
    return "other"


def _under(event: FunctionEvent, prefix: tuple[str, ...]) -> bool:
    while event is not None:
        if event.name.startswith(prefix):
            return True
        event = event.cpu_parent
    return False


def _last_dim_is(shapes, size: int) -> bool:
    """Whether an input of a (nested) list of shapes has ``size`` as its last dimension: the head's weight in its
    product, the logits and their gradient (the vocabulary is their last dimension; a product of activations has it
    there only when a micro-batch holds exactly as many tokens)."""
    if not isinstance(shapes, (list, tuple)) or not shapes:
        return False
    if all(isinstance(d, int) for d in shapes):
        return shapes[-1] == size
    return any(_last_dim_is(s, size) for s in shapes)


def breakdown(events: list[FunctionEvent], cuda: bool, vocab: int | None) -> tuple[dict[str, float], int]:
    """(microseconds by category, host syncs): kernel time on a GPU (``cuda``), else operators' own CPU time."""
    totals = dict.fromkeys(ORDER, 0.0)
    syncs = 0
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CPU:
            continue
        syncs += bool(SYNCS[cuda].search(e.name)) and (cuda or not _under(e, (DATA, "Optimizer.step#")))
        if cuda:
            for kernel in e.kernels:
                totals[category(kernel.name, e, vocab)] += kernel.duration
        else:
            totals[category(e.name, e, vocab)] += e.self_cpu_time_total
    return totals, syncs


def summarize(
    totals: dict[str, float], syncs: int, steps: int, wall_s: float, device: str, first: int
) -> tuple[str, dict]:
    """The table (text) and its figures (JSON) for ``steps`` steps from step ``first``."""
    busy = sum(totals.values())
    per_step_ms = {k: v / 1e3 / steps for k, v in totals.items()}
    shares = {k: (v / busy if busy else 0.0) for k, v in totals.items()}
    wall_ms = wall_s * 1e3 / steps
    what = "kernel" if device.startswith("cuda") else "operator"
    lines = [
        f"profile of steps {first}-{first + steps - 1} on {device}: {wall_ms:.1f} ms a step (wall), "
        f"{busy / 1e3 / steps:.1f} ms of {what} time a step"
        + (f", the GPU busy {busy / 1e3 / steps / wall_ms:.0%} of the wall time" if what == "kernel" else ""),
        f"{'category':<18}{'ms/step':>10}{'share':>8}",
        *(f"{k:<18}{per_step_ms[k]:>10.2f}{shares[k]:>8.1%}" for k in ORDER),
        f"host syncs: {syncs / steps:g} a step",
    ]
    figures = {
        "first_step": first,
        "steps": steps,
        "device": device,
        "wall_ms_per_step": wall_ms,
        "busy_ms_per_step": busy / 1e3 / steps,
        "ms_per_step": per_step_ms,
        "share": shares,
        "host_syncs_per_step": syncs / steps,
    }
    return "\n".join(lines) + "\n", figures


def one_line(figures: dict) -> str:
    """The summary as the one line the run's console shows."""
    parts = ", ".join(f"{k} {figures['share'][k]:.0%}" for k in ORDER if figures["share"][k] >= 0.005)
    busy = figures["busy_ms_per_step"] / figures["wall_ms_per_step"]
    return (
        f"profile of steps {figures['first_step']}-{figures['first_step'] + figures['steps'] - 1}: "
        f"{figures['wall_ms_per_step']:.1f} ms a step; {parts}"
        + (f"; GPU busy {busy:.0%}" if figures["device"].startswith("cuda") else "")
        + f"; {figures['host_syncs_per_step']:g} host syncs a step"
    )


class StepProfiler:
    """Profiles steps ``spec.start_step`` .. ``+ spec.steps - 1`` of a loop that starts at ``first_step``; the loop
    calls :meth:`step` after each update and :meth:`close` at its end.

    ``publish(folder)`` takes the written ``profile/`` folder (to the run's storage) and returns where it now is;
    ``log`` gets the one-line summary. Off (every call a no-op) without a spec, on ranks other than 0, and when the
    run resumed past the steps.
    """

    def __init__(
        self,
        spec: ProfileSpec | None,
        first_step: int,
        rank: int,
        device: torch.device,
        vocab: int | None,
        publish: Callable[[Path], str],
        log: Callable[[str], None],
    ):
        self.spec, self.device, self.vocab, self.publish, self.log = spec, device, vocab, publish, log
        self.on = spec is not None and rank == 0 and spec.start_step >= first_step
        if spec is not None and rank == 0 and not self.on:
            log(f"profile: not run, the run resumed at step {first_step}, after step {spec.start_step}")
        self._prof: torch.profiler.profile | None = None
        self._t0 = 0.0

        if self.on and spec.start_step == first_step:  # resumed right at the first profiled step
            self._start()

    def close(self) -> None:
        """After the loop: a profile the loop did not finish (it diverged first) is dropped."""
        if self._prof is not None:
            self._prof.stop()
            self._prof = None

    def step(self, step: int) -> None:
        """Call after step ``step``'s update."""
        if not self.on:
            return
        if step == self.spec.start_step - 1:
            self._start()
        elif step == self.spec.start_step + self.spec.steps - 1 and self._prof is not None:
            self._finish()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _start(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._sync()  # note: a CPU-GPU sync point, outside the profiled steps
        self._prof = torch.profiler.profile(activities=activities, record_shapes=True)
        self._prof.start()
        self._t0 = time.perf_counter()

    def _finish(self) -> None:
        self._sync()
        wall = time.perf_counter() - self._t0
        prof, self._prof = self._prof, None
        prof.stop()
        cuda = self.device.type == "cuda"
        device = f"cuda: {torch.cuda.get_device_name(self.device)}" if cuda else "cpu"
        totals, syncs = breakdown(prof.events(), cuda, self.vocab)
        text, figures = summarize(totals, syncs, self.spec.steps, wall, device, self.spec.start_step)
        folder = Path(tempfile.mkdtemp(prefix="plateau-profile-")) / "profile"
        folder.mkdir()
        prof.export_chrome_trace(str(folder / "trace.pt.trace.json.gz"))
        (folder / "summary.txt").write_text(text)
        (folder / "summary.json").write_text(json.dumps(figures, indent=1))
        where = self.publish(folder)
        self.log(f"{one_line(figures)} (trace and table in {where})")
