"""The stream job's test-only crash points are read from the environment, checked."""

from __future__ import annotations

import pytest

from sfmlops.services.stream_test_hooks import StreamFaultHooks


def test_no_variable_injects_nothing() -> None:
    assert StreamFaultHooks.from_environment({}) == StreamFaultHooks()


def test_the_variables_name_the_batches() -> None:
    hooks = StreamFaultHooks.from_environment(
        {"SFMLOPS_STREAM_FAULT_AFTER_COMMIT": "3", "SFMLOPS_STREAM_FAULT_BEFORE_COMMIT": "0"}
    )

    assert (hooks.after_commit, hooks.before_commit) == (3, 0)


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SFMLOPS_STREAM_FAULT_AFTER_COMMIT: '-1' is not"):
        StreamFaultHooks.from_environment({"SFMLOPS_STREAM_FAULT_AFTER_COMMIT": "-1"})
