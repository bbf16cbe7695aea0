# Sourced by the other scripts: where build output and tools live.
# Build output and the tools venv stay outside the checkout, so repeated
# runs (and CI on the same machine) reuse them.
JETSAGA_CACHE="${JETSAGA_CACHE:-$HOME/.cache/jetsaga}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$JETSAGA_CACHE/target}"
JETSAGA_TOOLS="${JETSAGA_TOOLS:-$JETSAGA_CACHE/tools}"
export PATH="$JETSAGA_TOOLS/bin:$HOME/.cargo/bin:$PATH"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }
