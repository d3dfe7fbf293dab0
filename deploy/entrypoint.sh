#!/bin/sh
# The container's start (the Dockerfile's ENTRYPOINT): a turn.toml in this folder is the turn-taking, unless
# TURN_CONFIG names another file; then the command (`artist-hotline serve`). Personas come from this folder's
# personas/ through PERSONAS_DIR, which the image sets.
set -e
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${TURN_CONFIG:-}" ] && [ -f "$here/turn.toml" ]; then
  TURN_CONFIG="$here/turn.toml"
  export TURN_CONFIG
fi
exec "$@"
