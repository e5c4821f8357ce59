#!/usr/bin/env bash
# Creates the secret files docker-compose.yml needs from their committed *.example placeholders.
# Never overwrites an existing secret. Edit the created files afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
for example in secrets/*.example alertmanager/secrets/*.example; do
  target="${example%.example}"
  if [[ -e "$target" ]]; then
    echo "keep    $target"
  else
    cp "$example" "$target"
    chmod 0644 "$target"
    echo "created $target (placeholder: edit it)"
  fi
done
