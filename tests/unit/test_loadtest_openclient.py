"""The keep-alive open-loop client: its schedule, latencies from the scheduled send time,
and the balance figures from its records."""

import asyncio

import pytest

from loadtest import balanced, openclient

PAGE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: %s\r\n\r\nhello"


def test_each_connection_gets_every_nth_request_of_the_run() -> None:
    schedules = [openclient.connection_schedule(100, 0.1, 4, i) for i in range(4)]
    assert schedules[0] == [0.0, 0.04, 0.08]
    assert schedules[3] == [0.03, 0.07]
    assert sorted(t for s in schedules for t in s) == [i / 100 for i in range(10)]


def test_a_request_waits_for_the_previous_answer_and_counts_from_its_schedule() -> None:
    assert openclient.send_time(1.0, 0.5) == 1.0  # on time
    assert openclient.send_time(1.0, 1.3) == 1.3  # behind: sent when the answer is in
    # sent 0.3 s late, answered 0.01 s after its send: latency 0.31 s, not 0.01 s
    assert openclient.answered_record(1.0, 1.31, "") == (1.0, 0.31, "")
    assert openclient.answered_record(1.0, 6.0, "timeout") == (1.0, None, "timeout")
    assert openclient.not_sent_records([9.5]) == [(9.5, None, openclient.NOT_SENT)]


def test_figures_count_unsent_requests_with_a_lower_bound_and_failures_as_the_timeout() -> None:
    served = [[i / 100, 0.002, ""] for i in range(96)]
    data = {
        "rate": 100.0,
        "timeout_s": 5.0,
        "duration_s": 1.0,
        "requests": [*served, [0.96, None, "timeout"], [0.2, None, "not sent"],
                     [0.3, None, "not sent"], [0.4, None, "not sent"]],
    }  # fmt: skip
    run = balanced.scheduled_run(data)
    assert (run.scheduled, run.served, run.not_sent, run.errors) == (100, 96, 3, 1)
    assert run.rps == 96.0 and run.offered_rps == 100.0
    assert run.p50_ms == 2.0
    # the 99th of 100 sorted: the unsent ones (0.8, 0.7, 0.6 s) and the timeout (5 s) top it
    assert run.p99_ms == 800.0


def test_figures_of_a_run_that_kept_up_are_its_latencies() -> None:
    data = {"rate": 2.0, "timeout_s": 5.0, "duration_s": 1.0,
            "requests": [[0.0, 0.001, ""], [0.5, 0.003, ""]]}  # fmt: skip
    run = balanced.scheduled_run(data)
    assert (run.rps, run.p50_ms, run.p99_ms, run.not_sent) == (2.0, 1.0, 3.0, 0)


Record = openclient.Record


async def _serve(delay_s: float, close_every: int) -> tuple[asyncio.Server, list[int]]:
    """A local keep-alive server answering after ``delay_s``; every ``close_every``-th
    answer says "Connection: close". Returns the server and its accepted-connection count."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        answered = 0
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            await asyncio.sleep(delay_s)
            answered += 1
            closes = bool(close_every) and answered % close_every == 0
            writer.write(PAGE % (b"close" if closes else b"keep-alive"))
            await writer.drain()
            if closes:
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), accepted


def _run_one(
    delay_s: float, close_every: int, rate: float, duration_s: float
) -> tuple[list[Record], int]:
    """One connection's records against ``_serve``, and how many connections it opened."""

    async def main() -> tuple[list[Record], int]:
        server, accepted = await _serve(delay_s, close_every)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        start = loop.time()
        records = await openclient._keepalive_connection(
            port, openclient.connection_schedule(rate, duration_s, 1, 0),
            lambda: loop.time() - start, duration_s, 2.0, None,
        )  # fmt: skip
        server.close()
        return records, accepted[0]

    return asyncio.run(main())


def test_keep_alive_reads_answers_by_content_length_and_reopens_when_told_to_close() -> None:
    records, accepted = _run_one(0.0, 3, rate=50, duration_s=0.2)
    assert [r[2] for r in records] == [""] * 10
    assert accepted == 4  # 10 answers, every 3rd closes: connections for 1-3, 4-6, 7-9, 10


def test_a_slow_server_shows_in_latencies_from_the_schedule_and_in_unsent_requests() -> None:
    # 20 requests due over 0.2 s, each answered after 0.05 s on one connection: it falls
    # behind, so the later ones wait (counted) and those still due at the end are not sent.
    records, _ = _run_one(0.05, 0, rate=100, duration_s=0.2)
    served = [r for r in records if not r[2]]
    unsent = [r for r in records if r[2] == openclient.NOT_SENT]
    assert len(records) == 20 and 3 <= len(served) <= 6 and len(unsent) == 20 - len(served)
    assert served[-1][1] is not None and served[-1][1] > 0.1  # >> the server's 0.05 s
    assert served[0][1] is not None and served[0][1] == pytest.approx(0.05, abs=0.04)
