# Sourced by scripts/app and scripts/test (from the repository root, after .venv has its requirements):
# install this checkout into .venv in editable mode (`pip install --no-deps -e .`), so that
# `.venv/bin/python -m ctdiff ...` and `python -m eval ...` work from any folder. Skipped when .venv
# already imports this checkout's packages and neither pyproject.toml nor the set of top-level
# packages changed (a new top-level package, e.g. ctdiff_app/, needs a new editable install).
install_project() {
  local stamp=.venv/.editable.sha256 want here
  here=$(pwd -P)
  want=$( { cat pyproject.toml; printf '%s\n' "$here"; ls -d ctdiff*/ eval*/ 2>/dev/null; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
     && (cd / && "$here/.venv/bin/python" -c 'import ctdiff, pathlib, sys; sys.exit(pathlib.Path(ctdiff.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]))' "$here") 2>/dev/null; then
    return 0
  fi
  echo "$1: installing this checkout into .venv (pip install --no-deps -e .)" >&2
  local log
  log=$(mktemp)
  # --no-build-isolation: build with the pinned setuptools already in .venv (works offline)
  if ! .venv/bin/python -m pip install --no-deps --no-build-isolation -e . >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "$1: pip install -e . failed (see above)" >&2
    return 1
  fi
  rm -f "$log"
  echo "$want" >"$stamp"
}
