"""A consumer of remote jobs for the ``consumers`` benchmark, made with the Python
client's :class:`nick_jobs_client.Consumer`, as a user's consumer is: one process whose
handler does nothing, ``--concurrency`` jobs at a time.

    python benchmarks/python_consumer.py --url U --token T --action A --jobs N

It stops once ``N`` jobs have ended and prints, as JSON, how each ended and how many
requests of each kind it sent.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from typing import Any

from nick_jobs_client import Client, Consumer


class CountingClient(Client):
    """A client that counts its requests by method and path's last part."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._count_lock:
            self.sent[f"{method} {path.rsplit('/', 1)[-1]}"] += 1
        return super().request(method, path, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--action", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    client = CountingClient(args.url, token=args.token)
    ended: Counter[str] = Counter()
    lock = threading.Lock()
    consumer: Consumer

    def on_end(job: dict[str, Any], outcome: str, message: str | None) -> None:
        with lock:
            ended[outcome] += 1
            if sum(ended.values()) >= args.jobs:
                consumer.stop()

    consumer = Consumer(
        client,
        [args.action],
        lambda context: {},
        concurrency=args.concurrency,
        wait=1.0,
        on_end=on_end,
    )
    consumer.run()
    print(json.dumps({"ended": dict(ended), "requests": dict(client.sent)}))
    return 0 if ended.get("completed") == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
