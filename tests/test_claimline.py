"""ClaimLine: threads that wait to claim share one claim, and every item claimed reaches a thread."""
from __future__ import annotations

import threading

from crmconnector.sync.claimline import ClaimLine
from tests.waiting import wait_for


class HeldClaims:
    """A claim function that records each claim's limit; the first claim waits until released."""

    def __init__(self, due: list[str]):
        self.due = due
        self.limits: list[int] = []
        self.release = threading.Event()

    def __call__(self, limit: int) -> list[str]:
        self.limits.append(limit)
        if len(self.limits) == 1:
            assert self.release.wait(5)
        taken, self.due[:limit] = self.due[:limit], []
        return taken


def _run_threads(line: ClaimLine, claims: HeldClaims, count: int) -> list[str | None]:
    got: list[str | None] = []
    first = threading.Thread(target=lambda: got.append(line.next(claims)))
    first.start()
    wait_for(lambda: claims.limits)  # the first thread is inside its claim
    others = [threading.Thread(target=lambda: got.append(line.next(claims))) for _ in range(count - 1)]
    for thread in others:
        thread.start()
    wait_for(lambda: line._waiting >= count - 1)
    claims.release.set()
    for thread in [first, *others]:
        thread.join(5)
    return got


def test_threads_that_wait_during_a_claim_share_the_next_one():
    line: ClaimLine[str] = ClaimLine()
    claims = HeldClaims(["a", "b", "c", "d"])
    got = _run_threads(line, claims, 4)
    # The first claimed alone; the three that lined up meanwhile were served by one claim of three.
    assert claims.limits == [1, 3]
    assert sorted(got) == ["a", "b", "c", "d"]
    assert not line._handed


def test_a_claim_that_comes_back_short_sends_the_threads_that_waited_for_it_away():
    line: ClaimLine[str] = ClaimLine()
    claims = HeldClaims(["a", "b"])
    got = _run_threads(line, claims, 4)
    # The claim of three saw everything due when those threads lined up: none of them claims again.
    assert claims.limits == [1, 3]
    assert sorted(g for g in got if g) == ["a", "b"] and got.count(None) == 2
    assert not line._handed


def test_a_thread_that_lined_up_after_a_claim_began_claims_again_when_it_came_back_short():
    line: ClaimLine[str] = ClaimLine()
    got: list[str | None] = []
    inside, release = threading.Event(), threading.Event()
    due = ["a"]

    def claim(limit: int) -> list[str]:
        if not inside.is_set():
            inside.set()
            assert release.wait(5)
            return []  # this claim's look came before the late item was due
        taken, due[:limit] = due[:limit], []
        return taken
    first = threading.Thread(target=lambda: got.append(line.next(claim)))
    first.start()
    assert inside.wait(5)
    late = threading.Thread(target=lambda: got.append(line.next(claim)))
    late.start()
    wait_for(lambda: line._waiting >= 1)
    release.set()
    first.join(5)
    late.join(5)
    assert got.count("a") == 1 and got.count(None) == 1  # the late thread claimed, and found its item


def test_a_failed_claim_raises_in_its_thread_and_the_threads_in_line_claim_for_themselves():
    line: ClaimLine[str] = ClaimLine()
    inside, release = threading.Event(), threading.Event()
    limits: list[int] = []
    outcomes: list[object] = []

    def claim(limit: int) -> list[str]:
        limits.append(limit)
        if len(limits) == 1:
            inside.set()
            assert release.wait(5)
            return ["x"]
        if len(limits) == 2:
            raise ConnectionError("database away")
        return ["a"]

    def take() -> None:
        try:
            outcomes.append(line.next(claim))
        except ConnectionError as exc:
            outcomes.append(exc)
    threads = [threading.Thread(target=take) for _ in range(3)]
    threads[0].start()
    assert inside.wait(5)
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: line._waiting >= 2)
    release.set()
    for thread in threads:
        thread.join(5)
    # The second claim (for both threads in line) failed in one of them: the other claimed on its own.
    assert limits == [1, 2, 1]
    assert sorted(map(str, outcomes)) == ["a", "database away", "x"]
    assert line.next(lambda limit: []) is None
