"""A consumer of remote jobs for the ``consumers`` benchmark: one process, one keep-alive
``http.client`` connection, the standard library alone, as a consumer in any language
would be.

    python benchmarks/consumer_client.py --port P --token T --action A [--limit 50]

Each loop claims up to ``--limit`` jobs and completes them all with one batch complete
(``POST /@jobs/@complete``); it stops at the first claim that answers none (after
waiting ``--wait`` seconds for one) and prints, as JSON, what it did and the seconds it
spent in claims and in completes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--action", required=True)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--wait", type=float, default=0.5)
    args = parser.parse_args(argv)
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
    headers = {
        "Authorization": f"Bearer {args.token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    claim = json.dumps({"actions": [args.action], "limit": args.limit, "wait": args.wait})
    done = claims = 0
    claim_s = complete_s = 0.0
    errors: list[str] = []
    while True:
        t0 = time.perf_counter()
        conn.request("POST", "/@jobs/@claim", claim, headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            errors.append(f"claim {response.status}: {body[:200]!r}")
            break
        jobs = json.loads(body)
        if not jobs:
            break  # the last claim, which waited for nothing, is not counted
        claim_s += time.perf_counter() - t0
        claims += 1
        t0 = time.perf_counter()
        report = json.dumps(
            [{"uuid": job["uuid"], "lease": job["lease"]["id"], "result": {}} for job in jobs]
        )
        conn.request("POST", "/@jobs/@complete", report, headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            errors.append(f"complete {response.status}: {answer[:200]!r}")
        else:
            for outcome in json.loads(answer):
                if outcome.get("completed"):
                    done += 1
                else:
                    errors.append(f"complete {outcome['uuid']}: {outcome.get('error')!r}")
        complete_s += time.perf_counter() - t0
    conn.close()
    print(
        json.dumps(
            {
                "completed": done,
                "claims": claims,
                "claim_s": claim_s,
                "complete_s": complete_s,
                "errors": errors[:5],
            }
        )
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
