"""Reading a spec file safely: any bytes in, a mapping or a :class:`SpecError` out, never a traceback.

A spec is small, hand-written YAML. Anything else is refused with the file's name and
what is wrong: bytes that are not UTF-8 text, an empty or comment-only file, YAML that
would expand hugely through aliases ("billion laughs") or nests too deeply, or a top
level that is not a mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.spec import SpecError

MAX_BYTES = 1_000_000
MAX_NODES = 20_000  # after alias expansion; a real spec has a few hundred
MAX_DEPTH = 30


def read_spec(path: str) -> dict[str, Any]:
    """The mapping in the YAML spec at ``path``. Raises :class:`SpecError` naming the file and the problem."""
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; pass a spec file (specs/*.yaml)") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror}); check the path") from None
    if len(raw) > MAX_BYTES:
        raise SpecError(f"{path}: {len(raw):,} bytes is far too large for a spec (at most {MAX_BYTES:,}); is it the right file?")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise SpecError(f"{path}: looks binary (a NUL byte at offset {nul}); a spec is a YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); save it as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_size(root, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML{at}: {problem}; a spec is a YAML mapping (see specs/smoke.yaml)") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a spec (more than {MAX_DEPTH} levels)") from None
    if data is None:
        raise SpecError(f"{path}: the spec is empty; write `base:` and `options:` (see specs/smoke.yaml), or leave out SPEC to run the default job")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping with base/options, got a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise SpecError(f"{path}: top-level keys must be names, got {bad[0]!r}")
    return data


def _check_size(root: yaml.Node, path: str) -> None:
    """Count nodes as if every alias were expanded, without expanding them; refuse cycles and deep nesting."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int, open_: frozenset[int]) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"{path}: nested too deeply to be a spec (more than {MAX_DEPTH} levels)")
        if id(node) in open_:
            raise SpecError(f"{path}: an alias refers to a node that contains it; a spec cannot be recursive")
        if id(node) in sizes:
            return sizes[id(node)]
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1 + sum(size(child, depth + 1, open_ | {id(node)}) for child in children)
        if total > MAX_NODES:
            raise SpecError(f"{path}: expands to more than {MAX_NODES:,} values (through YAML aliases?); a spec is a few hundred at most")
        sizes[id(node)] = total
        return total

    size(root, 0, frozenset())
