#!/usr/bin/env bash
# The carry for a GPU machine whose image has torch, transformers and peft but not the rest (docs/BENCHMARKS.md §12):
# the wheels of what it lacks, installed into one folder and packed as .gpu/site.tar.xz (git-ignored), for
# bench/gpu_run.sh to unpack there. Versions are this venv's, so the device runs what the tests here ran; liger-kernel
# is pyproject's `gpu` extra. The wheels come from the package index (or pip's cache), for the device's Python:
#   bash bench/gpu_bundle.sh               # cp312 manylinux x86_64 (the device image's Python 3.12)
#   PYV=3.11 bash bench/gpu_bundle.sh      # this machine's Python, for a rehearsal here (bench/gpu_run.sh's header)
# Slimmed as in the H200 session: Ray without its jars, RLlib, Serve, LLM and the dashboard's web client; botocore
# with the S3, STS and SSO service models only. About 50 MB; a device call carries 64 MiB at most.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.gpu}  # another folder for a rehearsal bundle
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
wanted=()
for name in ray pydantic pydantic_core annotated-types typing-inspection jsonschema referencing rpds-py \
    jsonschema-specifications tensorboardX boto3 botocore s3transfer jmespath; do
    wanted+=("$name==$(version "$name")")
done
wanted+=("$(grep -o 'liger-kernel==[0-9.]*' pyproject.toml)")
platform=(--python-version "$PYV" --implementation cp --only-binary=:all:)
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platform+=(--platform "${tag}_x86_64")
done
"$PY" -m pip download -q --no-deps --disable-pip-version-check "${platform[@]}" -d "$T/wheels" "${wanted[@]}"
"$PY" -m pip install -q --no-deps --no-index --no-compile "${platform[@]}" --target "$T/site" "$T"/wheels/*.whl
rm -rf "$T"/site/ray/{jars,rllib,llm,serve,dashboard/client} "$T"/site/bin
find "$T/site" -name '*.map' -delete
find "$T/site" -name __pycache__ -prune -exec rm -rf {} +
find "$T"/site/botocore/data -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts ! -name sso ! -name sso-oidc \
    -exec rm -rf {} +
mkdir -p "$DEST"
XZ_OPT="-6 -T0" tar -C "$T" -cJf "$DEST/site.tar.xz" site
printf '%s\n' "python $PYV" "${wanted[@]}" > "$DEST/site.txt"
echo "$DEST/site.tar.xz: $(du -m "$DEST/site.tar.xz" | cut -f1) MB for Python $PYV: ${wanted[*]}"
