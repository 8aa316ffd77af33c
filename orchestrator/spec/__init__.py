"""What an experiment is: the spec file, its runs, and the plan printed before anything starts.

The public surface: :func:`load` (a spec file, ``--set`` and ``--only`` into an experiment
and its :class:`Plan`), the models, and :class:`SpecError`, whose message names the file,
the option, the field and the fix.
"""

from orchestrator.spec.experiment import (
    EarlyStoppingSpec,
    EvaluationSpec,
    ExperimentSpec,
    LrSearchSpec,
    SpecError,
    TrackingSpec,
    format_validation_error,
    json_schema,
)
from orchestrator.spec.file import DEFAULT_NAME, DEFAULT_SPEC, load, parse_sets, read_spec
from orchestrator.spec.resolve import (
    Plan,
    Run,
    Search,
    deep_merge,
    differences,
    dir_name,
    flatten,
    resolve_runs,
    set_path,
    value_at,
)

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_SPEC",
    "EarlyStoppingSpec",
    "EvaluationSpec",
    "ExperimentSpec",
    "LrSearchSpec",
    "Plan",
    "Run",
    "Search",
    "SpecError",
    "TrackingSpec",
    "deep_merge",
    "differences",
    "dir_name",
    "flatten",
    "format_validation_error",
    "json_schema",
    "load",
    "parse_sets",
    "read_spec",
    "resolve_runs",
    "set_path",
    "value_at",
]
