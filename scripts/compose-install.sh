#!/bin/sh
# Install mitigate inside a docker-compose container. The source is mounted
# read-only at /app, and pip builds a local project in its own folder, so the
# source is copied first, without the virtual environment, run data and git.
set -eu
mkdir -p /tmp/mitigate-src
tar -C /app --exclude=./.venv --exclude=./.run --exclude=./.git -cf - . | tar -C /tmp/mitigate-src -xf -
pip install --quiet /tmp/mitigate-src
