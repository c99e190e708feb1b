"""`shown_state`: the one mapping from a stored state and due time to what a reader sees."""

import pytest

from backbeat.status import STATES
from backbeat.stores.states import StoredState, shown_state

NOW = 1_000.0


@pytest.mark.parametrize(
    ("stored", "due_at", "shown"),
    [
        ("held", NOW, "pending"),  # written ahead of a response: not told apart
        ("held", NOW + 1, "scheduled"),
        ("pending", NOW, "pending"),  # due now is due
        ("pending", NOW + 0.001, "scheduled"),
        ("running", NOW + 60, "running"),  # the due time of a task past waiting is moot
        ("succeeded", NOW + 60, "succeeded"),
        ("failed", 0.0, "failed"),
        ("cancelled", NOW + 60, "cancelled"),
    ],
)
def test_what_a_reader_is_shown(stored, due_at, shown):
    assert shown_state(StoredState(stored), due_at, NOW) == shown
    assert shown_state(stored, due_at, NOW) == shown  # as stores read it back: a plain string


def test_every_stored_state_is_shown_as_a_counted_one():
    assert {shown_state(state, NOW, NOW) for state in StoredState} <= set(STATES)
