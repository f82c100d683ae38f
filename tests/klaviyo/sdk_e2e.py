"""End to end: data sent by Segment's Python library, read and written with Klaviyo's Python SDK.

Usage: sdk_e2e.py --base http://127.0.0.1:PORT --write-key KEY --api-key pk_...

Segment's library (segment-analytics-python) sends identify and track calls to the Tracking
API; Klaviyo's SDK (klaviyo-api) then lists and pages metrics, events and profiles, filters by
email, creates events and profiles, upserts, meets the 409 on a duplicate, merges and
aggregates. Responses go through the SDK's strict pydantic models (no dictionary option, no
sparse fieldsets), so a missing or mistyped field fails here. Any mismatch raises and the
script exits non-zero.
"""

import argparse
import datetime as dt
import json
import sys
import time
import uuid

import segment.analytics as segment_analytics
from klaviyo_api import KlaviyoAPI
from klaviyo_api.filter_builder import FilterBuilder
from openapi_client.exceptions import ApiException
from openapi_client.models import (
    GetAccounts4XXResponse,
    GetEventResponseCollectionCompoundDocument,
    GetEventResponseCompoundDocument,
    GetMetricResponseCollectionCompoundDocument,
    GetMetricResponseCompoundDocument,
    GetProfileResponsePluralConversationsCollectionCompoundDocument,
    GetProfileResponsePluralConversationsCompoundDocument,
    PatchProfileResponse,
    PostMetricAggregateResponse,
    PostProfileMergeResponse,
    PostProfileResponse,
)

USERS = 25
VIEWERS = 12
ORDERS = [  # (user index, days ago, revenue, payment method)
    (0, 1, 10.5, "card"),
    (1, 1, 20.0, "paypal"),
    (2, 2, 30.25, "card"),
    (3, 3, 40.0, "card"),
    (0, 3, 5.0, "paypal"),
]
WAIT_SECONDS = 30


class Mismatch(AssertionError):
    pass


def check(condition, message, *details):
    if not condition:
        raise Mismatch(message + ("".join(f"\n  {d!r}" for d in details) if details else ""))


def step(message):
    print(f"--- {message}", flush=True)


def wait_for(what, probe):
    """Polls `probe` until it returns something truthy: the pipeline applies the log async."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Mismatch(f"timed out after {WAIT_SECONDS}s waiting for {what}")
        time.sleep(0.2)


def expect_api_error(call, status, code, **source):
    """Runs `call`, which must fail with `status`/`code`; returns the parsed error body."""
    try:
        call()
    except ApiException as e:
        check(e.status == status, f"expected HTTP {status}, got {e.status}", e.body)
        check(
            isinstance(e.data, GetAccounts4XXResponse),
            "the error body does not parse as the SDK's errors[] model",
            e.body,
        )
        body = json.loads(e.body)
        error = body["errors"][0]
        check(error["code"] == code, f"expected code {code}", error)
        for key, value in source.items():
            check(error.get("source", {}).get(key) == value, f"expected source.{key}={value}", error)
        return error
    raise Mismatch(f"expected HTTP {status} {code}, but the call succeeded")


def page_all(fetch, **kwargs):
    """Every item of a listing, following links.next as the SDK's users do."""
    items, cursor, pages = [], None, 0
    while True:
        response = fetch(page_cursor=cursor, **kwargs) if cursor else fetch(**kwargs)
        pages += 1
        items.extend(response.data)
        check(response.links is not None and response.links.var_self, "a collection needs links.self")
        nxt = response.links.next
        if not nxt:
            return items, pages
        check(nxt.startswith("https://"), "links.next must be an absolute https URL", nxt)
        check("page%5Bcursor%5D=" in nxt, "links.next must carry page[cursor]", nxt)
        check(pages < 100, "pagination does not end")
        cursor = nxt


def day_noon(days_ago):
    today = dt.datetime.now(dt.timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=days_ago)


def email_of(i, run):
    return f"user{i}.{run}@example.com"


def send_with_segment(base, write_key, run):
    step("Segment library: identify and track")
    errors = []
    client = segment_analytics.Client(
        write_key,
        host=base,
        on_error=lambda error, batch: errors.append(repr(error)),
        max_retries=2,
    )
    for i in range(USERS):
        client.identify(
            f"user-{run}-{i}",
            {
                "email": email_of(i, run),
                "firstName": f"First{i}",
                "lastName": f"Last{i}",
                "plan": "pro" if i % 2 else "free",
            },
            timestamp=day_noon(5),
        )
    for i in range(VIEWERS):
        for days_ago in (1, 2):
            client.track(
                f"user-{run}-{i}",
                "Viewed Product",
                {"sku": f"SKU-{i}", "name": f"Product {i}"},
                timestamp=day_noon(days_ago) + dt.timedelta(minutes=i),
            )
    for n, (i, days_ago, revenue, method) in enumerate(ORDERS):
        client.track(
            f"user-{run}-{i}",
            "Order Completed",
            {
                "order_id": f"order-{run}-{n}",
                "revenue": revenue,
                "currency": "USD",
                "Method": method,
            },
            timestamp=day_noon(days_ago) + dt.timedelta(minutes=n),
        )
    client.flush()
    client.join()
    check(not errors, "the Segment library reported errors", errors)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    check(args.base.startswith("http://"), "--base must be http://HOST:PORT")
    run = uuid.uuid4().hex[:8]

    send_with_segment(args.base, args.write_key, run)
    klaviyo = KlaviyoAPI(args.api_key, test_host=args.base, max_retries=2, max_delay=2)

    # --- Profiles from Segment identify calls.
    step("profiles: filter by email until the pipeline has applied the Segment calls")
    last_email = email_of(USERS - 1, run)

    def profile_by_email(email):
        response = klaviyo.Profiles.get_profiles(filter=f'equals(email,"{email}")')
        check(
            isinstance(response, GetProfileResponsePluralConversationsCollectionCompoundDocument),
            "get_profiles must parse as the strict model",
            type(response),
        )
        return response.data

    found = wait_for("the last identified profile", lambda: profile_by_email(last_email))
    check(len(found) == 1, "one profile per email", found)
    profile = found[0]
    check(profile.type.value == "profile", "type must be profile", profile.type)
    check(profile.attributes.email == last_email, "email", profile.attributes.email)
    check(profile.attributes.first_name == f"First{USERS - 1}", "first_name", profile.attributes)
    check(profile.attributes.last_name == f"Last{USERS - 1}", "last_name", profile.attributes)
    check(profile.attributes.properties.get("plan") == "free", "custom traits become properties", profile.attributes.properties)
    check(isinstance(profile.attributes.created, dt.datetime), "created is a datetime", profile.attributes.created)
    check(profile.links.var_self.startswith("https://"), "links.self", profile.links)

    step("profiles: get one by id")
    one = klaviyo.Profiles.get_profile(profile.id)
    check(isinstance(one, GetProfileResponsePluralConversationsCompoundDocument), "get_profile model", type(one))
    check(one.data.id == profile.id and one.data.attributes.email == last_email, "get_profile data", one.data)

    step("profiles: any() over several emails")
    emails = [email_of(i, run) for i in (0, 3, 7)]
    fb = FilterBuilder()
    fb.any("email", emails)
    response = klaviyo.Profiles.get_profiles(filter=fb.build())
    check(sorted(p.attributes.email for p in response.data) == sorted(emails), "any(email,[...])", response.data)

    step("profiles: page through everyone with page[size]=10")
    run_emails = {email_of(i, run) for i in range(USERS)}
    profiles, pages = page_all(klaviyo.Profiles.get_profiles, page_size=10, sort="created")
    seen = [p.attributes.email for p in profiles if p.attributes.email in run_emails]
    check(len(seen) == USERS and set(seen) == run_emails, "every identified profile once", len(seen), pages)
    check(pages >= 3, "25 profiles at 10 a page take at least 3 pages", pages)
    ids = [p.id for p in profiles]
    check(len(ids) == len(set(ids)), "no profile twice across pages")

    # --- Metrics from Segment track calls.
    step("metrics: list, filter by integration, get one")
    def segment_metrics():
        named = {
            m.attributes.name: m
            for m in klaviyo.Metrics.get_metrics().data
            if m.attributes.name in ("Viewed Product", "Order Completed")
        }
        return named if len(named) == 2 else None

    metrics = wait_for("the Segment metrics", segment_metrics)
    check(set(metrics) == {"Viewed Product", "Order Completed"}, "both metrics", list(metrics))
    listing = klaviyo.Metrics.get_metrics()
    check(isinstance(listing, GetMetricResponseCollectionCompoundDocument), "get_metrics model", type(listing))
    viewed = metrics["Viewed Product"]
    ordered = metrics["Order Completed"]
    check(viewed.type.value == "metric", "metric type", viewed.type)
    check(viewed.attributes.integration["name"] == "Segment", "integration of Segment metrics", viewed.attributes.integration)
    check(isinstance(viewed.attributes.created, str), "metric created is a string", viewed.attributes.created)
    by_integration = klaviyo.Metrics.get_metrics(filter='equals(integration.name,"Segment")')
    check(
        {"Viewed Product", "Order Completed"} <= {m.attributes.name for m in by_integration.data},
        "filter by integration.name",
        by_integration.data,
    )
    none = klaviyo.Metrics.get_metrics(filter='equals(integration.name,"Shopify")')
    check(none.data == [], "no Shopify metrics", none.data)
    got = klaviyo.Metrics.get_metric(viewed.id)
    check(isinstance(got, GetMetricResponseCompoundDocument), "get_metric model", type(got))
    check(got.data.attributes.name == "Viewed Product", "get_metric", got.data)

    # --- Events.
    step("events: page a metric's events with page[size]=5, newest first")
    expected_views = VIEWERS * 2
    wait_for(
        "every Viewed Product event",
        lambda: len(page_all(klaviyo.Events.get_events, filter=f'equals(metric_id,"{viewed.id}")', page_size=200)[0])
        >= expected_views,
    )
    events, pages = page_all(
        klaviyo.Events.get_events,
        filter=f'equals(metric_id,"{viewed.id}")',
        page_size=5,
        sort="-datetime",
    )
    check(len(events) == expected_views, "every view once", len(events))
    check(pages == 5, "24 events at 5 a page are 5 pages", pages)
    stamps = [e.attributes.timestamp for e in events]
    check(stamps == sorted(stamps, reverse=True), "sort=-datetime", stamps)
    first = events[0]
    check(first.type.value == "event", "event type", first.type)
    check(isinstance(first.attributes.timestamp, int), "timestamp is int seconds", first.attributes.timestamp)
    check(
        int(first.attributes.datetime_.timestamp()) == first.attributes.timestamp,
        "datetime and timestamp agree",
        first.attributes,
    )
    check(first.attributes.event_properties.get("sku", "").startswith("SKU-"), "event_properties", first.attributes.event_properties)
    check(uuid.UUID(first.attributes.uuid) is not None, "uuid", first.attributes.uuid)
    check(first.relationships.metric.data.id == viewed.id, "metric relationship", first.relationships)

    step("events: filter by time and by profile, include metric and profile")
    fb = FilterBuilder()
    fb.equals("metric_id", viewed.id)
    fb.greater_or_equal("datetime", day_noon(1) - dt.timedelta(hours=1))
    recent = klaviyo.Events.get_events(filter=fb.build(), page_size=100)
    check(len(recent.data) == VIEWERS, "views of the last day", len(recent.data))
    viewer = profile_by_email(email_of(0, run))[0]
    theirs = klaviyo.Events.get_events(
        filter=f'equals(profile_id,"{viewer.id}")', include=["metric", "profile"], sort="datetime"
    )
    check(isinstance(theirs, GetEventResponseCollectionCompoundDocument), "get_events model", type(theirs))
    names = sorted(metrics_by_id_name(klaviyo, e.relationships.metric.data.id) for e in theirs.data)
    check(names == ["Order Completed", "Order Completed", "Viewed Product", "Viewed Product"], "user 0's activity", names)
    included = {(r["type"], r["id"]) for r in theirs.included or []}
    check(("profile", viewer.id) in included, "include=profile", included)
    check(("metric", viewed.id) in included and ("metric", ordered.id) in included, "include=metric", included)
    event = klaviyo.Events.get_event(first.id)
    check(isinstance(event, GetEventResponseCompoundDocument), "get_event model", type(event))
    check(event.data.id == first.id, "get_event", event.data)

    step("events: create one and a bulk job through the API (202)")
    api_email = f"api.{run}@example.com"
    klaviyo.Events.create_event(
        {
            "data": {
                "type": "event",
                "attributes": {
                    "properties": {"Plan": "gold", "Seats": 3},
                    "time": day_noon(1).isoformat(),
                    "value": 99.5,
                    "value_currency": "USD",
                    "unique_id": f"upgrade-{run}",
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Upgraded Plan"}}},
                    "profile": {
                        "data": {
                            "type": "profile",
                            "attributes": {"email": api_email, "first_name": "Api", "properties": {"Source": "sdk"}},
                        }
                    },
                },
            }
        }
    )
    klaviyo.Events.bulk_create_events(
        {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {
                    "events-bulk-create": {
                        "data": [
                            {
                                "type": "event-bulk-create",
                                "attributes": {
                                    "profile": {"data": {"type": "profile", "attributes": {"email": api_email}}},
                                    "events": {
                                        "data": [
                                            {
                                                "type": "event",
                                                "attributes": {
                                                    "properties": {"Step": step_n},
                                                    "metric": {"data": {"type": "metric", "attributes": {"name": "Upgraded Plan"}}},
                                                    "unique_id": f"bulk-{run}-{step_n}",
                                                },
                                            }
                                            for step_n in range(3)
                                        ]
                                    },
                                },
                            }
                        ]
                    }
                },
            }
        }
    )
    api_profile = wait_for("the API-created profile", lambda: profile_by_email(api_email))[0]
    check(api_profile.attributes.first_name == "Api", "event profile attributes", api_profile.attributes)
    upgrades = wait_for(
        "the API events",
        lambda: (lambda d: d if len(d) >= 4 else None)(
            klaviyo.Events.get_events(filter=f'equals(profile_id,"{api_profile.id}")').data
        ),
    )
    check(len(upgrades) == 4, "one created event and three bulk events", len(upgrades))
    upgraded = klaviyo.Metrics.get_metric(upgrades[0].relationships.metric.data.id).data
    check(upgraded.attributes.name == "Upgraded Plan", "API metric name", upgraded.attributes)
    check(upgraded.attributes.integration["name"] == "API", "API metrics belong to the API integration", upgraded.attributes.integration)

    # --- Profiles written through the API.
    step("profiles: create (201), duplicate (409 duplicate_profile)")
    new_email = f"new.{run}@example.com"
    created = klaviyo.Profiles.create_profile(
        {
            "data": {
                "type": "profile",
                "attributes": {
                    "email": new_email,
                    "first_name": "Nia",
                    "location": {"city": "Lyon", "country": "France", "latitude": 45.76},
                    "properties": {"Tier": "A"},
                },
            }
        }
    )
    check(isinstance(created, PostProfileResponse), "create_profile model", type(created))
    check(created.data.attributes.email == new_email, "created email", created.data.attributes)
    check(created.data.attributes.location.city == "Lyon", "created location", created.data.attributes.location)
    error = expect_api_error(
        lambda: klaviyo.Profiles.create_profile(
            {"data": {"type": "profile", "attributes": {"email": new_email}}}
        ),
        409,
        "duplicate_profile",
    )
    check(error["meta"]["duplicate_profile_id"] == created.data.id, "meta.duplicate_profile_id", error)

    step("profiles: PATCH sets, clears with null, unsets a property")
    patched = klaviyo.Profiles.update_profile(
        created.data.id,
        {
            "data": {
                "type": "profile",
                "id": created.data.id,
                "attributes": {"last_name": "Okafor", "first_name": None, "properties": {"Seats": 2}},
                "meta": {"patch_properties": {"unset": "Tier"}},
            }
        },
    )
    check(isinstance(patched, PatchProfileResponse), "update_profile model", type(patched))
    attrs = patched.data.attributes
    check(attrs.last_name == "Okafor" and attrs.first_name is None, "PATCH attributes", attrs)
    check(attrs.properties == {"Seats": 2}, "PATCH properties", attrs.properties)

    step("profiles: import is an upsert (201 then 200)")
    upsert_email = f"upsert.{run}@example.com"
    first_import = klaviyo.Profiles.create_or_update_profile_with_http_info(
        {"data": {"type": "profile", "attributes": {"email": upsert_email, "title": "Engineer"}}}
    )
    check(first_import.status_code == 201, "import creates: 201", first_import.status_code)
    check(isinstance(first_import.data, PostProfileResponse), "import model", type(first_import.data))
    second_import = klaviyo.Profiles.create_or_update_profile_with_http_info(
        {"data": {"type": "profile", "attributes": {"email": upsert_email, "organization": "Acme"}}}
    )
    check(second_import.status_code == 200, "import updates: 200", second_import.status_code)
    check(second_import.data.data.id == first_import.data.data.id, "same profile", second_import.data.data)
    check(
        second_import.data.data.attributes.title == "Engineer"
        and second_import.data.data.attributes.organization == "Acme",
        "import merges attributes",
        second_import.data.data.attributes,
    )

    step("profiles: merge one into another (201)")
    merged = klaviyo.Profiles.merge_profiles(
        {
            "data": {
                "type": "profile-merge",
                "id": created.data.id,
                "relationships": {"profiles": {"data": [{"type": "profile", "id": first_import.data.data.id}]}},
            }
        }
    )
    check(isinstance(merged, PostProfileMergeResponse), "merge model", type(merged))
    check(merged.data.id == created.data.id, "the destination survives", merged.data)
    survivor = klaviyo.Profiles.get_profile(first_import.data.data.id).data
    check(survivor.id == created.data.id, "a merged profile's id leads to the survivor", survivor.id)

    # --- Aggregates over the Segment orders.
    step("metric aggregates: count, unique, sum_value by day and by Method")
    start = (day_noon(6)).replace(hour=0)
    end = (day_noon(0)).replace(hour=0) + dt.timedelta(days=1)

    def aggregate(by=None):
        attributes = {
            "metric_id": ordered.id,
            "measurements": ["count", "unique", "sum_value"],
            "interval": "day",
            "timezone": "UTC",
            "filter": [
                f"greater-or-equal(datetime,{start.strftime('%Y-%m-%dT%H:%M:%S')})",
                f"less-than(datetime,{end.strftime('%Y-%m-%dT%H:%M:%S')})",
            ],
        }
        if by:
            attributes["by"] = by
        response = klaviyo.Metrics.query_metric_aggregates(
            {"data": {"type": "metric-aggregate", "attributes": attributes}}
        )
        check(isinstance(response, PostMetricAggregateResponse), "aggregate model", type(response))
        return response.data.attributes

    totals = aggregate()
    check(len(totals.dates) == 7, "seven daily buckets", totals.dates)
    check(all(d.tzinfo is not None for d in totals.dates), "bucket starts carry an offset", totals.dates)
    check(len(totals.data) == 1 and totals.data[0].dimensions == [], "one row without by", totals.data)
    row = totals.data[0].measurements
    check(sum(row["count"]) == len(ORDERS), "order count", row)
    buyers_per_day = {d: {i for i, dd, _, _ in ORDERS if dd == d} for _, d, _, _ in ORDERS}
    check(sum(row["unique"]) == sum(len(b) for b in buyers_per_day.values()), "unique buyers per day", row)
    check(abs(sum(row["sum_value"]) - sum(r for _, _, r, _ in ORDERS)) < 1e-6, "revenue sum", row)
    by_day = dict(zip([d.date() for d in totals.dates], row["count"]))
    for days_ago in (1, 2, 3):
        want = sum(1 for _, d, _, _ in ORDERS if d == days_ago)
        check(by_day.get(day_noon(days_ago).date()) == want, f"orders {days_ago} days ago", by_day)

    split = aggregate(by=["Method"])
    sums = {tuple(r.dimensions): sum(r.measurements["sum_value"]) for r in split.data}
    check(abs(sums.get(("card",), 0) - 80.75) < 1e-6, "card revenue", sums)
    check(abs(sums.get(("paypal",), 0) - 25.0) < 1e-6, "paypal revenue", sums)

    # --- Errors the SDK surfaces.
    step("errors: unsupported filter, unknown profile, quoted datetime")
    expect_api_error(
        lambda: klaviyo.Profiles.get_profiles(filter='equals(first_name,"Nia")'),
        400,
        "invalid",
        parameter="filter",
    )
    expect_api_error(
        lambda: klaviyo.Events.get_events(filter='greater-than(datetime,"2026-01-01T00:00:00Z")'),
        400,
        "invalid",
        parameter="filter",
    )
    expect_api_error(lambda: klaviyo.Profiles.get_profile("01AAAAAAAAAAAAAAAAAAAAAAAA"), 404, "not_found")
    bad = KlaviyoAPI("pk_wrong", test_host=args.base, max_retries=0)
    expect_api_error(lambda: bad.Metrics.get_metrics(), 401, "authentication_failed")

    print("klaviyo sdk e2e: all checks passed", flush=True)


_metric_names = {}


def metrics_by_id_name(klaviyo, metric_id):
    if metric_id not in _metric_names:
        _metric_names[metric_id] = klaviyo.Metrics.get_metric(metric_id).data.attributes.name
    return _metric_names[metric_id]


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
