"""How a DeadlockError reads: each step names what is new, once."""

from __future__ import annotations

import pytest

from anyio_mutex import DeadlockError, DeadlockStep


@pytest.mark.parametrize(
    ("step", "text"),
    [
        # A label of its own is shown with the holder's task.
        (
            DeadlockStep("a", "accounts", "payment", "b"),
            "task 'a' waits for 'accounts', held by 'payment' (task 'b')",
        ),
        # The default owner label is the lock's own label: not repeated.
        (
            DeadlockStep("a", "accounts", "accounts", "b"),
            "task 'a' waits for 'accounts', held by task 'b'",
        ),
        # A label that is the holder's task name: not repeated either.
        (
            DeadlockStep("a", "accounts", "b", "b"),
            "task 'a' waits for 'accounts', held by task 'b'",
        ),
        # What is known is shown when the task's name is not.
        (
            DeadlockStep("a", "accounts", "accounts", None),
            "task 'a' waits for 'accounts', held by 'accounts'",
        ),
        (
            DeadlockStep("a", "accounts", None, None),
            "task 'a' waits for 'accounts', held",
        ),
        (
            DeadlockStep("a", "accounts", None, "b"),
            "task 'a' waits for 'accounts', held by task 'b'",
        ),
    ],
)
def test_a_step_names_each_thing_once(step: DeadlockStep, text: str) -> None:
    assert str(step) == text


def test_the_error_joins_its_steps() -> None:
    cycle = (
        DeadlockStep("a", "A", "A", "b"),
        DeadlockStep("b", "B", "job", "a"),
    )
    assert str(DeadlockError(cycle)) == (
        "Deadlock: waiting would never end: task 'a' waits for 'A', held by task "
        "'b'; task 'b' waits for 'B', held by 'job' (task 'a')"
    )
