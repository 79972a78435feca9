#!/usr/bin/env bash
# Installs what a fresh machine lacks: Deno and Bun (from npm), the project's npm packages (bun install),
# Mesa's lavapipe Vulkan driver from bookworm-backports (Dawn, which Bun uses, needs the newer one), and
# Debian's Chromium (the browser the suite runs the web page in, headless).
# A user of the installed package needs none of this: see README, "Use it from your project".
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")"
DENO_VERSION=2.9.6
BUN_VERSION=1.4.5
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v deno >/dev/null || ! deno --version | grep -q "deno $DENO_VERSION"; then
  echo "setup: installing deno@$DENO_VERSION from npm"
  as_root npm install -g --silent "deno@$DENO_VERSION"
fi
if ! command -v bun >/dev/null || [ "$(bun --version)" != "$BUN_VERSION" ]; then
  echo "setup: installing bun@$BUN_VERSION from npm"
  as_root npm install -g --silent "bun@$BUN_VERSION"
fi
if [ ! -d node_modules/bun-webgpu ] || [ ! -d node_modules/typescript ] || [ bun.lock -nt node_modules ]; then
  echo "setup: bun install"
  bun install --frozen-lockfile
  touch node_modules
fi
if command -v apt-get >/dev/null && ! dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q bpo12; then
  echo "setup: installing mesa-vulkan-drivers (lavapipe) from bookworm-backports"
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q bookworm-backports "$src"; then
    as_root sed -i -E '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src"
  fi
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
fi
if command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  echo "setup: installing chromium (Debian's) for the web page's browser tests"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
echo "setup: ready (deno $(deno --version | head -1 | cut -d' ' -f2), bun $(bun --version))"
