"""Router worker processes started by a test (run_worker, as WorkerProcess starts it), woken and
stopped through their pipes, each saying when it runs."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from rulesengine.runtime.worker import run_worker


def _run(config_path: str, wake, ready: str) -> None:
    Path(ready).write_text(str(os.getpid()))
    run_worker(config_path, wake, 0)


class Workers:
    """`count` worker processes on one configuration (one storage folder, one journal)."""

    def __init__(self, config_path: Path, count: int, folder: Path):
        context = multiprocessing.get_context("spawn")
        self.processes, self._pipes, self.ready = [], [], []
        for number in range(count):
            reader, writer = context.Pipe(duplex=False)
            ready = folder / f"worker-{number}.ready"
            process = context.Process(target=_run, args=(str(config_path), reader, str(ready)), daemon=True)
            process.start()
            reader.close()
            self.processes.append(process)
            self._pipes.append(writer)
            self.ready.append(ready)

    def running(self) -> bool:
        return all(path.exists() for path in self.ready)

    def wake(self) -> None:
        for pipe in self._pipes:
            os.write(pipe.fileno(), b"w")

    def stop(self, timeout: float = 60) -> list[int | None]:
        for pipe in self._pipes:
            try:
                os.write(pipe.fileno(), b"s")
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout)
            if process.exitcode is None:
                process.kill()
                process.join(10)
        for pipe in self._pipes:
            pipe.close()
        return [process.exitcode for process in self.processes]
