"""Container health check of the sfmlops images: `python healthcheck.py URL`.

Exits 0 when URL answers 2xx within 4 seconds, 1 otherwise (with the reason on stderr). The
slim Python base has no curl or wget, and the check must not import the sfmlops package (a
broken install would then look like an unhealthy server rather than fail loudly at start).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4


def main(argv: list[str]) -> int:
    """Check one URL; returns the process exit code."""
    if len(argv) != 2:
        print("usage: healthcheck.py URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[1], timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as error:
        print(f"{argv[1]}: {error}", file=sys.stderr)
        return 1
    if not 200 <= status < 300:
        print(f"{argv[1]}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
