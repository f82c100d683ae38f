"""Templates through Klaviyo's Python SDK: create, read, list, update, render against a real
profile and event (sent by Segment's Python library), delete.

Usage: templates_e2e.py --base http://127.0.0.1:PORT --write-key KEY --api-key pk_...

Responses go through the SDK's strict pydantic models; any mismatch raises and the script
exits non-zero.
"""

import argparse
import json
import time
import uuid

import segment.analytics as segment_analytics
from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException
from openapi_client.models import (
    GetTemplateDndResponse,
    GetTemplateDndResponseCollection,
    PatchTemplateDndResponse,
    PostTemplateDndResponse,
    PostTemplateResponse,
)

WAIT_SECONDS = 30

CART_HTML = """<h1>Hi {{ first_name|default:"there" }},</h1>
<ul>{% for item in event.products %}<li><img src="{{ item.image_url }}" alt="">
{{ item.name }}: ${{ item.price|floatformat:2 }}</li>{% endfor %}</ul>
<p>Total {{ event|lookup:'$value' }} &middot; {{ person|lookup:'plan' }}</p>"""


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


def expect_status(call, status, pointer=None):
    try:
        call()
    except ApiException as e:
        check(e.status == status, f"expected HTTP {status}, got {e.status}", e.body)
        if pointer:
            error = json.loads(e.body)["errors"][0]
            check(error.get("source", {}).get("pointer") == pointer, f"expected pointer {pointer}", error)
        return
    raise Mismatch(f"expected HTTP {status}, but the call succeeded")


def template_body(name, html, text=None):
    attributes = {"name": name, "editor_type": "CODE", "html": html}
    if text is not None:
        attributes["text"] = text
    return {"data": {"type": "template", "attributes": attributes}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    email = f"cart.{run}@example.com"

    step("Segment library: identify and a checkout")
    errors = []
    segment = segment_analytics.Client(
        args.write_key, host=args.base, max_retries=2,
        on_error=lambda error, batch: errors.append(repr(error)))
    segment.identify(f"user-{run}", {"email": email, "firstName": "Grace", "plan": "gold"})
    segment.track(f"user-{run}", "Checkout Started", {
        "revenue": 42.5,
        "products": [
            {"product_id": "p1", "name": "Teapot", "price": 30, "image_url": "https://cdn.example.com/teapot.png"},
            {"product_id": "p2", "name": "Cup", "price": 12.5, "image_url": "https://cdn.example.com/cup.png"},
        ],
    })
    segment.flush()
    segment.join()
    check(not errors, "the Segment library reported errors", errors)

    klaviyo = KlaviyoAPI(args.api_key, test_host=args.base, max_retries=2, max_delay=2)

    step("templates: create")
    created = klaviyo.Templates.create_template(template_body(f"Cart {run}", CART_HTML))
    check(isinstance(created, PostTemplateDndResponse), "create_template model", type(created))
    template_id = created.data.id
    check(created.data.attributes.editor_type == "CODE", "editor_type", created.data.attributes)
    check(created.data.attributes.html == CART_HTML, "html as given", created.data.attributes.html)
    check(created.data.attributes.created is not None, "created", created.data.attributes)

    step("templates: get, list, update")
    one = klaviyo.Templates.get_template(template_id)
    check(isinstance(one, GetTemplateDndResponse), "get_template model", type(one))
    check(one.data.attributes.name == f"Cart {run}", "name", one.data.attributes)
    listed = klaviyo.Templates.get_templates(filter=f'equals(name,"Cart {run}")')
    check(isinstance(listed, GetTemplateDndResponseCollection), "get_templates model", type(listed))
    check([t.id for t in listed.data] == [template_id], "filtered by name", listed.data)
    updated = klaviyo.Templates.update_template(template_id, {"data": {
        "type": "template", "id": template_id,
        "attributes": {"name": f"Cart {run} v2", "text": "Hi {{ first_name }}: {{ event.products|length }} items"}}})
    check(isinstance(updated, PatchTemplateDndResponse), "update_template model", type(updated))
    check(updated.data.attributes.name == f"Cart {run} v2", "renamed", updated.data.attributes)

    step("templates: a broken template is refused with a pointer")
    expect_status(lambda: klaviyo.Templates.create_template(
        template_body("Broken", "{% if first_name %}unclosed")), 400, "/data/attributes/html")

    step("render: against the real profile and checkout event")
    profiles = wait_for("the profile", lambda: klaviyo.Profiles.get_profiles(
        filter=f'equals(email,"{email}")').data)
    profile_id = profiles[0].id

    def checkout_event():
        events = klaviyo.Events.get_events(
            filter=f'equals(profile_id,"{profile_id}")',
            options={"USE_DICTIONARY_FOR_RESPONSE_DATA": True})["data"]
        return [e for e in events if "products" in e["attributes"]["event_properties"]]

    event_id = wait_for("the checkout event", checkout_event)[0]["id"]
    rendered = klaviyo.Templates.render_template({"data": {
        "type": "template", "id": template_id,
        "attributes": {"context": {"profile_id": profile_id, "event_id": event_id}}}})
    check(isinstance(rendered, PostTemplateResponse), "render_template model", type(rendered))
    html = rendered.data.attributes.html
    check("Hi Grace," in html, "first name from the profile", html)
    check("Teapot: $30.00" in html and "Cup: $12.50" in html, "cart items with prices", html)
    check('src="https://cdn.example.com/teapot.png"' in html, "item images", html)
    check("Total 42.5" in html and "gold" in html, "event value and profile property", html)
    check(rendered.data.attributes.text == "Hi Grace: 2 items", "text part", rendered.data.attributes.text)

    step("render: Klaviyo's plain context")
    plain = klaviyo.Templates.render_template({"data": {
        "type": "template", "id": template_id,
        "attributes": {"context": {"first_name": "Lin", "event": {"products": []}}}}})
    check("Hi Lin," in plain.data.attributes.html, "context variables", plain.data.attributes.html)

    step("templates: delete")
    klaviyo.Templates.delete_template(template_id)
    expect_status(lambda: klaviyo.Templates.get_template(template_id), 404)
    print("ok", flush=True)


if __name__ == "__main__":
    main()
