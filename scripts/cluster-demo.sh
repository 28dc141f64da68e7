#!/usr/bin/env bash
# The reference deployment on this machine: N model servers (`deno task serve`, the demo model),
# M bot replicas in webhook mode behind a small load balancer, one PostgreSQL (a private cluster,
# removed afterwards; or --store URL), the fake Bot API in place of Telegram; a scripted
# conversation runs through it and the counts are printed (answered / lost / duplicated / failed).
#   bash scripts/cluster-demo.sh [--servers 2] [--replicas 3] [--chats 6] [--questions 4] [--kill]
#     [--keep-logs] [--store postgres://...]
# --kill: SIGKILL one bot replica and one model server while answers are being written. The logs
# of every process are kept (and their folder printed) on failure or with --keep-logs.
# Needs PostgreSQL's server binaries (apt-get install postgresql) unless --store is given.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
export DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan}"
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR=$(mktemp -d)
  export XDG_RUNTIME_DIR
fi
exec deno run --allow-all scripts/cluster_demo.ts "$@"
