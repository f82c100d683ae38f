"""Flows through Klaviyo's Python SDK: create with temporary ids, read, list, set live, delete.

Usage: flows_e2e.py --base http://127.0.0.1:PORT --write-key KEY --api-key pk_...

Reads without the definition parse into the SDK's strict models. Bodies and reads with a
definition leave `reentry_criteria` out or use the SDK's dictionary option: the SDK's
`ReentryCriteria` model types `unit` as an object where the API (Klaviyo's and ours) has a
string such as "day", so the SDK refuses it on the way out and in.
"""

import argparse
import json

from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException
from openapi_client.models import (
    GetFlowV2ResponseCompoundDocument,
)

DICT = {"USE_DICTIONARY_FOR_RESPONSE_DATA": True}


class Mismatch(AssertionError):
    pass


def check(condition, message, *details):
    if not condition:
        raise Mismatch(message + ("".join(f"\n  {d!r}" for d in details) if details else ""))


def step(message):
    print(f"--- {message}", flush=True)


def definition(metric_id):
    return {
        "triggers": [{"type": "metric", "id": metric_id}],
        "entry_action_id": "wait",
        "actions": [
            {"temporary_id": "wait", "type": "time-delay",
             "data": {"unit": "hours", "value": 4}, "links": {"next": "email"}},
            {"temporary_id": "email", "type": "send-email", "data": {"status": "draft", "message": {
                "from_email": "shop@example.com", "subject_line": "You left something",
                "html": "<p>{{ first_name|default:'there' }}</p>", "smart_sending_enabled": True}},
             "links": {"next": None}},
        ],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    klaviyo = KlaviyoAPI(args.api_key, test_host=args.base, max_retries=2, max_delay=2)

    step("flows: create with temporary ids")
    body = {"data": {"type": "flow", "attributes": {"name": "SDK checkout", "definition": definition("CHECKOUT")}}}
    created = klaviyo.Flows.create_flow(body, options=DICT)
    flow_id = created["data"]["id"]
    attributes = created["data"]["attributes"]
    check(attributes["status"] == "draft", "new flows are drafts", attributes)
    actions = attributes["definition"]["actions"]
    check(all("id" in a and "temporary_id" not in a for a in actions), "real ids replace temporary ids", actions)
    check(actions[0]["links"]["next"] == actions[1]["id"], "links follow the real ids", actions)
    check(attributes["definition"]["reentry_criteria"]["unit"] == "alltime", "default reentry", attributes)

    step("flows: get (strict model), with the definition (dictionary)")
    one = klaviyo.Flows.get_flow(flow_id)
    check(isinstance(one, GetFlowV2ResponseCompoundDocument), "get_flow model", type(one))
    check(one.data.attributes.name == "SDK checkout" and one.data.attributes.trigger_type == "Metric", "attributes", one.data.attributes)
    check(one.data.attributes.definition is None, "no definition unless asked", one.data.attributes)
    full = klaviyo.Flows.get_flow(flow_id, additional_fields_flow=["definition"], options=DICT)
    check(full["data"]["attributes"]["definition"]["actions"] == actions, "definition read back", full)

    step("flows: list, set live, refuse a bad status, delete")
    listed = klaviyo.Flows.get_flows(filter='equals(status,"draft")')
    check([f.id for f in listed.data] == [flow_id], "filtered by status", listed.data)
    live = klaviyo.Flows.update_flow(flow_id, {"data": {"type": "flow", "id": flow_id, "attributes": {"status": "live"}}})
    check(live.data.attributes.status == "live", "set live", live.data.attributes)
    try:
        bad = definition("CHECKOUT")
        bad["actions"][0]["data"]["unit"] = "fortnights"
        klaviyo.Flows.create_flow({"data": {"type": "flow", "attributes": {"name": "Bad", "definition": bad}}}, options=DICT)
        raise Mismatch("an invalid definition was accepted")
    except ApiException as e:
        check(e.status == 400, "400 for an invalid definition", e.body)
        pointer = json.loads(e.body)["errors"][0]["source"]["pointer"]
        check(pointer.startswith("/data/attributes/definition/actions/0"), "pointer to the action", pointer)
    klaviyo.Flows.delete_flow(flow_id)
    try:
        klaviyo.Flows.get_flow(flow_id)
        raise Mismatch("a deleted flow is still there")
    except ApiException as e:
        check(e.status == 404, "404 after delete", e.status)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
