#!/usr/bin/env bash
# Build the py-averager module into a WebAssembly component with componentize-py.
#
#   samples/modules/py-averager/build.sh        # from anywhere
#
# Uses (and creates if missing) a virtualenv at <repo>/target/py-venv with
# componentize-py 0.25.1, and writes <target>/wasm32-wasip2/wasm/py_averager.wasm, next to the
# Rust samples (<target> is $CARGO_TARGET_DIR if set, else <repo>/target). Does nothing when
# the component is newer than app.py and the WIT files.
#
# The component imports WASI p2 besides the verge:module world (no --stub-wasi): Verge links
# WASI and grants no files or sockets, and stubbing it would bake the build's random seed in.
# Environment: PYTHON (default python3) creates the virtualenv; VERGE_PY_REBUILD=1 forces a build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
venv="$repo/target/py-venv"
out_dir="${CARGO_TARGET_DIR:-$repo/target}/wasm32-wasip2/wasm"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)" # absolute: the build runs in $here
out="$out_dir/py_averager.wasm"
version="0.25.1"

# Fresh if the output is newer than every input.
fresh() {
    [[ -f "$out" ]] || return 1
    [[ "${VERGE_PY_REBUILD:-0}" == "1" ]] && return 1
    local newer
    newer="$(find "$here" "$repo/wit" -newer "$out" \( -name '*.py' -o -name '*.wit' \) -print -quit)"
    [[ -z "$newer" ]]
}

if fresh; then
    echo "py-averager: $out is up to date"
    exit 0
fi

if [[ ! -x "$venv/bin/componentize-py" ]] \
    || [[ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $version" ]]; then
    echo "py-averager: installing componentize-py $version into $venv"
    [[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$version"
fi

start=$(date +%s)
# Write to a temporary file and rename, so that a failed or interrupted build never leaves a
# truncated component that looks fresh.
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
    cd "$here"
    "$venv/bin/componentize-py" --quiet -d "$repo/wit" -w verge:module/module \
        componentize app -o "$tmp"
)
mv -f "$tmp" "$out"
echo "py-averager: built $out ($(wc -c <"$out" | tr -d " ") bytes) in $(($(date +%s) - start)) s"
