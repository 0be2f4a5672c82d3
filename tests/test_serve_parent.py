"""A `crmconnector serve` whose main process is killed with SIGKILL leaves no worker behind: the port is
free again and the instance starts again."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import requests

from tests.instances import Instance
from tests.pg import free_port


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_workers_stop_when_the_main_process_is_killed_and_the_instance_starts_again(tmp_path: Path) -> None:
    port = free_port()
    database = f"sqlite:///{tmp_path / 'state.db'}"
    server = Instance(database, tmp_path / "one", port, workers=2).start()
    main, workers = server.pids()[0], server.pids()[1:]
    assert len(workers) == 2
    try:
        os.kill(main, signal.SIGKILL)
        server.process.wait(10)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), server.log_tail()
        again = Instance(database, tmp_path / "two", port).start()
        try:
            assert requests.get(f"{again.url}/healthz", timeout=10).status_code == 200
        finally:
            again.stop()
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
