"""The soak's one-minute version: mixed reads against gunicorn while the champion moves.

benchmarks/soak.py runs for minutes and reports rates; here only what must hold on any
machine is asserted: no request fails and the workers' memory stays bounded. Never a rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.soak import soak

from sfmlops.adapters.db.engine import make_engine
from sfmlops.settings import Settings
from tests.support.cli_processes import TOKEN
from tests.support.model_registry import train_champion

pytestmark = pytest.mark.e2e

# The data slice of the `home` fixture: stores 1 to 20.
SLICE_STORES = 20
# Per worker, from after warm-up to the end. Measured (docs/benchmarks.md, Soak): at most
# +0.9 % with the warm-up round trip and +1.7 % without, over about 100,000 requests; a leak of
# 1 KiB per forecast request gave +42 % and +49 %. 10 % is the target for the long soak.
RSS_GROWTH_BOUND = 0.10


def test_a_minute_of_mixed_reads_with_champion_swaps(home: Path, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, home=home)
    engine = make_engine(settings.effective_database_url)
    first = train_champion(settings, engine, None)
    second = train_champion(settings, engine, None)
    engine.dispose()

    result = soak(
        home, tmp_path, seconds=60, connections=4, swaps=2, versions=(first, second),
        token=TOKEN, warmup_swaps=1, stores=SLICE_STORES,
    )  # fmt: skip

    print({k: v for k, v in result.items() if k != "per_minute"})
    assert result["requests"] > 0
    assert result["errors"] == 0, result["per_minute"]
    assert len(result["swaps"]) == 2
    assert result["served_after"] == {"status": "ready", "model_version": first, "reason": None}
    baseline, end = result["rss_kib_after_warmup"], result["rss_kib_end"]
    assert set(end) == set(baseline), "a worker was replaced during the run"
    assert max(result["rss_growth_after_warmup"].values()) <= RSS_GROWTH_BOUND, (baseline, end)
