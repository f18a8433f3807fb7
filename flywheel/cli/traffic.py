"""`flywheel traffic`: replay sample rows through the prediction API with several API keys, at a fixed rate.

A canary is sticky per API key (flywheel/serving/routing.py), so one client with one key stays on one version and
the candidate may never answer anything; this sends from several keys, round-robin, so a rollout gets a sample on
both versions (docs/rollouts.md, "See a rollout work locally"). Keys: flywheel/cli/traffic_keys.py; rows:
traffic_rows.py; the open-loop sending: traffic_run.py. Progress goes to stderr every few seconds, the summary
(errors by status; requests, keys and latency per version that answered) to stdout at the end. Exit 0 when every
request got a 2xx answer, 1 when some did not, 2 for a configuration problem, 130 at Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from flywheel.errors import FlywheelError


def _keys(args: argparse.Namespace) -> tuple[list[str], int]:
    """The keys to send from, and how many of them were made now."""
    from flywheel.cli.apikeys import key_store
    from flywheel.cli.models import actor
    from flywheel.cli.traffic_keys import read_key_file, traffic_keys

    if args.key_file:
        return read_key_file(args.key_file), 0
    store = key_store()
    if store is None:
        raise FlywheelError("no key store to make keys in: set FLYWHEEL_API_KEYS_FILE (`make up` sets it for the "
                            "CLI) or FLYWHEEL_API_KEYS_SECRET_ID, or pass --key-file with keys you have")  # fmt: skip
    return traffic_keys(store, args.keys, actor())


def _text(result: dict[str, Any]) -> list[str]:
    rollout = result["rollout"]
    lines = [f"{result['model']} at {result['url']}: {result['sent']} requests at {result['rate']:g}/s in "
             f"{result['seconds']:.1f} s ({result['batch']} row(s) each, {result['keys']} keys)"]  # fmt: skip
    if rollout:
        lines.append(f"  {rollout['mode']} rollout of v{rollout['candidate']} against v{rollout['baseline']}, "
                     f"share {rollout['share']:g}")  # fmt: skip
    errors = "".join(f"; {kind}: {n} ({result['error_samples'][kind]})" for kind, n in result["errors"].items())
    lines.append(f"  ok {result['ok']}, errors {sum(result['errors'].values())}{errors}")
    lines.append(f"  {'version':9} {'requests':>9} {'keys':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for v, f in result["versions"].items():
        lines.append(f"  {'v' + v:9} {f['requests']:>9} {f['keys']:>5} {f['p50_ms']:>8} {f['p99_ms']:>8}")
    p50, p99 = ("-" if x is None else x for x in (result["p50_ms"], result["p99_ms"]))
    lines.append(f"  {'all':9} {result['ok']:>9} {'':>5} {p50:>8} {p99:>8}")
    if rollout and rollout["mode"] == "canary" and str(rollout["candidate"]) not in result["versions"]:
        lines.append(f"  no key landed on the candidate (each key does with probability {rollout['share']:g}): "
                     "run with more --keys")  # fmt: skip
    return lines


def cmd_traffic(args: argparse.Namespace) -> int:
    import httpx

    from flywheel.cli.traffic_keys import wait_for_keys
    from flywheel.cli.traffic_rows import rows_from_csv, sample_rows
    from flywheel.cli.traffic_run import Plan, Tally, api_get, describe_model, run, say
    from flywheel.schema import Schema

    url = (args.url or os.environ.get("FLYWHEEL_API_URL") or "").rstrip("/")
    if not url:
        raise FlywheelError("no API URL: pass --url or set FLYWHEEL_API_URL (`make up` sets it for the CLI)")
    for name in ("rate", "duration", "batch", "keys", "concurrency", "timeout", "every"):
        if getattr(args, name) <= 0:
            raise FlywheelError(f"--{name} must be above 0")
    with httpx.Client(timeout=args.timeout) as client:
        if api_get(client, url, "/healthz", None).status_code != 200:  # reachable before any key is made
            raise FlywheelError(f"{url}/healthz does not answer 200: is {url} the prediction API?")
        keys, new = _keys(args)
        wait_for_keys(client, url, keys, new, args.wait)
        described = describe_model(client, url, args.model, keys[0])
    model, version = described["model"], described["version"]
    try:
        schema = Schema.model_validate(described["manifest"]["schema"])
    except (KeyError, ValueError) as e:
        raise FlywheelError(f"model {model!r} at {url} describes no usable schema: {e}") from e
    rows = rows_from_csv(schema, args.rows_from) if args.rows_from else sample_rows(schema, seed=args.seed)
    rollout = described.get("rollout")
    on_trial = f"; {rollout['mode']} of v{rollout['candidate']} at share {rollout['share']:g}" if rollout else ""
    say(f"{model}: v{version} in production{on_trial}; sending {args.rate:g} requests/s for {args.duration:g} s "
        f"with {len(keys)} keys to {url}")  # fmt: skip
    plan = Plan(url, model, keys, rows, args.rate, args.duration, args.batch, args.timeout, args.concurrency,
                args.every, args.seed)  # fmt: skip
    tally = Tally()
    began = time.monotonic()
    try:
        seconds = run(plan, tally)
        interrupted = False
    except KeyboardInterrupt:  # Ctrl-C: the summary of what was sent so far
        seconds, interrupted = time.monotonic() - began, True
        unanswered = tally.sent - tally.ok - sum(tally.errors.values())
        if unanswered:
            tally.errors["interrupted"] += unanswered
            tally.samples["interrupted"] = "in flight at Ctrl-C"
    result = {"model": model, "url": url, "rate": args.rate, "seconds": round(seconds, 3), "batch": args.batch,
              "keys": len(keys), "rollout": rollout, **tally.summary()}  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else "\n".join(_text(result)), flush=True)
    failed = result["sent"] - result["ok"]
    if failed and not interrupted:
        say(f"error: {failed} of {result['sent']} requests got no answer: "
            + ", ".join(f"{kind} x{n}" for kind, n in result["errors"].items()))  # fmt: skip
    return 130 if interrupted else 1 if failed else 0


def add_parsers(add: Any) -> None:
    p = add("traffic", cmd_traffic, "Send sample rows of a model through the prediction API, at a fixed rate, from "
            "several API keys: what a canary needs to see both versions answer (it is sticky per key), and a simple "
            "load test. Prints progress every few seconds and a summary per answering version; exit 1 if any "
            "request got no 2xx answer. See docs/rollouts.md, 'See a rollout work locally'.")  # fmt: skip
    p.add_argument("--model", help="which model (default: the API's default model)")
    p.add_argument("--url", help="the API (default: $FLYWHEEL_API_URL, which `make up` sets for the CLI)")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second, sent on schedule (default 20)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to send for (default 60)")
    p.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--keys", type=int, default=10, metavar="N",
                      help="send from N client keys named traffic-1..N in the key store ($FLYWHEEL_API_KEYS_FILE or "
                           "_SECRET_ID), made on first use and reused after (traffic-<you>-i where someone else's key "
                           "holds traffic-i); their plain values are kept in a 0600 file beside a file store, or in "
                           "$XDG_STATE_HOME/flywheel (~/.local/state/flywheel) for a secret (default 10)")  # fmt: skip
    keys.add_argument("--key-file", metavar="FILE", help="send from the keys in this file instead (one per line)")
    p.add_argument("--rows-from", metavar="FILE.csv",
                   help="replay this CSV's feature columns (default: rows made for the model's schema)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the generated rows and of the draws (default 0)")
    p.add_argument("--wait", type=float, default=180.0,
                   help="seconds to wait for the API to accept new keys, which work once the replicas reload the key "
                        "store (every FLYWHEEL_API_KEYS_REFRESH_SECONDS) (default 180)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a request may take (default 10)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most (default 64)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
