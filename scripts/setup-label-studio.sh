#!/usr/bin/env bash
# Make .venv-ls with Label Studio 1.23.2: the server the Label Studio tests (and the README's
# "Label your own data" section) run against. A venv of its own: Label Studio pins Django and
# friends at versions that clash with the Ray/torch .venv. sentry-sdk 3 makes it crash at start
# ("Unknown option 'send_default_pii'"), hence the pin beside it. Does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv-ls/bin/label-studio ] && .venv-ls/bin/python -c "import label_studio" 2>/dev/null; then
    exit 0
fi
python3 -m venv .venv-ls
.venv-ls/bin/pip install -q 'label-studio==1.23.2' 'sentry-sdk<3'
.venv-ls/bin/python -c "import label_studio"   # not --help: it makes a data directory under HOME
