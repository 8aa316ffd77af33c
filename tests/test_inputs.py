"""Bad input never starts anything: the launcher exits 2 naming the file and what is wrong, never with a traceback."""

import random
from pathlib import Path

import pytest
import yaml

from orchestrator.launch import main
from tests.test_data import BAD_DATA

BAD_SPECS = {
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00\x00", "looks binary (a NUL byte at offset 7)"),
    "not utf-8": (
        "name: caf\u00e9\n".encode("latin-1"),
        "not UTF-8: byte 0xe9 at offset 9, line 1 (invalid continuation byte); save it as UTF-8",
    ),
    "empty": (b"", "the spec is empty; write `base:` and `options:`"),
    "only comments": (b"# a spec\n# to be written\n", "the spec is empty"),
    "alias bomb": (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        b"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
        "expands to more than 20,000 values",
    ),
    "recursive alias": (b"base: &a {options: *a}\n", "an alias refers to a node that contains it"),
    "deeply nested": (b"base: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply to be a spec"),
    "a list at the top": (b"- a\n- b\n", "a spec must be a YAML mapping with base/options, got a list"),
    "a number key": (b"1: 2\n", "top-level keys must be names, got 1"),
    "infinite lr": (b"base: {optim: {lr: 1e400}}\n", "optim.lr: Input should be a finite number"),
    "a folder": (None, "is a folder; pass a spec file"),
    "a block beyond the model": (
        b"options: {wide: {data: {block_size: 4096}}}\n",
        "option 'wide': data.block_size: 4096 exceeds",
    ),
}


@pytest.mark.parametrize("raw,expected", BAD_SPECS.values(), ids=list(BAD_SPECS))
def test_a_bad_spec_exits_2_naming_the_file(tmp_path, capsys, raw, expected):
    path = tmp_path / "spec.yaml"
    if raw is None:
        path.mkdir()
    else:
        path.write_bytes(raw)
    assert main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and expected in err


def test_a_spec_that_is_not_there_exits_2(capsys):
    assert main(["does/not/exist.yaml", "--dry-run"]) == 2
    assert (
        capsys.readouterr().err
        == "error: does/not/exist.yaml: cannot read the spec (No such file or directory); check the path\n"
    )


@pytest.mark.parametrize("mode", ["--dry-run", "--local"])
@pytest.mark.parametrize(
    "raw,name,expected", [*BAD_DATA.values(), (None, "missing.md", "no such file")], ids=[*BAD_DATA, "missing"]
)
def test_bad_data_is_refused_at_the_dry_run_and_before_ray_starts(tmp_path, capsys, raw, name, expected, mode):
    """The data errors of tests/test_data.py, through the launcher, by a dry run as by a launch: exit 2, nothing
    started (in-process: an exception escaping main() fails the test, as the traceback a user would see)."""
    data = tmp_path / name
    if raw is not None:
        data.write_bytes(raw)
    code = main(
        [
            "specs/smoke.yaml",
            mode,
            "--only",
            "current",
            "--set",
            f"data.path={data}",
            "--set",
            f"storage.path={tmp_path / 'out'}",
        ]
    )
    out = capsys.readouterr()
    assert code == 2
    assert f"error: data.path {str(data)!r}: " in out.err and expected in out.err
    assert "Traceback" not in out.err and "starting a local Ray instance" not in out.out
    assert not (tmp_path / "out").exists()  # nothing written


def _mutations(text: str, rng: random.Random) -> str | bytes:
    """One random corruption of a spec: bytes, truncation, a swapped type, a huge or negative number, a stray key."""
    kind = rng.randrange(6)
    if kind == 0:
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 1:
        return text[: rng.randrange(len(text))]
    data = yaml.safe_load(text)
    node, key = data, None
    for _ in range(rng.randint(1, 4)):  # walk to a random node
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
                break
            node = node[key]
        else:
            break
    replacement = (
        [None, [], {}, "text", -1, 0, 10**30, 1e308, True, [1, "a"], {"x": 1}][rng.randrange(11)]
        if kind in (2, 3)
        else None
    )
    if isinstance(node, dict) and key in node:
        if kind == 4:
            node[f"{key}_typo"] = node.pop(key)
        elif kind == 5:
            node[key] = (
                -abs(node[key]) if isinstance(node[key], (int, float)) and not isinstance(node[key], bool) else 10**40
            )
        else:
            node[key] = replacement
    return yaml.safe_dump(data)


def test_fuzzed_specs_exit_0_or_2_and_never_raise(tmp_path, capsys):
    rng = random.Random(0)
    texts = [Path(p).read_text() for p in ("specs/smoke.yaml", "specs/best.yaml", "specs/warmup_constant.yaml")]
    codes = []
    for i in range(300):
        mutated = _mutations(rng.choice(texts), rng)
        path = tmp_path / f"fuzz{i}.yaml"
        path.write_bytes(mutated if isinstance(mutated, bytes) else mutated.encode())
        codes.append(main([str(path), "--dry-run"]))  # an exception here is the traceback a user would see
        err = capsys.readouterr().err
        assert codes[-1] in (0, 2), (codes[-1], mutated)
        if codes[-1] == 2:
            assert err.startswith("error: ") and "Traceback" not in err
    assert codes.count(2) > 100  # the fuzzer does reach the error paths
