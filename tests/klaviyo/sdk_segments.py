"""Klaviyo's Python SDK against Signalbox's segments: create a segment with a definition, read
it back (definition, profile_count, is_processing), page its members, preview a draft, rename
it, list it, see a bad definition refused with a pointer, delete it.

Usage: sdk_segments.py --base http://127.0.0.1:PORT --api-key pk_...
"""

import argparse
import datetime as dt
import json
import sys
import time
import urllib.request
import uuid

from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException
from openapi_client.models import (
    GetAccounts4XXResponse,
    GetSegmentMemberResponseCollection,
    GetSegmentRetrieveResponseCompoundDocument,
    PatchSegmentPartialUpdateResponse,
    PostSegmentCreateResponse,
)

BUYERS = 12
OTHERS = 5
WAIT_SECONDS = 30


class Mismatch(AssertionError):
    pass


def check(condition, message, *details):
    if not condition:
        raise Mismatch(message + ("".join(f"\n  {d!r}" for d in details) if details else ""))


def step(message):
    print(f"--- {message}", flush=True)


def wait_for(what, probe):
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Mismatch(f"timed out after {WAIT_SECONDS}s waiting for {what}")
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--write-key")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    klaviyo = KlaviyoAPI(args.api_key, test_host=args.base, max_retries=2, max_delay=2)

    step("profiles and events through the SDK")
    now = dt.datetime.now(dt.timezone.utc)
    buyers = set()
    for i in range(BUYERS + OTHERS):
        email = f"seg{i}.{run}@example.com"
        klaviyo.Profiles.create_profile({"data": {"type": "profile", "attributes": {"email": email}}})
        if i < BUYERS:
            buyers.add(email)
            klaviyo.Events.create_event({"data": {"type": "event", "attributes": {
                "properties": {"Brand": "Acme"},
                "value": 10 + i,
                "time": (now - dt.timedelta(days=2)).isoformat(),
                "metric": {"data": {"type": "metric", "attributes": {"name": f"Placed Order {run}"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            }}})
    metric = wait_for("the metric", lambda: [
        m for m in klaviyo.Metrics.get_metrics().data if m.attributes.name == f"Placed Order {run}"
    ])[0]

    step("create a segment with a definition")
    definition = {"condition_groups": [{"conditions": [{
        "type": "profile-metric", "metric_id": metric.id, "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
        "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"},
        "metric_filters": [{"property": "Brand", "filter": {"type": "string", "operator": "equals", "value": "Acme"}}],
    }]}]}
    created = klaviyo.Segments.create_segment({"data": {"type": "segment", "attributes": {
        "name": f"Buyers {run}", "definition": definition, "is_starred": True}}})
    check(isinstance(created, PostSegmentCreateResponse), "create_segment model", type(created))
    segment_id = created.data.id
    check(created.data.attributes.name == f"Buyers {run}", "name", created.data.attributes)
    check(created.data.attributes.is_starred is True, "is_starred", created.data.attributes)

    step("read it back with definition and profile_count once processed")

    def processed():
        got = klaviyo.Segments.get_segment(segment_id, additional_fields_segment=["profile_count", "definition"])
        return got if not got.data.attributes.is_processing and got.data.attributes.profile_count == BUYERS else None

    got = wait_for("the backfill", processed)
    check(isinstance(got, GetSegmentRetrieveResponseCompoundDocument), "get_segment model", type(got))
    back = got.data.attributes.definition.to_dict()
    condition = back["condition_groups"][0]["conditions"][0]
    check(condition["metric_id"] == metric.id and condition["measurement"] == "count", "definition", back)
    check(condition["timeframe_filter"]["quantity"] == 30, "timeframe", back)

    step("page its members, five at a time")
    emails, cursor, pages = [], None, 0
    while True:
        kwargs = {"page_size": 5}
        if cursor:
            kwargs["page_cursor"] = cursor
        page = klaviyo.Segments.get_profiles_for_segment(segment_id, **kwargs)
        check(isinstance(page, GetSegmentMemberResponseCollection), "members model", type(page))
        pages += 1
        for profile in page.data:
            emails.append(profile.attributes.email)
            check(profile.attributes.joined_group_at is not None, "joined_group_at", profile.attributes)
        cursor = page.links.next
        if not cursor:
            break
        check(pages < 10, "paging ends")
    check(sorted(emails) == sorted(buyers), "members are the buyers, each once", emails)
    check(pages == 3, "12 members at 5 a page are 3 pages", pages)

    step("a dry run of a draft definition (POST /api/segment-previews)")
    request = urllib.request.Request(
        f"{args.base}/api/segment-previews",
        data=json.dumps({"data": {"type": "segment-preview", "attributes": {"definition": definition}}}).encode(),
        headers={"Authorization": f"Klaviyo-API-Key {args.api_key}", "revision": "2026-07-15",
                 "Content-Type": "application/vnd.api+json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        preview = json.loads(response.read())["data"]["attributes"]
    check(preview["profile_count"] == BUYERS, "the preview counts the buyers", preview)
    check(preview["profiles_evaluated"] >= BUYERS + OTHERS, "the preview saw every profile", preview)

    step("why is a member in (GET /api/segments/{id}/explanations/{profile_id})")
    member = klaviyo.Segments.get_profiles_for_segment(segment_id, page_size=1).data[0]
    request = urllib.request.Request(
        f"{args.base}/api/segments/{segment_id}/explanations/{member.id}",
        headers={"Authorization": f"Klaviyo-API-Key {args.api_key}", "revision": "2026-07-15"},
    )
    with urllib.request.urlopen(request) as response:
        why = json.loads(response.read())["data"]["attributes"]
    check(why["member"] and why["matches_now"], "the member matches", why)
    check(why["conditions"][0]["matched"] and why["conditions"][0]["type"] == "profile-metric", "per condition", why)
    check(why["last_change"]["entered"] and why["last_change"]["cause"]["trigger"] == "backfill", "cause", why)

    step("a new event moves a profile in")
    newcomer = f"seg{BUYERS}.{run}@example.com"
    klaviyo.Events.create_event({"data": {"type": "event", "attributes": {
        "properties": {"Brand": "Acme"},
        "metric": {"data": {"type": "metric", "attributes": {"name": f"Placed Order {run}"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": newcomer}}},
    }}})
    wait_for("the newcomer", lambda: klaviyo.Segments.get_segment(
        segment_id, additional_fields_segment=["profile_count"]).data.attributes.profile_count == BUYERS + 1)

    step("rename, list, refuse a bad definition, delete")
    renamed = klaviyo.Segments.update_segment(segment_id, {"data": {"type": "segment", "id": segment_id,
        "attributes": {"name": f"Acme buyers {run}"}}})
    check(isinstance(renamed, PatchSegmentPartialUpdateResponse), "update_segment model", type(renamed))
    check(renamed.data.attributes.name == f"Acme buyers {run}", "renamed", renamed.data.attributes)
    listed = klaviyo.Segments.get_segments(filter=f'equals(name,"Acme buyers {run}")')
    check([s.id for s in listed.data] == [segment_id], "filter by name", listed.data)
    bad = json.loads(json.dumps(definition))
    bad["condition_groups"][0]["conditions"][0]["measurement_filter"]["operator"] = "bigger"
    try:
        klaviyo.Segments.create_segment({"data": {"type": "segment", "attributes": {"name": "bad", "definition": bad}}})
        raise Mismatch("a bad definition was accepted")
    except ApiException as e:
        check(e.status == 400, "bad definition: 400", e.status, e.body)
        check(isinstance(e.data, GetAccounts4XXResponse), "errors[] model", e.body)
        error = json.loads(e.body)["errors"][0]
        check(error["source"]["pointer"] ==
              "/data/attributes/definition/condition_groups/0/conditions/0/measurement_filter/operator",
              "the pointer names the operator", error)
    klaviyo.Segments.delete_segment(segment_id)
    try:
        klaviyo.Segments.get_segment(segment_id)
        raise Mismatch("the deleted segment is still there")
    except ApiException as e:
        check(e.status == 404, "deleted: 404", e.status)
    step("ok")


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        sys.exit(1)
