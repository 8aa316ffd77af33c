#!/usr/bin/env bash
# Install into the active Python environment: CPU torch first, then the project with its dev extra.
# (An unpinned torch pulls several GB of CUDA wheels; on a GPU machine install the torch build
# for your CUDA first and this script's `torch==2.13.0` line is then a no-op if versions match.)
# uv installs the project's some hundred packages in seconds where pip takes most of a minute; it
# keeps the torch already installed, which satisfies the project's range. It compiles the bytecode
# as pip does (uv does not by default): where PYTHONDONTWRITEBYTECODE is set, nothing else would,
# and every Ray process would compile torch and transformers again as it imports them. uv reads
# UV_INDEX_URL (or UV_DEFAULT_INDEX), not pip.conf or PIP_INDEX_URL: set it to install through a mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0 uv
python -m uv pip install -q --compile-bytecode --python "$(command -v python)" -e ".[dev]"
