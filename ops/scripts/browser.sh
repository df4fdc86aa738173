#!/usr/bin/env bash
# Runs a page script in a real browser: Debian's chromium, headless, driven
# by playwright-core (both installed on first use by tools.sh):
#
#   ops/scripts/browser.sh URL SCRIPT [ARG...]
#
# SCRIPT is a CommonJS module exporting `async (page, args) => result`; it
# runs once URL has loaded. Prints one JSON object: the script's result,
# every console message and page error, every request the page made, and
# every Content-Security-Policy violation. Requests to any origin but URL's
# are refused and listed, so a page that needs the internet shows it.
# Exits 1 if the script throws.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
chromium=$(bash "$root/ops/scripts/tools.sh" chromium)
modules=$(bash "$root/ops/scripts/tools.sh" node)
NODE_PATH="$modules" AGORA_CHROMIUM="$chromium" exec node "$root/ops/tools/browser.cjs" "$@"
