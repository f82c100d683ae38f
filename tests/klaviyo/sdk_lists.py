"""Lists and consent through Klaviyo's Python SDK.

Usage: sdk_lists.py --base http://127.0.0.1:PORT --api-key pk_...

Creates lists (single and double opt-in), reads and renames them, creates profiles, adds them
to a list, pages the members (following the SDK's own cursor handling), subscribes by email
through a subscription job (and leaves one pending on a double opt-in list), unsubscribes,
suppresses and lifts it, suppresses a list's members and finds them by suppression reason,
removes members and deletes a list. Responses go through the SDK's
strict pydantic models. Any mismatch raises and the script exits non-zero.
"""

import argparse
import sys

from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException

MEMBERS = 7


class Mismatch(AssertionError):
    pass


def check(condition, message, *details):
    if not condition:
        raise Mismatch(message + ("".join(f"\n  {d!r}" for d in details) if details else ""))


def step(message):
    print(f"--- {message}", flush=True)


def marketing(klaviyo, list_id, email):
    page = klaviyo.Lists.get_profiles_for_list(
        list_id,
        additional_fields_profile=["subscriptions"],
        filter=f'equals(email,"{email}")',
    )
    check(len(page.data) == 1, f"{email} is not on list {list_id}", page)
    return page.data[0].attributes.subscriptions.email.marketing


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--write-key")
    args = parser.parse_args()
    klaviyo = KlaviyoAPI(args.api_key, max_delay=5, max_retries=2, test_host=args.base)

    step("create lists")
    created = klaviyo.Lists.create_list(
        {"data": {"type": "list", "attributes": {"name": "SDK news"}}}
    )
    news = created.data.id
    check(len(news) == 6, "a list id has 6 characters", news)
    check(created.data.attributes.name == "SDK news", "name", created)
    doi = klaviyo.Lists.create_list(
        {"data": {"type": "list",
                  "attributes": {"name": "SDK confirm", "opt_in_process": "double_opt_in"}}}
    ).data.id

    step("read, rename and list lists")
    one = klaviyo.Lists.get_list(news, additional_fields_list=["profile_count"])
    check(one.data.attributes.profile_count == 0, "an empty list", one)
    renamed = klaviyo.Lists.update_list(
        news, {"data": {"type": "list", "id": news, "attributes": {"name": "SDK weekly"}}}
    )
    check(renamed.data.attributes.name == "SDK weekly", "renamed", renamed)
    all_lists = klaviyo.Lists.get_lists()
    names = sorted(item.attributes.name for item in all_lists.data)
    check(names == ["SDK confirm", "SDK weekly"], "both lists", names)
    filtered = klaviyo.Lists.get_lists(filter='equals(name,"SDK confirm")')
    check([item.id for item in filtered.data] == [doi], "filter by name", filtered)

    step("add profiles and page the members")
    ids = []
    for n in range(MEMBERS):
        profile = klaviyo.Profiles.create_profile(
            {"data": {"type": "profile", "attributes": {"email": f"sdk{n}@example.com"}}}
        )
        ids.append(profile.data.id)
    klaviyo.Lists.add_profiles_to_list(
        news, {"data": [{"type": "profile", "id": i} for i in ids]}
    )
    seen = []
    cursor = None
    pages = 0
    while True:
        page = klaviyo.Lists.get_profiles_for_list(news, page_size=3, page_cursor=cursor)
        pages += 1
        seen.extend(member.id for member in page.data)
        for member in page.data:
            check(member.attributes.joined_group_at is not None, "joined_group_at", member)
        nxt = page.links.next if page.links else None
        if not nxt:
            break
        cursor = nxt
        check(pages < 10, "paging ends")
    check(pages == 3, "7 members in pages of 3", pages)
    check(sorted(seen) == sorted(ids), "every member once", seen, ids)
    count = klaviyo.Lists.get_list(news, additional_fields_list=["profile_count"])
    check(count.data.attributes.profile_count == MEMBERS, "profile_count", count)

    step("subscribe through a job")
    klaviyo.Profiles.bulk_subscribe_profiles({"data": {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {"custom_source": "sdk test", "profiles": {"data": [
            {"type": "profile", "attributes": {"email": "sdk0@example.com", "subscriptions": {
                "email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}},
        "relationships": {"list": {"data": {"type": "list", "id": news}}}}})
    m = marketing(klaviyo, news, "sdk0@example.com")
    check(m.consent == "SUBSCRIBED", "subscribed", m)
    check(m.can_receive_email_marketing is True, "can receive", m)
    profile = klaviyo.Profiles.get_profile(ids[0], additional_fields_profile=["subscriptions"])
    m = profile.data.attributes.subscriptions.email.marketing
    check(m.consent == "SUBSCRIBED" and m.custom_method_detail == "sdk test", "profile read", m)

    step("a double opt-in list leaves the subscriber pending")
    klaviyo.Profiles.bulk_subscribe_profiles({"data": {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "pending@example.com", "subscriptions": {
                "email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}},
        "relationships": {"list": {"data": {"type": "list", "id": doi}}}}})
    pending = klaviyo.Lists.get_profiles_for_list(doi)
    check(len(pending.data) == 0, "no member before confirmation", pending)

    step("unsubscribe, suppress and lift")
    klaviyo.Profiles.bulk_unsubscribe_profiles({"data": {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "sdk0@example.com", "subscriptions": {
                "email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}]}}}})
    m = marketing(klaviyo, news, "sdk0@example.com")
    check(m.consent == "UNSUBSCRIBED", "unsubscribed", m)
    check(m.can_receive_email_marketing is False, "cannot receive", m)
    suppress = {"data": {"type": "profile-suppression-bulk-create-job", "attributes": {
        "profiles": {"data": [{"type": "profile", "attributes": {"email": "sdk1@example.com"}}]}}}}
    klaviyo.Profiles.bulk_suppress_profiles(suppress)
    m = marketing(klaviyo, news, "sdk1@example.com")
    check([s.reason for s in m.suppression] == ["USER_SUPPRESSED"], "suppressed", m)
    suppress["data"]["type"] = "profile-suppression-bulk-delete-job"
    klaviyo.Profiles.bulk_unsuppress_profiles(suppress)
    m = marketing(klaviyo, news, "sdk1@example.com")
    check(m.can_receive_email_marketing is True, "suppression lifted", m)

    step("suppress a list's members, find them by suppression")
    few = klaviyo.Lists.create_list(
        {"data": {"type": "list", "attributes": {"name": "SDK few"}}}
    ).data.id
    klaviyo.Lists.add_profiles_to_list(
        few, {"data": [{"type": "profile", "id": i} for i in ids[5:7]]}
    )
    klaviyo.Profiles.bulk_suppress_profiles({"data": {
        "type": "profile-suppression-bulk-create-job", "attributes": {},
        "relationships": {"list": {"data": {"type": "list", "id": few}}}}})
    for n in (5, 6):
        m = marketing(klaviyo, few, f"sdk{n}@example.com")
        check([s.reason for s in m.suppression] == ["USER_SUPPRESSED"], "suppressed", m)
        check(m.can_receive_email_marketing is False, "cannot receive", m)
        check(not m.list_suppressions, "a global suppression, not a list one", m)
    found = klaviyo.Profiles.get_profiles(
        filter='equals(subscriptions.email.marketing.suppression.reason,"USER_SUPPRESSED")'
    )
    emails = sorted(p.attributes.email for p in found.data)
    check(emails == ["sdk5@example.com", "sdk6@example.com"], "found by reason", emails)

    step("remove members, delete a list, errors")
    klaviyo.Lists.remove_profiles_from_list(
        news, {"data": [{"type": "profile", "id": ids[0]}]}
    )
    count = klaviyo.Lists.get_list(news, additional_fields_list=["profile_count"])
    check(count.data.attributes.profile_count == MEMBERS - 1, "one removed", count)
    klaviyo.Lists.delete_list(doi)
    try:
        klaviyo.Lists.get_list(doi)
        raise Mismatch("a deleted list is still there")
    except ApiException as e:
        check(e.status == 404, "404 for a deleted list", e.status, e.body)
    try:
        klaviyo.Lists.create_list({"data": {"type": "list", "attributes": {"name": ""}}})
        raise Mismatch("an empty name was accepted")
    except ApiException as e:
        check(e.status == 400 and "/data/attributes/name" in e.body, "400 naming the name", e.body)
    print("sdk_lists: all checks passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
