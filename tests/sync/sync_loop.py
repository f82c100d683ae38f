#!/usr/bin/env python3
"""Two Signalbox instances wired in a loop, driven by Segment's and Klaviyo's own libraries.

Usage:
  sync_loop.py feed  --a URL --a-write-key KEY --a-api-key pk_... --b URL --b-write-key KEY
                     --run RUN [--seed N] [--ops N]
  sync_loop.py check --a URL --a-api-key pk_... --b URL --b-api-key pk_... --fed FILE

`feed` makes a random (seeded) mix of calls: identify and track on A and on B through
segment-analytics-python, and profile upserts on A through klaviyo-api. Every trait and
property it sets carries `origin` (`segment-a`, `segment-b`, `api-a`) so the caller can tell
where a value came from. It prints one JSON line: what it sent, per email.

`check` reads both sides through klaviyo-api once deliveries have settled: every email has
exactly one profile on A (the Segment calls of B reach A through B's `klaviyo` destination),
B has exactly one profile for each email its own Segment source named and none for the others
(the reverse sync's calls carry integrations {"Klaviyo": false}), and each track sent to B
appears once on A. Any mismatch raises and the script exits non-zero.
"""

import argparse
import json
import random
import sys
import time

import segment.analytics as segment_analytics
from klaviyo_api import KlaviyoAPI

PEOPLE = 24
API_ONLY = 6


class Mismatch(AssertionError):
    pass


def check(condition, message, *details):
    if not condition:
        raise Mismatch(message + ("".join(f"\n  {d!r}" for d in details) if details else ""))


def email(kind, k, run):
    return f"{kind}{k}.{run}@example.com"


def segment_client(host, write_key, errors):
    return segment_analytics.Client(
        write_key,
        host=host,
        on_error=lambda error, batch: errors.append(repr(error)),
        max_retries=3,
        upload_size=20,
    )


def feed(args):
    rng = random.Random(args.seed)
    errors = []
    seg_a = segment_client(args.a, args.a_write_key, errors)
    seg_b = segment_client(args.b, args.b_write_key, errors)
    klaviyo_a = KlaviyoAPI(args.a_api_key, test_host=args.a, max_retries=3, max_delay=2)
    fed = {
        "segment_a": {},  # email -> identifies sent to A
        "segment_b": {},  # email -> identifies sent to B
        "api_a": {},  # email -> upserts through the API of A
        "tracks_a": {},  # email -> tracks sent to A
        "tracks_b": {},  # email -> tracks sent to B
    }

    def bump(part, address):
        fed[part][address] = fed[part].get(address, 0) + 1

    for step in range(args.ops):
        op = rng.choice(["identify_a", "identify_a", "track_a", "identify_b", "track_b", "track_b", "api_a", "api_only"])
        k = rng.randrange(PEOPLE)
        person = email("p", k, args.run)
        if op == "identify_a":
            seg_a.identify(f"ua-{k}-{args.run}", {"email": person, "firstName": f"A{step}", "origin": "segment-a", "step": step})
            bump("segment_a", person)
        elif op == "track_a" and person in fed["segment_a"]:
            seg_a.track(f"ua-{k}-{args.run}", "Sync Viewed", {"origin": "segment-a", "step": step},
                        context={"traits": {"email": person}})
            bump("tracks_a", person)
        elif op == "identify_b":
            seg_b.identify(f"ub-{k}-{args.run}", {"email": person, "lastName": f"B{step}", "origin": "segment-b", "step": step})
            bump("segment_b", person)
        elif op == "track_b" and person in fed["segment_b"]:
            seg_b.track(f"ub-{k}-{args.run}", "Sync Ordered", {"origin": "segment-b", "step": step, "order_id": f"o-{step}-{args.run}"},
                        context={"traits": {"email": person}})
            bump("tracks_b", person)
        elif op in ("api_a", "api_only"):
            if op == "api_only":
                person = email("api", rng.randrange(API_ONLY), args.run)
            klaviyo_a.Profiles.create_or_update_profile(
                {"data": {"type": "profile", "attributes": {
                    "email": person,
                    "first_name": f"Api{step}",
                    "properties": {"origin": "api-a", "step": step},
                }}}
            )
            bump("api_a", person)
    for client in (seg_a, seg_b):
        client.flush()
        client.join()
    check(not errors, "the Segment library reported errors", errors)
    print(json.dumps(fed), flush=True)


def profiles_by_email(klaviyo, address):
    return klaviyo.Profiles.get_profiles(filter=f'equals(email,"{address}")').data


def metric_ids(klaviyo, name):
    return {m.id for m in klaviyo.Metrics.get_metrics().data if m.attributes.name == name}


def events_of(klaviyo, profile_id, metrics):
    """How many events of the given metrics a profile has, following links.next."""
    count = 0
    cursor = None
    while True:
        kwargs = {"filter": f'equals(profile_id,"{profile_id}")', "page_size": 200}
        page = klaviyo.Events.get_events(page_cursor=cursor, **kwargs) if cursor else klaviyo.Events.get_events(**kwargs)
        count += sum(1 for e in page.data if e.relationships.metric.data.id in metrics)
        cursor = page.links.next if page.links else None
        if not cursor:
            return count


def check_sides(args):
    with open(args.fed) as f:
        fed = json.load(f)
    klaviyo_a = KlaviyoAPI(args.a_api_key, test_host=args.a, max_retries=3, max_delay=2)
    klaviyo_b = KlaviyoAPI(args.b_api_key, test_host=args.b, max_retries=3, max_delay=2)
    everyone = set(fed["segment_a"]) | set(fed["segment_b"]) | set(fed["api_a"])
    profile_of = {}
    for address in sorted(everyone):
        on_a = profiles_by_email(klaviyo_a, address)
        check(len(on_a) == 1, f"{address}: one profile on A", [p.id for p in on_a])
        profile_of[address] = on_a[0].id
        on_b = profiles_by_email(klaviyo_b, address)
        expected_b = 1 if address in fed["segment_b"] else 0
        check(len(on_b) == expected_b, f"{address}: {expected_b} profile(s) on B", [p.id for p in on_b])
    ordered = metric_ids(klaviyo_a, "Sync Ordered")
    for address, sent in fed["tracks_b"].items():
        got = events_of(klaviyo_a, profile_of[address], ordered)
        check(got == sent, f"{address}: each track sent to B is one event on A", sent, got)
    viewed = metric_ids(klaviyo_a, "Sync Viewed")
    for address, sent in fed["tracks_a"].items():
        got = events_of(klaviyo_a, profile_of[address], viewed)
        check(got == sent, f"{address}: each track sent to A is one event on A", sent, got)
    print(json.dumps({"emails": len(everyone), "profiles_a": len(profile_of)}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("feed")
    f.add_argument("--a", required=True)
    f.add_argument("--a-write-key", required=True)
    f.add_argument("--a-api-key", required=True)
    f.add_argument("--b", required=True)
    f.add_argument("--b-write-key", required=True)
    f.add_argument("--run", required=True)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--ops", type=int, default=300)
    c = sub.add_parser("check")
    c.add_argument("--a", required=True)
    c.add_argument("--a-api-key", required=True)
    c.add_argument("--b", required=True)
    c.add_argument("--b-api-key", required=True)
    c.add_argument("--fed", required=True)
    args = parser.parse_args()
    try:
        if args.command == "feed":
            feed(args)
        else:
            check_sides(args)
    except Mismatch as err:
        print(f"MISMATCH: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
