"""The queue's nouns: queue names as Postfix spells them, envelope value semantics."""

from __future__ import annotations

import dataclasses

import pytest

from sdmail.core.records import (
    ALL_QUEUES,
    LOG_QUEUES,
    MESSAGE_QUEUES,
    Envelope,
    Notify,
    QueueName,
    Recipient,
)


def test_queue_names_are_postfix_directory_names() -> None:
    assert [q.value for q in ALL_QUEUES] == [
        "maildrop",
        "incoming",
        "active",
        "deferred",
        "hold",
        "corrupt",
        "bounce",
        "defer",
        "trace",
    ]
    assert set(ALL_QUEUES) == set(QueueName)
    assert not set(MESSAGE_QUEUES) & set(LOG_QUEUES)


def test_queue_name_is_usable_as_a_path_component() -> None:
    assert f"{QueueName.DEFERRED}/x" == "deferred/x"


def test_recipient_equality_ignores_the_file_offset() -> None:
    assert Recipient("a@example.org", offset=10) == Recipient("a@example.org", offset=99)
    assert Recipient("a@example.org") != Recipient("a@example.org", done=True)


def test_recipient_without_notify_has_the_empty_flag() -> None:
    assert not Recipient("a@example.org").notify
    assert Recipient("a@example.org").notify == Notify(0)


def test_envelope_is_immutable() -> None:
    envelope = Envelope(sender="")
    with pytest.raises(dataclasses.FrozenInstanceError):
        envelope.sender = "x@example.org"  # type: ignore[misc]


def test_envelope_attribute_lookup() -> None:
    envelope = Envelope(sender="", attributes=(("trace_flags", "1"), ("x", "")))
    assert envelope.attribute("trace_flags") == "1"
    assert envelope.attribute("x") == ""
    assert envelope.attribute("missing") is None
