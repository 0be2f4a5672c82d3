"""SQLite writers queue on a lock held from BEGIN IMMEDIATE to COMMIT or ROLLBACK: a thread lock in the
process and an flock on `<database>.writer-lock` that other processes wait on."""
from __future__ import annotations

import fcntl
import os

import pytest
from sqlalchemy import text

from crmconnector.store import make_engine, reading


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    engine.dispose()


@pytest.fixture
def other_process_fd(tmp_path):
    """An open file description of the lock file of our own, as another process would have."""
    fd = os.open(tmp_path / "state.db.writer-lock", os.O_RDWR)
    yield fd
    os.close(fd)


def _free(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_a_write_transaction_holds_the_file_lock_until_it_commits(engine, other_process_fd):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert not _free(other_process_fd)
    assert _free(other_process_fd)


def test_a_rolled_back_write_transaction_releases_the_file_lock(engine, other_process_fd):
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("the event was refused")
    assert _free(other_process_fd)
    with reading(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0


def test_reads_do_not_take_the_file_lock(engine, other_process_fd):
    with reading(engine) as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
        assert _free(other_process_fd)


def test_a_writer_waits_while_another_process_holds_the_lock(engine, other_process_fd):
    import threading

    fcntl.flock(other_process_fd, fcntl.LOCK_EX)
    done = threading.Event()

    def write() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (3)"))
        done.set()
    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.3)  # still waiting for the other process
    fcntl.flock(other_process_fd, fcntl.LOCK_UN)
    assert done.wait(10)
    writer.join()
