"""`signalbox migrate` end to end: put every kind of data into a server with Segment's Python
library and Klaviyo's Python SDK, and read it back with the SDK before and after the copy.

Usage:
  migrate_e2e.py fill --base URL --api-key pk_... --write-key KEY
  migrate_e2e.py snapshot --base URL --api-key pk_...     (prints one JSON object)
  migrate_e2e.py send --base URL --write-key KEY --user ID  (one identify and one track)
"""

import argparse
import json
import sys
import time

import segment.analytics as analytics
from klaviyo_api import KlaviyoAPI

DICT = {"USE_DICTIONARY_FOR_RESPONSE_DATA": True}
WAIT_SECONDS = 30
METRIC = "Migrated Order"


class Mismatch(AssertionError):
    pass


def wait_for(what, probe):
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Mismatch(f"timed out after {WAIT_SECONDS}s waiting for {what}")
        time.sleep(0.2)


def segment_send(base, write_key, user):
    """An identify and a track through Segment's library; exits non-zero on any error."""
    errors = []
    analytics.write_key = write_key
    analytics.host = base
    analytics.sync_mode = True
    analytics.on_error = lambda error, items: errors.append(repr(error))
    analytics.identify(user, {"email": f"{user}@example.com", "plan": "pro"})
    analytics.track(user, METRIC, {"value": 5, "item": "tea"})
    analytics.flush()
    if errors:
        raise Mismatch(f"the Segment library reported {errors}")


def pages(call, **kwargs):
    """Every item of a paged SDK read (dictionary responses)."""
    items, cursor = [], None
    for _ in range(100):
        if cursor:
            kwargs["page_cursor"] = cursor
        page = call(options=DICT, **kwargs)
        items.extend(page["data"])
        cursor = (page.get("links") or {}).get("next")
        if not cursor:
            return items
    raise Mismatch("paging did not end")


def metric_id(klaviyo, name):
    return wait_for(f"the metric {name}", lambda: next(
        (m["id"] for m in pages(klaviyo.Metrics.get_metrics) if m["attributes"]["name"] == name),
        None,
    ))


def fill(args):
    segment_send(args.base, args.write_key, "mig-1")
    klaviyo = KlaviyoAPI(args.api_key, test_host=args.base, max_retries=2, max_delay=2)
    metric = metric_id(klaviyo, METRIC)

    # A live flow on the metric, and an event that starts a run (parked at its delay).
    flow = klaviyo.Flows.create_flow({"data": {"type": "flow", "attributes": {
        "name": "Migrated follow-up",
        "definition": {
            "triggers": [{"type": "metric", "id": metric}],
            "entry_action_id": "wait",
            "actions": [{"temporary_id": "wait", "type": "time-delay",
                         "data": {"unit": "days", "value": 3}, "links": {"next": None}}],
        }}}}, options=DICT)["data"]["id"]
    klaviyo.Flows.update_flow(flow, {"data": {"type": "flow", "id": flow,
                                              "attributes": {"status": "live"}}})
    segment_send(args.base, args.write_key, "mig-2")

    # A list with a member who consented.
    news = klaviyo.Lists.create_list(
        {"data": {"type": "list", "attributes": {"name": "Migrated news"}}}).data.id
    klaviyo.Profiles.bulk_subscribe_profiles({"data": {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {"custom_source": "migration", "profiles": {"data": [
            {"type": "profile", "attributes": {"email": "mig-1@example.com", "subscriptions": {
                "email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}},
        "relationships": {"list": {"data": {"type": "list", "id": news}}}}})
    wait_for("the list member", lambda: pages(klaviyo.Lists.get_profiles_for_list, id=news))

    # A segment of the profiles with the metric, once its backfill is done.
    segment = klaviyo.Segments.create_segment({"data": {"type": "segment", "attributes": {
        "name": "Migrated buyers", "definition": {"condition_groups": [{"conditions": [{
            "type": "profile-metric", "metric_id": metric, "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "alltime"},
        }]}]}}}}, options=DICT)["data"]["id"]
    wait_for("the segment's members", lambda: len(
        pages(klaviyo.Segments.get_profiles_for_segment, id=segment)) == 2)

    klaviyo.Templates.create_template({"data": {"type": "template", "attributes": {
        "name": "Migrated welcome", "editor_type": "CODE", "html": "<p>Hello {{ first_name }}</p>"}}})
    print("ok", flush=True)


def snapshot(args):
    klaviyo = KlaviyoAPI(args.api_key, test_host=args.base, max_retries=2, max_delay=2)
    profiles = sorted(
        (p["id"], p["attributes"].get("email"), json.dumps(p["attributes"].get("properties"), sort_keys=True))
        for p in pages(klaviyo.Profiles.get_profiles)
    )
    metrics = {m["id"]: m["attributes"]["name"] for m in pages(klaviyo.Metrics.get_metrics)}
    events = sorted(
        (e["id"], metrics.get(e["relationships"]["metric"]["data"]["id"]),
         e["relationships"]["profile"]["data"]["id"], e["attributes"]["datetime"])
        for e in pages(klaviyo.Events.get_events, include=["metric", "profile"])
    )
    lists = []
    for item in pages(klaviyo.Lists.get_lists):
        members = pages(klaviyo.Lists.get_profiles_for_list, id=item["id"],
                        additional_fields_profile=["subscriptions"])
        lists.append((item["id"], item["attributes"]["name"], sorted(
            (m["id"], m["attributes"]["subscriptions"]["email"]["marketing"]["consent"])
            for m in members)))
    segments = []
    for item in pages(klaviyo.Segments.get_segments):
        members = pages(klaviyo.Segments.get_profiles_for_segment, id=item["id"])
        segments.append((item["id"], item["attributes"]["name"], sorted(m["id"] for m in members)))
    templates = sorted((t["id"], t["attributes"]["name"], t["attributes"]["html"])
                       for t in pages(klaviyo.Templates.get_templates))
    flows = sorted((f["id"], f["attributes"]["name"], f["attributes"]["status"])
                   for f in pages(klaviyo.Flows.get_flows))
    print(json.dumps({
        "profiles": profiles, "events": events, "lists": sorted(lists),
        "segments": sorted(segments), "templates": templates, "flows": flows,
    }, sort_keys=True), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["fill", "snapshot", "send"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--write-key")
    parser.add_argument("--user", default="mig-3")
    args = parser.parse_args()
    if args.mode == "fill":
        fill(args)
    elif args.mode == "snapshot":
        snapshot(args)
    else:
        segment_send(args.base, args.write_key, args.user)
        print("ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
