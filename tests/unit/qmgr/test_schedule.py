"""qmgr's scheduler (sdmail/qmgr/schedule.py): turns, limits, rests, backoff and expiry."""

from __future__ import annotations

import pytest

from sdmail.core.dsn import Status
from sdmail.qmgr.schedule import (
    Pick,
    Scheduler,
    TransportPolicy,
    destination_key,
    is_expired,
    parse_feedback,
    retry_delay,
    suspension_reason,
)

REFUSED = Status("4.4.1", "connect to mx.example.net[192.0.2.1]:25: Connection refused")
UNAVAILABLE = Status("4.3.0", "mail transport unavailable")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(**changes: object) -> TransportPolicy:
    values: dict[str, object] = {
        "recipient_limit": 50,
        "concurrency_limit": 20,
        "initial_concurrency": 5,
        "process_limit": 100,
        "positive_feedback": parse_feedback("1"),
        "negative_feedback": parse_feedback("1"),
        "failed_cohort_limit": 1.0,
        "retry_time": 60.0,
        "destination_rest": 300.0,
    }
    values.update(changes)
    return TransportPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sched(clock: FakeClock) -> Scheduler[str]:
    return Scheduler(clock)


def drain(sched: Scheduler[str]) -> list[Pick[str]]:
    picks = []
    while (pick := sched.next_pick()) is not None:
        picks.append(pick)
    return picks


def test_destinations_of_one_transport_take_turns(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=10)
    for n in range(3):
        sched.add("smtp", p, "a.example", f"a{n}")
    for n in range(3):
        sched.add("smtp", p, "b.example", f"b{n}")
    sched.add("smtp", p, "c.example", "c0")
    order = [pick.entry for pick in drain(sched)]
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]


def test_transports_take_turns(sched: Scheduler[str]) -> None:
    for n in range(2):
        sched.add("smtp", policy(), "x.example", f"smtp{n}")
        sched.add("local", policy(), "joe", f"local{n}")
    order = [pick.transport for pick in drain(sched)]
    assert order == ["smtp", "local", "smtp", "local"]


def test_a_destination_never_runs_more_than_its_window(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=2, concurrency_limit=2)
    for n in range(5):
        sched.add("local", p, "joe@example.org", f"m{n}")
    first = drain(sched)
    assert [pick.entry for pick in first] == ["m0", "m1"]
    assert sched.waiting() == 3
    sched.finished(first[0])
    assert [pick.entry for pick in drain(sched)] == ["m2"]


def test_the_concurrency_limit_caps_the_initial_window(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=5, concurrency_limit=1)
    for n in range(3):
        sched.add("local", p, "joe", f"m{n}")
    assert len(drain(sched)) == 1


def test_a_transport_never_runs_more_than_its_process_limit(sched: Scheduler[str]) -> None:
    p = policy(process_limit=3, initial_concurrency=2)
    for name in ("a", "b", "c", "d"):
        sched.add("smtp", p, name, name)
        sched.add("smtp", p, name, name + "2")
    assert len(drain(sched)) == 3
    assert sched.busy("smtp") == 3


def test_successes_open_the_window_up_to_the_limit(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=1, concurrency_limit=3)
    for n in range(20):
        sched.add("smtp", p, "x", f"m{n}")
    rounds = []
    while picks := drain(sched):
        rounds.append(len(picks))
        for pick in picks:
            sched.finished(pick)
    assert rounds[:4] == [1, 2, 3, 3]
    assert max(rounds) == 3


def test_site_failures_close_the_window_then_suspend_the_destination(
    sched: Scheduler[str], clock: FakeClock
) -> None:
    p = policy(initial_concurrency=4, concurrency_limit=10)
    for n in range(10):
        sched.add("smtp", p, "x", f"m{n}")
    picks = drain(sched)
    assert len(picks) == 4
    assert sched.finished(picks[0], site_failure=REFUSED) == []
    assert sched.window("smtp", "x") == 3
    assert sched.finished(picks[1], site_failure=REFUSED) == []
    assert sched.window("smtp", "x") == 2
    # 1/4 + 1/3 + 1/2 failed cohorts reach the limit of 1 at the third failure
    deferred = sched.finished(picks[2], site_failure=REFUSED)
    assert deferred == ["m4", "m5", "m6", "m7", "m8", "m9"]
    sched.finished(picks[3])  # the delivery still out comes back after the death
    assert sched.next_pick() is None
    reason = sched.reason_of("smtp", "x")
    assert reason == Status("4.4.1", "delivery temporarily suspended: " + REFUSED.text)
    assert sched.add("smtp", p, "x", "late") == reason
    assert sched.next_wakeup() == clock.now + 300


def test_a_suspended_destination_comes_back_after_its_rest(
    sched: Scheduler[str], clock: FakeClock
) -> None:
    p = policy(initial_concurrency=1, destination_rest=300.0)
    sched.add("smtp", p, "x", "m0")
    sched.finished(drain(sched)[0], site_failure=REFUSED)
    assert sched.add("smtp", p, "x", "m1") is not None
    clock.now += 299
    assert sched.add("smtp", p, "x", "m1") is not None
    clock.now += 1
    assert sched.add("smtp", p, "x", "m1") is None
    assert [pick.entry for pick in drain(sched)] == ["m1"]
    assert sched.next_wakeup() is None


def test_a_success_forgives_failed_cohorts(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=2, concurrency_limit=2, failed_cohort_limit=1.0)
    for n in range(6):
        sched.add("smtp", p, "x", f"m{n}")
    a, b = drain(sched)
    sched.finished(a, site_failure=REFUSED)  # 1/2 of a cohort
    sched.finished(b)  # forgiven
    c, d = drain(sched)
    sched.finished(c, site_failure=REFUSED)  # 1/2 again: without the success, 1 in all
    assert sched.reason_of("smtp", "x") is None
    sched.finished(d, site_failure=REFUSED)
    assert sched.reason_of("smtp", "x") is not None


def test_other_destinations_of_the_transport_go_on(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=1)
    sched.add("smtp", p, "dead.example", "d0")
    sched.add("smtp", p, "dead.example", "d1")
    sched.add("smtp", p, "fine.example", "f0")
    sched.add("smtp", p, "fine.example", "f1")
    first = drain(sched)
    dead = next(p for p in first if p.destination == "dead.example")
    assert sched.finished(dead, site_failure=REFUSED) == ["d1"]
    fine = next(p for p in first if p.destination == "fine.example")
    sched.finished(fine)
    assert [pick.entry for pick in drain(sched)] == ["f1"]


def test_an_unreachable_agent_rests_its_transport_for_the_retry_time(
    sched: Scheduler[str], clock: FakeClock
) -> None:
    p = policy(retry_time=60.0)
    sched.add("local", p, "a", "a0")
    sched.add("local", p, "b", "b0")
    sched.add("local", p, "a", "a1")
    sched.add("smtp", policy(), "x", "x0")
    pick = sched.next_pick()
    assert pick is not None and pick.transport == "local"
    assert sorted(sched.transport_failed(pick, UNAVAILABLE)) == ["a1", "b0"]
    assert sched.add("local", p, "c", "c0") == UNAVAILABLE
    assert [pick.entry for pick in drain(sched)] == ["x0"]
    clock.now += 60
    assert sched.add("local", p, "c", "c0") is None
    assert [pick.entry for pick in drain(sched)] == ["c0"]


def test_forget_dead_revives_transports_and_destinations(sched: Scheduler[str]) -> None:
    p = policy(initial_concurrency=1)
    sched.add("smtp", p, "x", "x0")
    sched.finished(drain(sched)[0], site_failure=REFUSED)
    sched.add("local", p, "joe", "j0")
    sched.transport_failed(drain(sched)[0], UNAVAILABLE)
    sched.forget_dead()
    assert sched.add("smtp", p, "x", "x1") is None
    assert sched.add("local", p, "joe", "j1") is None
    assert sorted(pick.entry for pick in drain(sched)) == ["j1", "x1"]
    assert sched.next_wakeup() is None


def test_finishing_a_pick_that_is_not_out_is_an_error(sched: Scheduler[str]) -> None:
    with pytest.raises(ValueError, match="no delivery out"):
        sched.finished(Pick("smtp", "x", "m0"))


def test_idle_destinations_are_forgotten(sched: Scheduler[str]) -> None:
    for n in range(100):
        sched.add("smtp", policy(), f"d{n}.example", f"m{n}")
    for pick in drain(sched):
        sched.finished(pick)
    assert sched.window("smtp", "d1.example") is None
    assert sched.waiting() == 0 and sched.busy() == 0


def test_one_recipient_per_request_makes_each_recipient_its_own_destination() -> None:
    assert destination_key(policy(recipient_limit=1), "mail.example", "Joe@Mail.Example") == (
        "joe@mail.example"
    )
    assert destination_key(policy(recipient_limit=50), "MX.Example", "joe@mx.example") == (
        "mx.example"
    )


@pytest.mark.parametrize(
    ("text", "window", "expected"),
    [
        ("1", 7, 1.0),
        ("0.5", 7, 0.5),
        ("1/4", 7, 0.25),
        ("1/concurrency", 4, 0.25),
        ("1/sqrt_concurrency", 4, 0.5),
    ],
)
def test_feedback_values_in_postfix_forms(text: str, window: int, expected: float) -> None:
    assert parse_feedback(text)(window) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "0", "-1", "1/0", "fast", "1/x"])
def test_bad_feedback_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad concurrency feedback"):
        parse_feedback(text)


@pytest.mark.parametrize(
    ("age", "expected"),
    [(0, 300), (299, 300), (301, 301), (1200, 1200), (3999, 3999), (4000, 4000), (10**6, 4000)],
)
def test_retry_delay_is_the_age_within_the_backoff_limits(age: float, expected: float) -> None:
    assert retry_delay(age, 300, 4000) == expected


def test_expiry_at_the_lifetime_and_lifetime_zero_tries_once() -> None:
    day = 86400
    assert not is_expired(1000 + 5 * day - 1, 1000, 5 * day)
    assert is_expired(1000 + 5 * day, 1000, 5 * day)
    assert is_expired(1000, 1000, 0)


def test_a_permanent_site_failure_suspends_with_a_temporary_status() -> None:
    reason = suspension_reason(Status("5.7.1", "host said no"))
    assert reason == Status("4.7.1", "delivery temporarily suspended: host said no")


def test_a_rate_delay_pauses_a_destination_after_each_delivery(
    sched: Scheduler[str], clock: FakeClock
) -> None:
    p = policy(rate_delay=10.0, concurrency_limit=1, initial_concurrency=1, failed_cohort_limit=2)
    for n in range(3):
        sched.add("smtp", p, "slow.example", f"m{n}")
    sched.add("smtp", p, "other.example", "o0")
    first = drain(sched)
    assert sorted(pick.entry for pick in first) == ["m0", "o0"]  # one at a time each
    m0 = next(pick for pick in first if pick.entry == "m0")
    sched.finished(m0)
    assert sched.next_pick() is None  # paused, though its window is free
    assert sched.next_wakeup() == clock.now + 10
    clock.now += 9.9
    assert sched.next_pick() is None
    clock.now += 0.1
    [m1] = drain(sched)
    assert m1.entry == "m1"
    assert sched.finished(m1, site_failure=REFUSED) == []  # not dead yet: it pauses too
    assert sched.next_pick() is None
    clock.now += 10
    assert [pick.entry for pick in drain(sched)] == ["m2"]


def test_the_pause_outlives_an_empty_queue_and_ends_with_a_flush(
    sched: Scheduler[str], clock: FakeClock
) -> None:
    p = policy(rate_delay=10.0, concurrency_limit=1, initial_concurrency=1)
    sched.add("smtp", p, "slow.example", "m0")
    [m0] = drain(sched)
    sched.finished(m0)
    clock.now += 5
    sched.add("smtp", p, "slow.example", "m1")  # new mail waits for the rest of the pause
    assert sched.next_pick() is None
    sched.forget_dead()  # postqueue -f
    assert [pick.entry for pick in drain(sched)] == ["m1"]


def test_without_a_rate_delay_nothing_pauses(sched: Scheduler[str]) -> None:
    p = policy(concurrency_limit=1, initial_concurrency=1)
    sched.add("smtp", p, "x.example", "m0")
    sched.add("smtp", p, "x.example", "m1")
    [m0] = drain(sched)
    sched.finished(m0)
    assert [pick.entry for pick in drain(sched)] == ["m1"]
    assert sched.next_wakeup() is None
