#!/usr/bin/env bash
# What the demo tests need beyond the project's own dependencies: Debian's Chromium and its chromedriver
# (the headless-browser test, tests/test_demo_browser.py) and selenium, plus gradio (the `demo` extra) in the
# active Python environment. Run it after activating the virtual environment: `bash .ci/setup-browser.sh`.
# Idempotent; needs root (or sudo) for apt-get. Everything comes from Debian's and PyPI's registries.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
fi
chromium --version
chromedriver --version

# The Python packages go into the active virtual environment (or PYTHON=/path/to/venv/bin/python), never into
# the machine's own interpreter.
if [ -z "${PYTHON:-}" ]; then
    if [ -z "${VIRTUAL_ENV:-}" ]; then
        echo "setup-browser.sh: activate the project's virtual environment first (or set PYTHON=...)" >&2
        exit 2
    fi
    PYTHON="$VIRTUAL_ENV/bin/python"
fi
"$PYTHON" -m pip install -q "gradio>=5" "selenium>=4.11"
"$PYTHON" -c "import gradio, selenium; print('gradio', gradio.__version__, '| selenium', selenium.__version__)"
