#!/usr/bin/env bash
# The project's two commands (README): both create .venv when missing, install the pinned stack, then run.
#   ./run.sh reproduce [--profile cpu|smoke|paper|paper-faithful] [...]   tables and figures (default: cpu profile)
#   ./run.sh test                                                           unit tests + notebooks under nbval
#   ./run.sh refresh-notebooks      re-execute the committed notebooks in place (their outputs are what test checks)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

ensure_env() {
  # Re-install only when pyproject.toml changed since the last successful install (stamp = its sha256).
  local stamp=.venv/.medsg-installed want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    echo "[medsg] creating .venv with $("$PY" --version)"
    "$PY" -m venv .venv
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[medsg] installing pinned dependencies into .venv (about 2-3 minutes, 6 GB)"
    local t0=$SECONDS
    # pip's notes about local index folders that lack a package are noise here; real errors still show.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e . \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$want" >"$stamp"
    echo "[medsg] installed in $((SECONDS - t0)) s"
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  reproduce)
    ensure_env
    exec .venv/bin/python -m medsg_lib reproduce "$@"
    ;;
  test)
    ensure_env
    export MPLBACKEND=Agg PYTHONHASHSEED=0
    # removes the smoke outputs of earlier runs (a stale run, made with another smoke config, would refuse to
    # resume) and says why the notebooks' checked numbers are masked where this CPU's family is not the one that
    # made them (.ci/notebooks-cpu; bits differ by family)
    local_args=()
    why=$(.venv/bin/python -c "from medsg_lib.reproduce import prepare_notebook_checks; print(prepare_notebook_checks())")
    if [ -n "$why" ]; then
      echo "[medsg] $why"
      local_args=(--nbval-sanitize-with .ci/nbval-other-cpu.cfg)
    fi
    exec .venv/bin/python -m pytest --nbval-lax --nbval-current-env "${local_args[@]}" tests notebooks "$@"
    ;;
  refresh-notebooks)
    ensure_env
    export MPLBACKEND=Agg PYTHONHASHSEED=0
    exec .venv/bin/python -m medsg_lib refresh-notebooks "$@"
    ;;
  *)
    echo "usage: ./run.sh reproduce [--profile cpu] | ./run.sh test [pytest args] | ./run.sh refresh-notebooks" >&2
    exit 2
    ;;
esac
