"""What one training run is: the spec a worker receives, validated before anything starts.

Every model forbids unknown keys; defaults live in the field declarations; a field
that does not apply holds ``None`` (``lora`` of a full fine-tune, ``floor_ratio`` of a
constant schedule), so a dumped spec always loads back. Cross-field checks raise
errors that name the field and the fix; they never rewrite the user's values.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.presets import n_positions

DEFAULT_DATA = "sources/training_data_final_merged.md"


class Strict(BaseModel):
    # inf and nan are never meaningful settings (YAML reads 1e400 as inf)
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class ModelSpec(Strict):
    name: str = Field(
        "tiny-gpt2",
        description="Hugging Face hub id (`gpt2`), a local folder written by `save_pretrained`, "
        "an `s3://bucket/prefix` holding such a folder, or the bundled preset `tiny-gpt2` "
        "(a 4-layer GPT-2 pretrained on the Python documentation).",
    )
    init: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="`pretrained` loads the weights; `random` builds the same architecture from "
        "its config with fresh weights (tests, benchmarks).",
    )
    tokenizer: str | None = Field(
        None, description="Where the tokenizer comes from, in the same forms as `name`; null uses `name`'s own."
    )

    @property
    def tokenizer_source(self) -> str:
        return self.tokenizer or self.name


class LoraSpec(Strict):
    rank: int = Field(8, gt=0, description="LoRA rank r. Trainable parameters grow linearly with it.")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        ["c_attn"],
        min_length=1,
        description="Module names to adapt. GPT-2's fused QKV projection is `c_attn`; "
        "`c_proj`, `c_fc` add the attention output and the MLP.",
    )


class DataSpec(Strict):
    path: str = Field(
        DEFAULT_DATA,
        description="Markdown Q&A, plain text or JSONL (`text`, or `question`/`answer`), "
        "a local path (relative to the working directory) or an `s3://` URI.",
    )
    format: Literal["auto", "markdown", "text", "jsonl"] = Field(
        "auto", description="`auto` picks by file extension: .md, .jsonl, anything else is text."
    )
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of documents held out for validation.")
    split_seed: int = Field(0, description="Salts the document hash that assigns each document to train or val.")
    block_size: int = Field(128, gt=0, description="Tokens per training sequence; at most the model's n_positions.")
    batch_size: int = Field(
        16,
        gt=0,
        description="Sequences per optimizer step across all workers: the effective batch. "
        "It is split over `resources.num_workers` and, with `compute.micro_batch_size`, over accumulation steps.",
    )


class ScheduleSpec(Strict):
    kind: Literal["constant", "warmup_constant", "warmup_linear"] = Field(
        "constant",
        description="`constant`; `warmup_constant`: linear warmup then constant; "
        "`warmup_linear`: linear warmup then linear decay to `floor_ratio` x lr at the last step.",
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Warmup length as a share of `run.steps`; 0 for `constant`."
    )
    floor_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="`warmup_linear`: final lr as a share of `optim.lr` (e.g. 0.1); null for the other kinds.",
    )

    @model_validator(mode="after")
    def _fields_match_kind(self) -> ScheduleSpec:
        if self.kind == "constant" and self.warmup_ratio > 0:
            raise ValueError("warmup_ratio: set, but kind is 'constant'; use kind: warmup_constant or warmup_linear")
        if self.kind != "constant" and self.warmup_ratio == 0:
            raise ValueError(f"warmup_ratio: kind {self.kind!r} needs warmup_ratio > 0 (e.g. 0.05 for 5% warmup)")
        if self.kind == "warmup_linear" and self.floor_ratio is None:
            raise ValueError(
                "floor_ratio: kind 'warmup_linear' needs one, the final lr as a share of the peak (e.g. 0.1)"
            )
        if self.kind != "warmup_linear" and self.floor_ratio is not None:
            raise ValueError(f"floor_ratio: only applies to kind: warmup_linear, not {self.kind!r}; remove it")
        return self


class OptimSpec(Strict):
    lr: float = Field(1e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this `max_norm`; null disables clipping."
    )
    schedule: ScheduleSpec = ScheduleSpec()


class RunSpec(Strict):
    steps: int = Field(200, gt=0, description="Optimizer steps.")
    eval_every: int = Field(
        50,
        gt=0,
        description="Evaluate (and report to Ray) every N steps and at the last step; step 0 is always evaluated.",
    )
    checkpoint_every: int = Field(
        100, gt=0, description="Checkpoint every N steps (a multiple of eval_every) and at the end."
    )
    keep_checkpoints: int = Field(
        2, gt=0, description="Best checkpoints kept by val loss (the latest is always kept for resume)."
    )
    max_failures: int = Field(
        2, ge=0, description="Worker failures Ray Train recovers from (restarting from the latest checkpoint)."
    )
    seed: int = Field(0, description="Seeds init, dropout and data order.")


# A torch.compile of GPT-2 takes about 30 s per run, and a compiled step at the seed's shape (block 128, batch 16) is
# 1.7-2.1x faster than an uncompiled one of ~25 ms on an H200 (docs/BENCHMARKS.md §12): about 13 ms saved a step, so
# the compile pays for itself after ~2,300 steps. `compute.compile: auto` turns it on for GPU runs at least this long.
COMPILE_PAYS_AFTER_STEPS = 2_500


class ProfileSpec(Strict):
    start_step: int = Field(
        10,
        ge=1,
        description="The first step profiled, counted from 0 like `run.steps`. Step 0 runs the memory probe, and a "
        "compiled run compiles in its first steps: start after them.",
    )
    steps: int = Field(
        3, gt=0, le=50, description="Steps profiled. A GPU trace holds thousands of kernels a step: keep it short."
    )


class ComputeSpec(Strict):
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="`bf16` runs forward and loss under bf16 autocast (weights and optimizer stay fp32)."
    )
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa",
        description="Attention kernel: PyTorch scaled_dot_product_attention (flash/memory-efficient on GPU) "
        "or the eager reference.",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the model together with its loss (first steps are slower while it compiles). "
        f"`auto`: on for a run on a GPU of at least {COMPILE_PAYS_AFTER_STEPS:,} steps, where the ~30 s it takes "
        "pays back (docs/BENCHMARKS.md §12); off on the CPU.",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "default",
        description="torch.compile's mode when compiling. `reduce-overhead` replays each step's kernels as CUDA "
        "graphs: one launch instead of hundreds, for small steps that leave the GPU waiting on the CPU (the seed's "
        "block 128, batch 16). It needs `compile` on.",
    )
    loss: Literal["model", "chunked", "liger"] = Field(
        "model",
        description="How the LM head and its cross-entropy are computed. `model`: the model's own, full logits "
        "(50,257 a token for GPT-2: 3.3 GB in fp32 at block 1024, batch 16, and as much for their gradient). "
        "`chunked`: the same loss a chunk of tokens at a time, each chunk's gradient computed in the forward pass, "
        "so the full logits never exist (plain PyTorch, any device, compiled with the model). `liger`: liger-kernel's "
        "fused Triton kernel for the same (a GPU only; the `gpu` extra: pip install 'plateau-sweep[gpu]').",
    )
    micro_batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        "auto",
        description="Sequences per forward/backward on one worker; gradients accumulate until the worker's share "
        "of `data.batch_size` is done. `auto`: the largest micro-batch, from the whole share down, whose step fits "
        "in this worker's memory; on a GPU shared by fractions (`resources.gpus_per_worker` < 1) that is its "
        "fraction of the GPU's memory, so runs sharing a GPU cannot crowd each other out. null: the whole share, "
        "against the whole GPU. A number: that size. Changes memory, not results (exactly so with dropout off; "
        "dropout masks depend on the split); halved automatically if it does not fit.",
    )
    profile: ProfileSpec | None = Field(
        None,
        description="Profile these steps of the run with torch.profiler on rank 0: a Chrome/TensorBoard trace and a "
        "table of where the time went (matmuls, attention, LM head and cross-entropy, elementwise, optimizer, "
        "host syncs, data) in the run's folder, `profile/`. null: no profiling.",
    )


class Levers(Strict):
    """How a run computes, with every `auto` of its spec's `compute` resolved, and why each lever is as it is."""

    compile: bool
    compile_mode: str
    loss: str
    memory_share: float | None = Field(description="The share of the GPU's memory the run may use; None: all of it.")
    reasons: dict[str, str]

    def describe(self) -> list[str]:
        """One line per lever: its setting and why (the dry run prints them)."""
        compiled = f"on ({self.compile_mode})" if self.compile else "off"
        memory = "the whole device" if self.memory_share is None else f"{self.memory_share:g} of the GPU's memory"
        return [
            f"compile {compiled}: {self.reasons['compile']}",
            f"loss {self.loss}: {self.reasons['loss']}",
            f"micro-batch sized to {memory}: {self.reasons['memory']}",
        ]


class ResourcesSpec(Strict):
    num_workers: int = Field(
        1, gt=0, description="Data-parallel workers (DDP through TorchTrainer); they split `data.batch_size`."
    )
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker; fractions let several runs share a GPU.")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per worker (Ray logical resources).")
    custom: dict[str, float] = Field(
        {},
        description="Custom Ray resources per worker, to pick the nodes a run may use "
        "(`{accelerator_type:A10G: 0.001}`, or a resource your nodes declare with `ray start --resources`). "
        "Dropped in local mode.",
    )

    @model_validator(mode="after")
    def _custom_is_custom(self) -> ResourcesSpec:
        for name, amount in self.custom.items():
            if name.upper() in ("CPU", "GPU", "MEMORY"):
                raise ValueError(
                    f"resources.custom: {name!r} has its own field; use cpus_per_worker or gpus_per_worker"
                )
            if amount <= 0:
                raise ValueError(
                    f"resources.custom: {name!r} asks for {amount}; ask for a positive amount or remove it"
                )
        return self


class TrainSpec(Strict):
    """Everything one training run needs. This is what a worker receives."""

    method: Literal["lora", "full"] = Field(
        "lora", description="`lora` trains adapters only; `full` trains every weight."
    )
    model: ModelSpec = ModelSpec()
    lora: LoraSpec | None = Field(LoraSpec(), description="LoRA settings for `method: lora`; null for `method: full`.")
    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()
    run: RunSpec = RunSpec()
    compute: ComputeSpec = ComputeSpec()
    resources: ResourcesSpec = ResourcesSpec()

    @property
    def warmup_steps(self) -> int:
        return int(self.optim.schedule.warmup_ratio * self.run.steps)

    @property
    def worker_batch(self) -> int:
        """Sequences per optimizer step on each worker."""
        return self.data.batch_size // self.resources.num_workers

    @property
    def micro_batch(self) -> int:
        """The micro-batch the memory probe tries first (it may shrink it)."""
        micro = self.compute.micro_batch_size
        return micro if isinstance(micro, int) else self.worker_batch

    @property
    def on_gpu(self) -> bool:
        return self.resources.gpus_per_worker > 0

    def levers(self) -> Levers:
        """The `compute` levers this run uses, `auto` resolved by where it runs (a GPU or not) and how long."""
        c, steps = self.compute, self.run.steps
        if c.compile != "auto":
            compile_, why = c.compile, "set in the spec"
        elif not self.on_gpu:
            compile_, why = False, "auto, and the run is on the CPU"
        elif steps >= COMPILE_PAYS_AFTER_STEPS:
            compile_, why = True, f"auto: a GPU run of {steps:,} steps, where the ~30 s compile pays back"
        else:
            compile_, why = False, f"auto: {steps:,} steps on a GPU are too few for the ~30 s compile to pay back"
        loss_why = {
            "model": "the model's own cross-entropy over full logits",
            "chunked": "a chunk of tokens at a time, never the full logits",
            "liger": "liger-kernel's fused Triton kernel",
        }[c.loss]
        share = self.resources.gpus_per_worker
        if c.micro_batch_size != "auto":
            size = "null" if c.micro_batch_size is None else c.micro_batch_size
            memory, memory_why = None, f"micro_batch_size {size} set in the spec"
        elif 0 < share < 1:
            memory, memory_why = share, f"auto: the run's share of its GPU (resources.gpus_per_worker {share:g})"
        else:
            memory, memory_why = None, "auto: the run has its device to itself"
        return Levers(
            compile=compile_,
            compile_mode=c.compile_mode,
            loss=c.loss,
            memory_share=memory,
            reasons={"compile": why, "loss": loss_why, "memory": memory_why},
        )

    @property
    def accumulation_steps(self) -> int:
        return self.worker_batch // self.micro_batch

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        if self.method == "full" and self.lora is not None:
            raise ValueError("lora: LoRA settings given but method is 'full'; set `lora: null` or use method: lora")
        if self.method == "lora" and self.lora is None:
            raise ValueError("lora: method 'lora' needs LoRA settings; remove `lora: null` or use method: full")
        limit = n_positions(self.model.name)
        if limit is not None and self.data.block_size > limit:
            raise ValueError(
                f"data.block_size: {self.data.block_size} exceeds the model's n_positions {limit} ({self.model.name}); "
                f"use at most {limit}"
            )
        run = self.run
        for field in ("eval_every", "checkpoint_every"):
            if getattr(run, field) > run.steps:
                raise ValueError(
                    f"run.{field}: {getattr(run, field)} is more than run.steps {run.steps}; use at most {run.steps}"
                )
        if run.checkpoint_every % run.eval_every:
            raise ValueError(
                f"run.checkpoint_every: {run.checkpoint_every} is not a multiple of run.eval_every {run.eval_every}; "
                "checkpoints are ranked by the val loss measured at the same step"
            )
        if self.optim.schedule.kind != "constant" and not 0 < self.warmup_steps < run.steps:
            raise ValueError(
                f"optim.schedule.warmup_ratio: {self.optim.schedule.warmup_ratio} of {run.steps} steps gives "
                f"{self.warmup_steps} warmup steps; it must be at least 1 and shorter than the run"
            )
        self._check_batch_split()
        self._check_compute()
        return self

    def _check_compute(self) -> None:
        c = self.compute
        if c.compile is False and c.compile_mode != "default":
            raise ValueError(
                f"compute.compile_mode: {c.compile_mode!r} is a mode of torch.compile, but compute.compile is false; "
                "set compile: true (or auto) or remove compile_mode"
            )
        if c.loss == "liger" and not self.on_gpu:
            raise ValueError(
                "compute.loss: 'liger' runs Triton kernels on a GPU only, and resources.gpus_per_worker is 0; "
                "use loss: chunked (the same algorithm in plain PyTorch) or give the run a GPU"
            )
        if c.profile is not None and c.profile.start_step + c.profile.steps > self.run.steps:
            last = c.profile.start_step + c.profile.steps - 1
            raise ValueError(
                f"compute.profile: steps {c.profile.start_step}-{last} go past the run's last step "
                f"{self.run.steps - 1}; start earlier or profile fewer steps"
            )

    def _check_batch_split(self) -> None:
        batch, workers = self.data.batch_size, self.resources.num_workers
        if batch % workers:
            lower, upper = batch // workers * workers, (batch // workers + 1) * workers
            raise ValueError(
                f"data.batch_size: {batch} does not split evenly over resources.num_workers {workers}; "
                f"use a multiple of {workers} ({', '.join(str(b) for b in (lower, upper) if b)}) or another number of "
                "workers"
            )
        micro = self.compute.micro_batch_size
        if isinstance(micro, int) and self.worker_batch % micro:
            share = self.worker_batch
            fits = (
                f"one of {[d for d in range(1, share + 1) if share % d == 0]}"
                if share <= 1024
                else f"a divisor of {share}"
            )
            raise ValueError(
                f"compute.micro_batch_size: {micro} does not divide each worker's share of the batch "
                f"({batch} / {workers} worker(s) = {share}); use {fits}"
            )


class StorageSpec(Strict):
    path: str = Field("runs", description="Where checkpoints and results go: a local folder or `s3://bucket/prefix`.")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, SeaweedFS, Ceph, R2); null is AWS."
    )
    region: str | None = Field(None, description="S3 region; null uses the AWS chain's default.")
    shared: bool = Field(
        False,
        description="A local `path` that every node of the cluster mounts (NFS, a shared volume). Without it a local "
        "path is refused on a multi-node cluster, where each node would write to its own disk.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> StorageSpec:
        if self.shared and self.path.startswith("s3://"):
            raise ValueError(
                "storage.shared: every node reaches an s3:// path already; remove it (it is for NFS mounts)"
            )
        if not self.path.startswith("s3://") and (self.endpoint_url or self.region):
            raise ValueError(
                f"storage.endpoint_url/region are set but storage.path {self.path!r} is local; use an "
                "s3://bucket/prefix path or remove them"
            )
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError(
                f"storage.endpoint_url {self.endpoint_url!r} has no scheme; write http://{self.endpoint_url} or https://{self.endpoint_url}"
            )
        return self


class EvalProtocol(Strict):
    """How every run of an experiment is scored: the same target tokens with the same context.

    The val documents are joined (EOS between them) into one stream and scored with a
    strided sliding window, as in Hugging Face's "Perplexity of fixed-length models":
    windows of ``context`` tokens, ``stride`` apart, each scoring only the tokens no
    earlier window scored. So every target token is scored once, with between
    ``context - stride`` and ``context`` tokens before it, whatever block size a run
    trains at.
    """

    context: int = Field(gt=1, description="Tokens per evaluation window.")
    stride: int = Field(gt=0, description="Tokens between window starts; each window scores its last `stride` tokens.")
    max_documents: int | None = Field(None, gt=0, description="Score only the first N val documents; null scores all.")
    selection_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Share of val documents used to choose each run's best evaluation (early stopping, checkpoint "
        "ranking); the rest score it. null: all documents score, and the final evaluation is compared.",
    )

    @model_validator(mode="after")
    def _stride_fits(self) -> EvalProtocol:
        if self.selection_fraction is not None and self.max_documents is not None and self.max_documents < 2:
            raise ValueError(
                "evaluation.selection_fraction needs at least 2 val documents, one to choose and one to score; raise "
                "max_documents"
            )
        if self.stride >= self.context:
            raise ValueError(
                f"evaluation.stride: {self.stride} is not less than evaluation.context {self.context}; the first token "
                f"of every window would go unscored. Use at most {self.context - 1} (half the context is usual)"
            )
        return self

    def share(self, n_docs: int, role: Literal["choose", "score"]) -> list[bool]:
        """Which of ``n_docs`` val documents ``choose`` each run's best evaluation, and which ``score`` it.

        Without a selection share every document does both (and the final evaluation is compared).
        With one, the shares are evenly interleaved and disjoint: choosing and scoring never use the same tokens.
        """
        if self.selection_fraction is None:
            return [True] * n_docs
        k = min(max(round(n_docs * self.selection_fraction), 1), n_docs - 1)  # at least one document on each side
        choose = [int((i + 1) * k / n_docs) > int(i * k / n_docs) for i in range(n_docs)]
        return choose if role == "choose" else [not c for c in choose]

    def mean_nll(self, doc_nll: list[float], doc_tokens: list[int], role: Literal["choose", "score"]) -> float:
        """Token-weighted mean NLL over the documents of ``role``: the loss a run is ranked (choose) or compared
        (score) by."""
        keep = self.share(len(doc_tokens), role)
        tokens = sum(t for t, k in zip(doc_tokens, keep) if k)
        return sum(n for n, k in zip(doc_nll, keep) if k) / tokens


class JobConfig(Strict):
    """What one Ray Train run receives (as a dict at the Ray boundary, re-validated first thing)."""

    experiment: str
    run_name: str
    option: str
    spec: TrainSpec
    storage: StorageSpec
    evaluation: EvalProtocol
