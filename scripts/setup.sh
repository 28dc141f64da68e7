#!/usr/bin/env bash
# Idempotent set-up for medglm on a fresh Debian/Ubuntu-like machine:
#   - Deno 2.9.6 from the npm registry, installed outside the repo (a root package.json or
#     node_modules would be taken by Deno as project config) and linked onto PATH;
#   - Mesa's Vulkan driver (lavapipe), so that WebGPU runs with shader-f16 on a machine without a GPU;
#   - with --for-tests: what the test suite drives as a person would: Debian's chromium (and a
#     CJK font) for the web page's browser test, tmux for the terminal chat's test, PostgreSQL for
#     the bot's replica tests.
# Each step says what it did; steps already done are skipped.
set -euo pipefail

DENO_VERSION=2.9.6
PREFIX="${MEDGLM_DENO_PREFIX:-$HOME/.cache/medglm-deno}"
DENO_BIN="$PREFIX/node_modules/.bin/deno"
FOR_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --for-tests) FOR_TESTS=1 ;;
    -h | --help)
      echo "usage: bash scripts/setup.sh [--for-tests]"
      echo "  installs Deno $DENO_VERSION (npm) into $PREFIX, links it onto PATH,"
      echo "  and Mesa's Vulkan driver (apt) when missing; --for-tests adds chromium and tmux."
      exit 0
      ;;
    *)
      echo "setup: unknown option '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    say "need root for: $* (no sudo); skipping"
    return 1
  fi
}

# --- Deno -------------------------------------------------------------------------------------
if [ -x "$DENO_BIN" ] && "$DENO_BIN" --version 2>/dev/null | head -n1 | grep -q "deno $DENO_VERSION"; then
  say "Deno $DENO_VERSION already installed at $DENO_BIN"
else
  command -v npm >/dev/null 2>&1 || {
    say "npm not found: install Node.js and npm first (e.g. apt-get install nodejs npm)" >&2
    exit 1
  }
  say "installing Deno $DENO_VERSION from npm into $PREFIX"
  mkdir -p "$PREFIX"
  # The package's postinstall script is not needed: the binary ships in a platform package.
  npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --no-update-notifier --loglevel=error "deno@$DENO_VERSION" >/dev/null
  "$DENO_BIN" --version | head -n1 | sed 's/^/setup: installed /'
fi

# Put `deno` on PATH for later shells: /usr/local/bin when writable (root), else ~/.local/bin.
link_dir=""
if [ -w /usr/local/bin ]; then link_dir=/usr/local/bin; else
  link_dir="$HOME/.local/bin"
  mkdir -p "$link_dir"
fi
if [ "$(readlink "$link_dir/deno" 2>/dev/null || true)" != "$DENO_BIN" ]; then
  if [ -e "$link_dir/deno" ] && [ ! -L "$link_dir/deno" ]; then
    say "$link_dir/deno exists and is not ours; leaving it (use $DENO_BIN)"
  else
    ln -sf "$DENO_BIN" "$link_dir/deno"
    say "linked $link_dir/deno -> $DENO_BIN"
  fi
fi
case ":$PATH:" in
  *":$link_dir:"*) ;;
  *) say "add $link_dir to PATH: export PATH=\"$link_dir:\$PATH\"" ;;
esac

# --- Debian packages ----------------------------------------------------------------------------
apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} = 0 ]; then
    say "already installed: $*"
    return 0
  fi
  if [ $apt_updated = 0 ]; then
    as_root apt-get update -qq >/dev/null || return 1
    apt_updated=1
  fi
  say "installing ${missing[*]} (apt)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  apt_install mesa-vulkan-drivers libvulkan1 ||
    say "could not install Mesa's Vulkan driver; WebGPU will use GL (no shader-f16) if available"
  if [ $FOR_TESTS = 1 ]; then
    apt_install chromium fonts-wqy-microhei tmux ||
      say "could not install chromium/tmux; the browser and terminal tests will skip"
    # The bot's replica tests start their own private cluster with Debian's server binaries.
    apt_install postgresql || say "could not install postgresql; the bot's PostgreSQL tests will skip"
  fi
else
  say "no apt-get here: install a Vulkan driver (Mesa lavapipe or your GPU's) yourself"
fi

say "done. Check the GPU with: deno task gpu-info"
