"""Wake-ups for agents' streams across the processes that share one SQLite database file.

Same interface as `notify.Wakeup`. The worker processes of `serve` (and other connectors on the same
file) each bind a Unix datagram socket in a folder beside the database. After a commit that wrote console
events, a sender thread sends one byte to every other socket there (bursts collapse into one round per
25 ms, as PostgreSQL's NOTIFYs do), and each process's listener thread wakes its own streams when a byte
arrives. A socket whose process is gone (killed without closing) is removed by the first sender that
finds nobody listening on it. Listeners always re-read the database, so a lost byte only delays an update
until the stream's next poll.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path

from crmconnector.notify_pg import NOTIFY_SECONDS, POLL_SECONDS, RelayedWakeup

log = logging.getLogger(__name__)
MAX_SOCKET_PATH = 100  # bytes: Linux allows 107 for a Unix socket's path


def wakeup_folder(database: str) -> Path:
    """The folder of the sockets of one database file: beside it, or, when that path would be too long
    for a socket, a private folder in the temporary directory named after the file."""
    path = Path(database).resolve()
    beside = path.with_name(path.name + ".wakeups")
    if len(os.fsencode(beside)) + 40 <= MAX_SOCKET_PATH:  # room for "/<pid>-<random>.sock"
        return beside
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"crmconnector-{digest}.wakeups"


class SocketWakeup(RelayedWakeup):
    """Binds a socket in `folder`, wakes the other processes' sockets there after commits."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.sock"
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inbox.bind(str(self.path))
        self._inbox.settimeout(POLL_SECONDS)
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.setblocking(False)
        super().__init__("wakeup")

    def close(self) -> None:
        super().close()
        self.path.unlink(missing_ok=True)
        self._inbox.close()
        self._outbox.close()

    # -- threads ---------------------------------------------------------------------------------

    def _listen_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._inbox.recv(64)
            except TimeoutError:
                continue
            except OSError as exc:  # the socket was closed under us: only at close()
                if not self._closed.is_set():
                    log.warning("console wake-ups from other processes stopped: %s", exc)
                return
            self._local.notify()

    def _send_loop(self) -> None:
        while True:
            self._pending.wait()
            if self._closed.is_set():
                return
            self._pending.clear()
            self.send_round()
            # What commits meanwhile goes out in the next round: every process is woken by each one.
            self._closed.wait(NOTIFY_SECONDS)

    def send_round(self) -> int:
        """One byte to every other process's socket; the number of processes reached."""
        reached = 0
        try:
            peers = [entry.path for entry in os.scandir(self.folder) if entry.name.endswith(".sock")]
        except OSError:
            return 0  # the folder was removed: nobody else can be listening
        for peer in peers:
            if peer == str(self.path):
                continue
            try:
                self._outbox.sendto(b"!", peer)
                reached += 1
            except BlockingIOError:
                reached += 1  # its queue is full: it has wake-ups waiting already
            except (ConnectionRefusedError, FileNotFoundError):
                Path(peer).unlink(missing_ok=True)  # nobody listens there any more
            except OSError:
                pass
        return reached
