#!/usr/bin/env python3
"""Send Segment calls with Segment's Python library, as a site's backend would.

Usage: send_calls.py --host URL --write-key KEY --calls FILE

FILE holds a JSON array of calls: {"type": "identify", "userId", "traits"} or
{"type": "track", "userId", "event", "properties"}, each with optional "integrations". Exits non-zero if the library reports an
error; prints "sent N" once every call was flushed.
"""

import argparse
import json
import sys

import segment.analytics as analytics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--calls", required=True)
    args = parser.parse_args()
    with open(args.calls, encoding="utf-8") as handle:
        calls = json.load(handle)
    errors = []
    client = analytics.Client(
        args.write_key, host=args.host, max_retries=2, sync_mode=True,
        on_error=lambda error, batch: errors.append(repr(error)))
    for call in calls:
        kind = call["type"]
        if kind == "identify":
            client.identify(call["userId"], call.get("traits", {}),
                            integrations=call.get("integrations"))
        elif kind == "track":
            client.track(call["userId"], call["event"], call.get("properties", {}),
                         integrations=call.get("integrations"))
        else:
            sys.exit(f"unsupported call type {kind!r}")
    client.flush()
    if errors:
        sys.exit("the Segment library reported errors: " + "; ".join(errors))
    print(f"sent {len(calls)}", flush=True)


if __name__ == "__main__":
    main()
