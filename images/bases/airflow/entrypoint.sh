#!/bin/bash
# The official Airflow image's calling convention: `IMAGE scheduler` runs `airflow scheduler`;
# `IMAGE bash ...`, `IMAGE python ...` or any path runs that command as given.
set -euo pipefail
case "${1:-}" in
  "") exec airflow --help ;;
  bash | python | python3 | airflow | /* | ./*) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
