#!/usr/bin/env python3
"""Send a known set of calls to a Signalbox server with Segment's Python library.

Usage: send.py --host URL --write-key KEY --run RUN [--count N] [--batch-size N] [--gzip]

Message i (0-based) of the run is built from this recipe, which the end-to-end tests in
crates/signalbox/tests/e2e/clients.rs repeat to check what the server stored:

  kind         identify, track, page, screen, group, alias (i modulo 6)
  messageId    "{run}-{i}"
  timestamp    2024-02-29T23:59:00Z + i seconds + (7 * i mod 1000) milliseconds
  userId       "user-{i}" (track calls are anonymous and carry no userId)
  anonymousId  "anon-{i}" (alias calls carry none)
  context      {"ip": "203.0.113.7", "locale": "fr-FR",
                "campaign": {"name": "spring-{i}", "source": "newsletter"}}
  integrations {"Mixpanel": false, "Klaviyo": {"listId": "Xy12"}}
  identify     traits {"email": "user{i}@example.com", "name": "Zoë Ünicode {i}", "plan": "pro",
                       "logins": i, "address": {"city": "Kraków", "postalCode": "31-000"}}
  track        event "Order Completed", properties {"order_id": "order-{i}", "revenue": 19.99,
               "currency": "EUR", "products": [{"sku": "sku-{i}", "quantity": 2}],
               "note": "ünïcødé ✓ \"quoted\""}
  page         category "Docs", name "Pricing", properties {"path": "/pricing", "title": "Pricing {i}"}
  screen       category "Main", name "Home", properties {"tab": "tab-{i}"}
  group        groupId "group-{i}", traits {"name": "Acme {i}", "employees": 42, "industry": "Retail"}
  alias        previousId "anon-{i}"

Prints one JSON line, {"library", "version", "messageIds"}, once every call was flushed. Any
error the library reports makes it exit non-zero.
"""

import argparse
import json
import sys
import threading
from datetime import datetime, timedelta, timezone

import segment.analytics as analytics
from segment.analytics.version import VERSION

KINDS = ["identify", "track", "page", "screen", "group", "alias"]
BASE_TIME = datetime(2024, 2, 29, 23, 59, 0, tzinfo=timezone.utc)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--run", required=True, help="prefix of every messageId")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--gzip", action="store_true")
    return parser.parse_args()


def send(client, run, i):
    kind = KINDS[i % len(KINDS)]
    common = {
        "message_id": f"{run}-{i}",
        "timestamp": BASE_TIME + timedelta(seconds=i, milliseconds=(7 * i) % 1000),
        "context": {
            "ip": "203.0.113.7",
            "locale": "fr-FR",
            "campaign": {"name": f"spring-{i}", "source": "newsletter"},
        },
        "integrations": {"Mixpanel": False, "Klaviyo": {"listId": "Xy12"}},
    }
    user_id = f"user-{i}"
    anonymous_id = f"anon-{i}"
    if kind == "identify":
        traits = {
            "email": f"user{i}@example.com",
            "name": f"Zoë Ünicode {i}",
            "plan": "pro",
            "logins": i,
            "address": {"city": "Kraków", "postalCode": "31-000"},
        }
        return client.identify(user_id, traits, anonymous_id=anonymous_id, **common)
    if kind == "track":
        properties = {
            "order_id": f"order-{i}",
            "revenue": 19.99,
            "currency": "EUR",
            "products": [{"sku": f"sku-{i}", "quantity": 2}],
            "note": 'ünïcødé ✓ "quoted"',
        }
        return client.track(
            None, "Order Completed", properties, anonymous_id=anonymous_id, **common
        )
    if kind == "page":
        properties = {"path": "/pricing", "title": f"Pricing {i}"}
        return client.page(
            user_id, "Docs", "Pricing", properties, anonymous_id=anonymous_id, **common
        )
    if kind == "screen":
        properties = {"tab": f"tab-{i}"}
        return client.screen(
            user_id, "Main", "Home", properties, anonymous_id=anonymous_id, **common
        )
    if kind == "group":
        traits = {"name": f"Acme {i}", "employees": 42, "industry": "Retail"}
        return client.group(
            user_id, f"group-{i}", traits, anonymous_id=anonymous_id, **common
        )
    return client.alias(anonymous_id, user_id, **common)


def main():
    args = parse_args()
    errors = []
    lock = threading.Lock()

    def on_error(error, batch):
        with lock:
            errors.append(f"{error!r} ({len(batch)} messages)")

    client = analytics.Client(
        args.write_key,
        host=args.host,
        on_error=on_error,
        gzip=args.gzip,
        max_retries=3,
        timeout=10,
        upload_size=args.batch_size,
        # A failed upload must be reported, not retried for hours.
        max_total_backoff_duration=30,
        max_rate_limit_duration=30,
    )
    message_ids = []
    for i in range(args.count):
        queued, message = send(client, args.run, i)
        if not queued:
            errors.append(f"message {i} was not queued")
        message_ids.append(message["messageId"])
    client.shutdown()

    if errors:
        for error in errors:
            print(f"send.py: the library reported: {error}", file=sys.stderr)
        sys.exit(1)
    print(
        json.dumps(
            {"library": "analytics-python", "version": VERSION, "messageIds": message_ids}
        )
    )


if __name__ == "__main__":
    main()
