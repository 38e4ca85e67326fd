"""plan() decisions, replayed from scripted observations (no engine, no clock)."""

from reuseport.backoff import BackoffBook
from reuseport.controller import Create, Fail, Observed, Remove, Wait, plan
from reuseport.policies import BackoffPolicy

POLICY = BackoffPolicy(initial=0.5, maximum=30.0, reset_after=10.0)


def up(cid: str, index: int, ready: bool = True, started: float = 0.0) -> Observed:
    return Observed(cid, index, running=True, ready=ready, started_at=started)


def dead(cid: str, index: int, reason: str = "exited with code 1") -> Observed:
    return Observed(cid, index, running=False, ready=False, reason=reason)


def test_empty_service_creates_every_index() -> None:
    assert plan(3, [], {}, POLICY, now=0.0) == [Create(1), Create(2), Create(3)]


def test_converged_service_does_nothing() -> None:
    observed = [up("a", 1), up("b", 2)]
    assert plan(2, observed, {}, POLICY, now=5.0) == []


def test_starting_replicas_are_not_duplicated() -> None:
    observed = [up("a", 1, ready=False), up("b", 2, ready=False)]
    assert plan(2, observed, {}, POLICY, now=0.1) == []


def test_first_death_is_replaced_at_once_and_the_corpse_removed() -> None:
    actions = plan(2, [up("a", 1), dead("b", 2)], {}, POLICY, now=50.0)
    assert actions == [
        Fail(2, "b", "exited with code 1", retry_at=50.0),
        Remove(2, "b", graceful=False, why="dead"),
        Create(2),
    ]


def test_a_never_started_replica_is_replaced_without_counting_a_failure() -> None:
    """Its creator (a supervisor SIGKILLed between create and start) left it: the index
    is refilled at once, with no restart, backoff or replacement against it."""
    orphan = Observed(
        "b", 2, running=False, ready=False, reason="container created", unstarted=True
    )
    book = BackoffBook(POLICY)
    actions = plan(2, [up("a", 1), orphan], book.slots, POLICY, now=50.0)
    assert actions == [Remove(2, "b", graceful=False, why="unstarted"), Create(2)]
    # Even while its index waits out a backoff, it is removed without another failure.
    book.record_failure(2, "first", "exited with code 1", now=48.0)
    book.record_failure(2, "second", "exited with code 1", now=49.0)
    assert book.slots[2].retry_at > 49.1
    waiting = plan(2, [up("a", 1), orphan], book.slots, POLICY, now=49.1)
    assert waiting == [
        Remove(2, "b", graceful=False, why="unstarted"),
        Wait(2, book.slots[2].retry_at),
    ]


def test_crash_loop_backs_off() -> None:
    book = BackoffBook(POLICY)
    now = 0.0
    history = []
    for attempt in range(5):
        actions = plan(1, [dead(f"c{attempt}", 1)], book.slots, POLICY, now)
        fail = next(a for a in actions if isinstance(a, Fail))
        book.record_failure(1, fail.container_id, fail.reason, now)
        history.append(next(a for a in actions if isinstance(a, Create | Wait)))
        now += 0.1
    assert history[0] == Create(1)
    assert history[1] == Wait(1, until=0.1 + 0.5)
    assert [type(a) for a in history[2:]] == [Wait, Wait, Wait]
    assert book.slot(1).retry_at == 0.4 + 4.0


def test_waiting_index_is_created_once_its_time_comes() -> None:
    book = BackoffBook(POLICY)
    book.record_failure(1, "c0", "x", now=0.0)
    book.record_failure(1, "c1", "x", now=0.0)  # retry at 0.5
    assert plan(1, [], book.slots, POLICY, now=0.4) == [Wait(1, 0.5)]
    assert plan(1, [], book.slots, POLICY, now=0.5) == [Create(1)]


def test_scale_down_stops_the_highest_indices_gracefully() -> None:
    observed = [up("a", 1), up("b", 2), up("c", 3), up("d", 4)]
    assert plan(2, observed, {}, POLICY, now=0.0) == [
        Remove(3, "c", graceful=True),
        Remove(4, "d", graceful=True),
    ]


def test_scale_up_fills_new_indices() -> None:
    assert plan(4, [up("a", 1), up("b", 2)], {}, POLICY, now=0.0) == [Create(3), Create(4)]


def test_duplicate_index_keeps_the_ready_then_oldest() -> None:
    observed = [
        up("new", 1, ready=False, started=9.0),
        up("old", 1, started=1.0),
        up("x", 1, started=0.5),
    ]
    actions = plan(1, observed, {}, POLICY, now=10.0)
    assert actions == [Remove(1, "old", graceful=True), Remove(1, "new", graceful=True)]


def test_dead_surplus_is_removed_without_counting_a_failure() -> None:
    actions = plan(1, [up("a", 1), dead("b", 2)], {}, POLICY, now=0.0)
    assert actions == [Remove(2, "b", graceful=False, why="dead")]


def test_dead_beside_a_running_sibling_of_the_same_index_is_not_a_failure() -> None:
    actions = plan(1, [up("a", 1), dead("old", 1)], {}, POLICY, now=0.0)
    assert actions == [Remove(1, "old", graceful=False, why="dead")]


def test_running_count_never_exceeds_desired() -> None:
    observed = [up("a", 1), dead("b", 2), up("c", 3, ready=False)]
    actions = plan(3, observed, {}, POLICY, now=0.0)
    creates = [a for a in actions if isinstance(a, Create)]
    running = sum(1 for o in observed if o.running)
    assert running + len(creates) == 3


def test_an_already_counted_death_keeps_its_retry_time() -> None:
    book = BackoffBook(POLICY)
    book.record_failure(1, "c0", "x", now=0.0)
    book.record_failure(1, "c1", "x", now=1.0)  # retry at 1.5
    actions = plan(1, [dead("c1", 1)], book.slots, POLICY, now=1.2)
    assert Fail(1, "c1", "exited with code 1", retry_at=1.5) in actions
    assert Wait(1, 1.5) in actions


# -- liveness: replace before stop ---------------------------------------------------------


def test_failing_replica_gets_a_successor_first_and_is_kept_until_it_is_ready() -> None:
    from reuseport.controller import Replace

    hung = Observed("a", 1, running=True, ready=True, started_at=1.0, failing="hung")
    other = Observed("b", 2, running=True, ready=True, started_at=1.0)
    actions = plan(2, [hung, other], {}, POLICY, now=10.0)
    assert Replace(1, "a", "hung") in actions
    assert Create(1) in actions
    assert not [a for a in actions if isinstance(a, Remove)]  # capacity never dips

    starting = Observed("c", 1, running=True, ready=False, started_at=10.0)
    actions = plan(2, [hung, starting, other], {}, POLICY, now=10.5)
    assert Create(1) not in actions  # one successor is enough
    assert not [a for a in actions if isinstance(a, Remove)]

    ready = Observed("c", 1, running=True, ready=True, started_at=10.0)
    actions = plan(2, [hung, ready, other], {}, POLICY, now=11.0)
    assert Remove(1, "a", graceful=True, why="failing") in actions
    assert Create(1) not in actions


def test_failing_replacement_ignores_the_surge_budget() -> None:
    from reuseport.policies import RolloutPolicy

    strict = RolloutPolicy(max_surge=0, max_unavailable=1)
    hung = Observed("a", 1, running=True, ready=True, failing="unhealthy")
    actions = plan(1, [hung], {}, POLICY, now=1.0, strategy=strict)
    assert Create(1) in actions


def test_a_failing_holders_successor_that_crashes_is_backed_off_not_retried_every_pass() -> None:
    from reuseport.controller import Replace

    book = BackoffBook(POLICY)
    hung = Observed("a", 1, running=True, ready=False, started_at=1.0, failing="hung")
    book.record_failure(1, "a", "hung", now=10.0)  # the replacement counts as a failure
    # Its successor died at start: the index still holds only the failing replica.
    actions = plan(1, [hung, dead("s1", 1)], book.slots, POLICY, now=10.2)
    fail = next(a for a in actions if isinstance(a, Fail))
    assert fail.retry_at == 10.2 + 0.5  # the second failure in a row waits
    assert Replace(1, "a", "hung") in actions
    assert Create(1) not in actions and Wait(1, 10.7) in actions
    book.record_failure(1, "s1", "exited with code 1", now=10.2)
    # Every later pass before the retry time waits too (the hang poll runs at 20/s).
    for now in (10.25, 10.5, 10.69):
        actions = plan(1, [hung], book.slots, POLICY, now=now)
        assert Create(1) not in actions and Wait(1, 10.7) in actions
    assert Create(1) in plan(1, [hung], book.slots, POLICY, now=10.7)


def test_a_failing_holder_whose_successor_cannot_be_created_waits_for_its_retry() -> None:
    from reuseport.controller import Replace

    book = BackoffBook(POLICY)
    hung = Observed("a", 1, running=True, ready=False, failing="unhealthy")
    book.record_failure(1, "a", "unhealthy", now=5.0)
    book.record_failure(1, "create-failure-5.0", "image gone", now=5.0)  # what _create does
    assert plan(1, [hung], book.slots, POLICY, now=5.1) == [
        Replace(1, "a", "unhealthy"),
        Wait(1, 5.5),
    ]
