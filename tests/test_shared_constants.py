"""Values more than one module must agree on, each defined once: turn ids, the unknown device's name and the
playback-report waits of the plush and the server."""

from __future__ import annotations

from plush.protos.timing import PLAYBACK_REPORT_S, PLUSH_PLAYBACK_WAIT_S
from plush.server.auth import UNKNOWN_DEVICE, device_id
from plush.server.store.records import TURN_ID_LENGTH, new_turn_id
from plush.server.telegram.inbox import turn_id


def test_random_and_telegram_turn_ids_have_the_one_length() -> None:
    made = {new_turn_id() for _ in range(100)}
    assert len(made) == 100
    assert {len(t) for t in made} == {TURN_ID_LENGTH}
    assert len(turn_id(1, 2, 3)) == TURN_ID_LENGTH
    assert turn_id(1, 2, 3) == turn_id(1, 2, 3)


def test_a_call_naming_no_device_or_two_is_the_unknown_device() -> None:
    assert device_id([]) == UNKNOWN_DEVICE
    assert device_id([("plush-device-id", "a"), ("plush-device-id", "b")]) == UNKNOWN_DEVICE
    assert device_id([("plush-device-id", "bunny")]) == "bunny"


def test_the_plush_reports_playback_within_the_servers_wait() -> None:
    assert 0 < PLUSH_PLAYBACK_WAIT_S < PLAYBACK_REPORT_S
