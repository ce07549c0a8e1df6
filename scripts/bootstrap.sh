# shellcheck shell=bash
# Prepares a checkout for scripts/demo and scripts/test, which source this file:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
#   need_debs pushpin
#
# It checks for Python >= 3.11, creates .venv when missing and runs `pip install -e ".[dev]"`
# only when setup.cfg or pyproject.toml changed since the last install (a hash is kept in
# .venv/.bootstrap-stamp), so a second run takes well under a second. It defines need_debs and
# exports REPO_ROOT (absolute path of the checkout) and VENV_PY (the virtualenv's python).
# It does not change the caller's working directory.
#
# Environment: PYTHON picks the interpreter that creates .venv (default: python3).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

_bootstrap_die() {
    printf 'bootstrap: %s\n' "$@" >&2
    exit 1
}

# Succeeds when the given interpreter is Python 3.11 or newer.
_bootstrap_python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

_bootstrap_venv() {
    local venv="$REPO_ROOT/.venv" python="${PYTHON:-python3}" stamp_file want have=""

    if [ ! -e "$venv" ]; then
        command -v "$python" >/dev/null 2>&1 ||
            _bootstrap_die "'$python' not found: install Python 3.11 or newer, or set PYTHON=/path/to/python3.11."
        _bootstrap_python_ok "$python" ||
            _bootstrap_die "$("$python" --version 2>&1) is too old: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)."
        echo "bootstrap: creating .venv with $("$python" --version 2>&1)" >&2
        if ! "$python" -m venv "$venv"; then
            # Debian and Ubuntu ship venv's pip separately (python3-venv); a failed attempt
            # leaves a .venv without pip behind, which must not be mistaken for a good one.
            rm -rf "$venv"
            if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
                need_debs python3-venv
                "$python" -m venv "$venv" || { rm -rf "$venv"; _bootstrap_die "could not create .venv."; }
            else
                _bootstrap_die "could not create .venv: install python3-venv (sudo apt-get install python3-venv) and run again."
            fi
        fi
    fi
    "$venv/bin/python" -c '' 2>/dev/null ||
        _bootstrap_die ".venv exists but its python does not run (made by another user or a removed interpreter?): delete .venv and run again."
    _bootstrap_python_ok "$venv/bin/python" ||
        _bootstrap_die ".venv has $("$venv/bin/python" --version 2>&1); Python 3.11 or newer is required: delete .venv and run again (set PYTHON=/path/to/python3.11)."

    # Reinstall only when the packaging files changed since the last successful install.
    stamp_file="$venv/.bootstrap-stamp"
    want="$(cd "$REPO_ROOT" && { sha256sum setup.cfg pyproject.toml 2>/dev/null || true; })"
    [ -f "$stamp_file" ] && have="$(cat "$stamp_file")"
    if [ "$want" != "$have" ]; then
        echo "bootstrap: installing the package and its dev extras into .venv (setup.cfg changed or first run)" >&2
        (cd "$REPO_ROOT" && "$venv/bin/python" -m pip install --quiet -e ".[dev]") ||
            _bootstrap_die "pip install -e \".[dev]\" failed (output above)."
        printf '%s\n' "$want" >"$stamp_file"
    fi

    VENV_PY="$venv/bin/python"
    export VENV_PY
}

# The command a Debian package provides, used to accept a package installed some other way
# (Homebrew, a source build) on systems without dpkg.
_bootstrap_deb_command() {
    case "$1" in
        chromium-driver) echo chromedriver ;;
        *) echo "$1" ;;
    esac
}

_bootstrap_deb_installed() {
    if command -v dpkg-query >/dev/null 2>&1; then
        # `dpkg -s` also succeeds for removed packages whose config files remain: check the status.
        [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
    else
        command -v "$(_bootstrap_deb_command "$1")" >/dev/null 2>&1
    fi
}

_BOOTSTRAP_APT_UPDATED="${_BOOTSTRAP_APT_UPDATED:-0}"

# need_debs PACKAGE...: make sure these Debian packages are installed. As root with apt-get,
# install the missing ones (apt-get update runs at most once per shell); otherwise print the
# command that installs them and exit 1.
need_debs() {
    local pkg missing=()
    for pkg in "$@"; do
        _bootstrap_deb_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0

    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
        if [ "$_BOOTSTRAP_APT_UPDATED" = 0 ]; then
            apt-get update -qq || _bootstrap_die "apt-get update failed."
            _BOOTSTRAP_APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
            _bootstrap_die "apt-get install ${missing[*]} failed."
        return 0
    fi

    if command -v apt-get >/dev/null 2>&1; then
        printf 'bootstrap: missing Debian packages: %s\nInstall them with:\n  sudo apt-get update && sudo apt-get install -y --no-install-recommends %s\n' \
            "${missing[*]}" "${missing[*]}" >&2
    else
        printf 'bootstrap: missing: %s\nThis system has no apt-get: install them with its package manager, so that these commands are on PATH: %s\n' \
            "${missing[*]}" "$(for pkg in "${missing[@]}"; do printf '%s ' "$(_bootstrap_deb_command "$pkg")"; done)" >&2
    fi
    exit 1
}

_bootstrap_venv
