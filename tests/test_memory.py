"""Out of memory: the micro-batch halves, with accumulation making up the difference, on a real failing allocation."""

import json
import subprocess
import sys

import pytest

from jobs.memory import next_smaller

# Run in its own process: RLIMIT_DATA caps that process's heap a few hundred MB above what it
# already uses, so the large micro-batches fail to allocate for real (torch's CPU allocator error).
PROBE = """
import json, resource, sys, torch
from transformers import AutoModelForCausalLM
from jobs.memory import fallback_note
from jobs.train import fit_micro_batch
torch.manual_seed(0)
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
before = [p.detach().clone() for p in model.parameters()]
x = torch.randint(0, 2048, (256, 256))
used = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData")) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (used + 300 * 2**20, used + 300 * 2**20))
micro, tried, _ = fit_micro_batch(model, optimizer, x, 256, 1, False)
note = fallback_note(tried, micro, 0)
unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
print(json.dumps({"micro": micro, "note": note, "unchanged": unchanged, "optimizer_state": len(optimizer.state)}))
"""


def test_a_micro_batch_that_does_not_fit_halves_until_it_does_and_changes_nothing_else():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 1 <= result["micro"] < 256 and 256 % result["micro"] == 0
    assert (
        result["note"]
        == f"micro-batch 256 → {result['micro']} at step 0 after an out-of-memory error; effective batch unchanged"
    )
    assert (
        result["unchanged"] and result["optimizer_state"] == 0
    )  # the tries trained nothing, the optimizer starts fresh


@pytest.mark.parametrize(
    "micro,share,expected", [(16, 16, 8), (12, 12, 6), (6, 12, 3), (3, 12, 1), (1, 12, None), (10, 30, 5), (5, 30, 2)]
)
def test_the_next_micro_batch_divides_the_share(micro, share, expected):
    assert next_smaller(micro, share) == expected
