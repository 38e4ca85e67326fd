from reuseport.backoff import BackoffBook, delay_after
from reuseport.policies import BackoffPolicy

POLICY = BackoffPolicy(initial=0.5, maximum=30.0, reset_after=10.0)


def test_first_failure_is_replaced_at_once_then_delays_double_to_the_cap() -> None:
    delays = [delay_after(n, POLICY) for n in range(1, 10)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_death_is_counted_once_per_container() -> None:
    book = BackoffBook(POLICY)
    first = book.record_failure(1, "c1", "exited", now=100.0)
    again = book.record_failure(1, "c1", "exited", now=101.0)
    assert first == again == 100.0
    assert book.slot(1).failures == 1
    assert book.record_failure(1, "c2", "exited", now=102.0) == 102.5
    assert book.slot(1).restarts == 2


def test_stable_listening_forgives_failures() -> None:
    book = BackoffBook(POLICY)
    for n in range(4):
        book.record_failure(1, f"c{n}", "crash", now=float(n))
    book.record_ready(1, now=10.0)
    book.record_ready(1, now=19.9)
    assert book.slot(1).failures == 4
    book.record_ready(1, now=20.0)
    assert book.slot(1).failures == 0
    assert book.slot(1).restarts == 4  # the total stays for `ps`


def test_flapping_readiness_does_not_forgive() -> None:
    book = BackoffBook(POLICY)
    book.record_failure(2, "c1", "crash", now=0.0)
    book.record_ready(2, now=1.0)
    book.record_not_ready(2)
    book.record_ready(2, now=9.0)
    book.record_ready(2, now=12.0)
    assert book.slot(2).failures == 1
