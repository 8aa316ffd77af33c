"""Build the bundled ``tiny-gpt2`` preset: a small GPT-2 pretrained on real English text.

A fine-tuning tool needs a demo model that fine-tunes like GPT-2: LoRA can only adapt
what pretraining learned, so random weights make every verdict predetermined. This
script pretrains one on the Python 3.11 documentation sources (PSF licence), which a
fresh Debian machine gets offline from its package registry:

    apt-get install python3.11-doc      # /usr/share/doc/python3.11/html/_sources, 497 files, 11 MB
    python scripts/build_tiny_preset.py  # ~20 minutes on 2 CPU cores

It writes, with ``save_pretrained`` (so the preset loads like a hub id):
a byte-level BPE tokenizer (vocab 2,048) trained on that corpus, a 4-layer, width-128
GPT-2 (n_positions 256, no dropout), and ``README.md``, the model card with the corpus,
its licence, the tokens seen, the final losses, the time taken and the SHA-256 of each
file (``tests/test_preset.py`` checks the committed files against it).

Seeded and single-process: the same torch build and thread count give the same weights.
Not part of CI, which uses the committed files. The fine-tuning corpus
(``sources/``) is never seen here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from jobs.data import tokenize

CORPUS = Path("/usr/share/doc/python3.11/html/_sources")
CORPUS_NAME = "Python 3.11 documentation sources (Debian package python3.11-doc)"
LICENCE = "PSF-2.0 (Python Software Foundation License Version 2, the Python documentation's licence)"
OUT = Path("contract/assets/tiny-gpt2")
EOS = "<|endoftext|>"
SEED = 0
THREADS = 2


def documents(corpus: Path) -> list[str]:
    """One document per section of each file, the reStructuredText rewritten as markdown, paragraphs unwrapped.

    The reST sources are hard-wrapped at 79 columns, so a model pretrained on them never
    sees a line longer than about 20 tokens. Fine-tuning text is mostly markdown with one
    paragraph per line (the bundled corpus is), and on it that model did worse the more
    context it had (4.62 nats with 32 tokens of context, 4.86 with 256), while on the same
    text hard-wrapped at 79 columns more context helped (4.39 against 4.29). Sections as
    documents put document boundaries (EOS) about as often as in fine-tuning data.
    """
    files = sorted(corpus.rglob("*.txt"))
    if not files:
        raise SystemExit(f"no .txt files under {corpus}: apt-get install python3.11-doc (or pass --corpus)")
    return [
        section
        for f in files
        for section in split_sections(unwrap(rst_to_markdown(f.read_text(encoding="utf-8", errors="replace"))))
    ]


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_UNDERLINE = re.compile(r"^([=\-~^*#\"'+`])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\. ([a-z:-]+)::\s*(.*)$")


def rst_to_markdown(text: str) -> str:
    """A light reST to markdown rewrite: headings, inline literals and roles, literal blocks, directives."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).strip()}`", text).replace("``", "`")
    lines, out, levels, i = text.splitlines(), [], [], 0
    while i < len(lines):
        line = lines[i]
        if _UNDERLINE.match(line) and i + 2 < len(lines) and _UNDERLINE.match(lines[i + 2]) and lines[i + 1].strip():
            i += 1  # an overlined title: drop the overline, the underline is handled next
            continue
        if (
            i + 1 < len(lines)
            and line.strip()
            and _UNDERLINE.match(lines[i + 1])
            and len(lines[i + 1].strip()) >= len(line.strip())
        ):
            mark = lines[i + 1].strip()[0]
            levels += [mark] if mark not in levels else []
            out.append("#" * min(levels.index(mark) + 1, 4) + " " + line.strip())
            i += 2
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            indent, name, arg = directive.groups()
            block, i = _indented(lines, i + 1, len(indent))
            if name in ("code-block", "sourcecode", "code", "doctest", "testcode"):
                out += [f"```{arg.strip() or 'python'}", *block, "```"]
            elif name in (
                "note",
                "warning",
                "seealso",
                "important",
                "tip",
                "versionadded",
                "versionchanged",
                "deprecated",
            ):
                out.append(f"**{name.capitalize()}:** {arg}".rstrip())
                out += block
            elif name in (
                "function",
                "method",
                "class",
                "attribute",
                "data",
                "exception",
                "decorator",
                "module",
                "describe",
                "opcode",
                "cmdoption",
                "envvar",
            ):
                out.append(f"`{arg.strip()}`")
                out += block
            continue  # index, toctree, labels, tables of contents, ...: dropped
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            out.append(line.rstrip()[:-2].rstrip() + (":" if line.strip() != "::" else ""))
            while i + 1 < len(lines) and not lines[i + 1].strip():
                i += 1
            block, i = _indented(lines, i + 1, len(line) - len(line.lstrip()))
            out += ["```", *block, "```"] if block else []
            continue
        if line.strip().startswith(".. _") or line.strip() == "..":
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


_BLOCK_START = re.compile(r"^(#{1,6} |```|[-*+] |\d+[.)] |\||>>>|\*\*[A-Z][a-z]+:\*\*)")


def unwrap(text: str) -> str:
    """Join the hard-wrapped lines of each paragraph and list item into one line; code blocks stay as they are."""
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            out.append(line)
            continue
        prose = not fenced and line.strip() and not line.startswith("    ")
        joins = (
            prose
            and out
            and out[-1].strip()
            and not out[-1].startswith(("#", "```", "    "))
            and not _BLOCK_START.match(line.strip())
        )
        if joins:
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


def _indented(lines: list[str], i: int, outer: int) -> tuple[list[str], int]:
    """The block indented deeper than ``outer`` starting at line ``i`` (blank lines inside kept), dedented."""
    block = []
    while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > outer):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
    width = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
    return [b[width:] for b in block], i


def split_sections(text: str) -> list[str]:
    """Split at headings of the top two levels; sections with little text are merged into the next."""
    sections, current = [], []
    for line in text.splitlines():
        if re.match(r"^#{1,2} ", line) and sum(len(c) for c in current) > 400:
            sections.append("\n".join(current).strip())
            current = []
        current.append(line)
    sections.append("\n".join(current).strip())
    return [s for s in sections if s]


def train_tokenizer(docs: list[str], vocab: int) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=256
    )


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """nanoGPT's get_lr: linear warmup, cosine decay to lr/10."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr / 10 + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - lr / 10)


@torch.no_grad()
def mean_loss(
    model: GPT2LMHeadModel, stream: torch.Tensor, block: int, batches: int, generator: torch.Generator
) -> float:
    model.eval()
    losses = []
    for _ in range(batches):
        starts = torch.randint(len(stream) - block - 1, (16,), generator=generator)
        x = torch.stack([stream[s : s + block] for s in starts])
        losses.append(model(input_ids=x, labels=x, use_cache=False).loss.item())
    model.train()
    return sum(losses) / len(losses)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    random.seed(SEED)
    torch.set_num_threads(THREADS)
    started = time.monotonic()

    # 1) corpus: sections as documents, 2% of them held out to measure the pretraining val loss
    docs = documents(args.corpus)
    random.Random(SEED).shuffle(docs)
    n_val = max(1, len(docs) // 50)
    val_docs, train_docs = docs[:n_val], docs[n_val:]
    tokenizer = train_tokenizer(train_docs, vocab=2048)

    def stream(texts: list[str]) -> torch.Tensor:  # documents joined with EOS, as fine-tuning joins them
        return torch.tensor([t for ids in tokenize(texts, tokenizer) for t in ids], dtype=torch.long)

    train, val = stream(train_docs), stream(val_docs)
    print(f"corpus: {len(docs)} documents, {len(train):,} train tokens, {len(val):,} val tokens", flush=True)

    # 2) model: GPT-2 architecture, small enough for 2 CPU cores; no dropout (short pretraining, and
    #    fine-tuning runs then compare without it: tests check that workers and micro-batches agree exactly)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=128,
        n_layer=4,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    generator = torch.Generator().manual_seed(SEED)
    warmup = args.steps // 20

    # 3) train: random windows of the token stream (nanoGPT's get_batch), seeded
    recent: list[float] = []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup)
        starts = torch.randint(len(train) - args.block - 1, (args.batch,), generator=generator)
        x = torch.stack([train[s : s + args.block] for s in starts])
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-50:]
        if step % 100 == 0 or step == args.steps - 1:
            print(
                f"step {step}: train loss {sum(recent) / len(recent):.4f} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )

    # 4) measure and write, with the card last (it hashes the files it describes)
    eval_generator = torch.Generator().manual_seed(SEED + 1)
    train_loss = sum(recent) / len(recent)
    val_loss = mean_loss(model, val, args.block, 20, eval_generator)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    facts = {
        "corpus": CORPUS_NAME,
        "corpus_documents": len(docs),
        "corpus_licence": LICENCE,
        "tokens_seen": args.steps * args.batch * args.block,
        "steps": args.steps,
        "batch": f"{args.batch} x {args.block} tokens",
        "final_train_loss": round(train_loss, 4),
        "final_val_loss": round(val_loss, 4),
        "pretraining_seconds": round(time.monotonic() - started),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "threads": THREADS,
        "seed": SEED,
        "sha256": {p.name: sha256(p) for p in sorted(args.out.iterdir()) if p.name != "README.md"},
    }
    (args.out / "README.md").write_text(model_card(facts))
    print(json.dumps(facts, indent=2))


def model_card(facts: dict) -> str:
    front = json.dumps(facts, indent=2)  # JSON is valid YAML: the card's metadata block
    return f"""---
library_name: transformers
license: psf-2.0
tags: [gpt2, demo, plateau-sweep]
pretraining: {front}
---

# tiny-gpt2: a small GPT-2 pretrained on the Python documentation

The demo model of plateau-sweep. A GPT-2 (4 layers, width 128, 4 heads, 256 positions,
{facts["parameters"]:,} parameters) with a byte-level BPE tokenizer of 2,048 tokens, both
trained by `scripts/build_tiny_preset.py` on the {facts["corpus"]}, rewritten from reStructuredText
to markdown and split into {facts["corpus_documents"]:,} section documents (licence {facts["corpus_licence"]}).

| | |
|---|---|
| tokens seen | {facts["tokens_seen"]:,} ({facts["steps"]} steps of {facts["batch"]}) |
| final train loss | {facts["final_train_loss"]} (mean of the last 50 steps) |
| val loss, 2% of documents held out | {facts["final_val_loss"]} |
| time | {facts["pretraining_seconds"]} s on {facts["threads"]} CPU threads, torch {facts["torch"]} |

It is small enough to fine-tune on 2 CPU cores in minutes, and pretrained enough that
LoRA has something to adapt: the bundled Q&A corpus (never seen in pretraining) is what
the demo sweeps fine-tune it on. It is a demo model, not a useful language model.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("contract/assets/tiny-gpt2")
```
"""


if __name__ == "__main__":
    main()
