"""The test run checks annotations at call time (jaxtyping + beartype, see pyproject.toml)."""

import pytest


def test_runtime_type_checks_are_active():
    from interp.chat import to_messages

    with pytest.raises(Exception, match="(?i)type|beartype"):
        to_messages(5)  # annotated `user: str`; without the checks this returns a dict
