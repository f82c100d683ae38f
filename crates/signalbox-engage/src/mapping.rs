//! Segment calls to profile changes and events, as the classic Klaviyo destination maps them.
//! Pure functions: no store, no clock.
//!
//! - identify: traits to the profile's standard fields (email, first/last name, phone, title,
//!   organization, address to location, `context.timezone` to timezone), the rest kept as
//!   custom properties under their own (camelCase or snake_case) names.
//! - track: an event on the metric named by `event`; `revenue` to value, `messageId` to the
//!   unique id; `context.traits` fill the profile's standard fields.
//! - `Order Completed`: the order event (`Order Completed`, or `Placed Order` with
//!   `useSegmentSpec` off) with `Items`, `Item Names`, `Categories`, plus one `Ordered Product`
//!   per product whose unique id is `orderId_productId`.
//! - alias: joins `previousId` and `userId`.

use jiff::Timestamp;
use serde_json::{Map, Value};
use signalbox_core::CallKind;

use crate::email::{Email, EmailError};
use crate::limits;
use crate::model::{Location, ProfileInput};
use crate::phone;
use crate::settings::{message_settings, DestinationSettings};

/// An event to record, before it has a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedEvent {
    pub metric_name: String,
    pub time: Timestamp,
    pub value: Option<f64>,
    pub value_currency: Option<String>,
    /// `None`: the event's own id.
    pub unique_id: Option<String>,
    pub properties: Map<String, Value>,
}

/// A list the profile is to be subscribed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSubscription {
    pub list_id: String,
    /// Double opt-in where the list asks for it (the source's setting, see
    /// [`MessageSettings`](crate::settings::MessageSettings)).
    pub confirm_optin: bool,
    /// The message's `confirmOptin: false` was ignored.
    pub confirm_optin_ignored: bool,
}

/// What one call asks of engage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    /// Identifiers and profile fields (`None` = unchanged).
    pub profile: ProfileInput,
    pub events: Vec<MappedEvent>,
    /// alias: the other id that names the same person.
    pub alias_of: Option<String>,
    pub list: Option<ListSubscription>,
    /// Things kept but not understood, reported with the call (e.g. a phone number that
    /// cannot be normalised).
    pub problems: Vec<String>,
}

/// Why a call does not reach engage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `integrations` turned the destination off for this message.
    Integrations,
    /// The source's destination is disabled.
    Disabled,
    /// The destination takes identify, track and alias only.
    Kind(CallKind),
    /// Not a JSON object.
    Unreadable,
}

impl Skip {
    pub fn reason(&self) -> String {
        match self {
            Skip::Integrations => "integrations turned Klaviyo off".into(),
            Skip::Disabled => "the source's destination is disabled".into(),
            Skip::Kind(kind) => format!("{} calls are not sent to engage", kind.as_str()),
            Skip::Unreadable => "payload is not a JSON object".into(),
        }
    }
}

/// The event names that are an order.
const ORDER_EVENTS: [&str; 2] = ["Order Completed", "Completed Order"];

/// Maps one Segment call.
pub fn map_segment(
    kind: CallKind,
    mut message: Map<String, Value>,
    settings: &DestinationSettings,
    received_at: Timestamp,
) -> Result<Mapped, Skip> {
    if !settings.enabled {
        return Err(Skip::Disabled);
    }
    let per_message = message_settings(settings, object(&message, "integrations"));
    if !per_message.enabled {
        return Err(Skip::Integrations);
    }
    let mut mapped = Mapped::default();
    let context = match message.remove("context") {
        Some(Value::Object(context)) => Some(context),
        _ => None,
    };
    let context = context.as_ref();
    let user_id = id_text(message.get("userId"));
    let anonymous_id = id_text(message.get("anonymousId"));
    mapped.profile.external_id = user_id.clone();
    mapped.profile.anonymous_id = anonymous_id;
    match kind {
        CallKind::Identify => {
            let traits = match message.remove("traits") {
                Some(Value::Object(traits)) => traits,
                _ => Map::new(),
            };
            apply_traits(&mut mapped, traits, context, true);
            if let (Some(list_id), Some(_)) = (&per_message.list_id, &mapped.profile.email) {
                mapped.list = Some(ListSubscription {
                    list_id: list_id.clone(),
                    confirm_optin: per_message.confirm_optin,
                    confirm_optin_ignored: per_message.confirm_optin_ignored,
                });
            }
        }
        CallKind::Track => {
            if let Some(traits) = context
                .and_then(|c| c.get("traits"))
                .and_then(Value::as_object)
            {
                apply_traits(&mut mapped, traits.clone(), context, false);
            }
            let properties = match message.remove("properties") {
                Some(Value::Object(properties)) => properties,
                _ => Map::new(),
            };
            if mapped.profile.email.is_none() {
                mapped.profile.email = properties.get("email").and_then(email_text);
            }
            let event = message
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned();
            let time = message
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or(received_at);
            let message_id = id_text(message.get("messageId"));
            if ORDER_EVENTS.contains(&event.as_str()) {
                mapped.events =
                    order_events(properties, time, message_id, settings.use_segment_spec);
            } else {
                mapped
                    .events
                    .push(track_event(event, properties, time, message_id));
            }
        }
        CallKind::Alias => {
            mapped.alias_of = id_text(message.get("previousId"));
            mapped.profile.anonymous_id = None;
        }
        other => return Err(Skip::Kind(other)),
    }
    if mapped.profile.email.is_none() {
        mapped.profile.email = user_id.as_deref().and_then(normalize_email);
    }
    for event in &mut mapped.events {
        if let Some(problem) = drop_oversized_value(event) {
            mapped.problems.push(problem);
        }
    }
    Ok(mapped)
}

/// Takes away an event's value beyond [`limits::MAX_EVENT_VALUE`] (the event is kept); the
/// problem to report when it did.
pub fn drop_oversized_value(event: &mut MappedEvent) -> Option<String> {
    let value = event.value.filter(|v| !limits::event_value_fits(*v))?;
    event.value = None;
    event.properties.remove("$value");
    Some(format!(
        "{} event's value {value} is beyond the limit of ±{:e}; the event is kept without a value",
        event.metric_name,
        limits::MAX_EVENT_VALUE
    ))
}

/// An email as engage keys it (see [`Email`]), when the text is one.
pub fn normalize_email(text: &str) -> Option<String> {
    Email::parse(text).ok().map(Email::into_string)
}

fn email_text(value: &Value) -> Option<String> {
    value.as_str().and_then(normalize_email)
}

fn object<'a>(message: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    message.get(key).and_then(Value::as_object)
}

/// An id-like value as text: strings (trimmed, non-empty) and numbers.
fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A scalar as text (strings non-empty, numbers, booleans).
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number, also from numeric text (`"19.99"`).
fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// The first of several spellings that has a value; every spelling is consumed.
fn take_first(traits: &mut Map<String, Value>, keys: &[&str]) -> Option<Value> {
    let mut found = None;
    for key in keys {
        if let Some(value) = traits.remove(*key) {
            if found.is_none() && !value.is_null() {
                found = Some(value);
            }
        }
    }
    found
}

/// Standard trait spellings: Segment's camelCase and snake_case, and Klaviyo's legacy `$` keys.
const EMAIL: &[&str] = &["email", "$email"];
const FIRST_NAME: &[&str] = &["firstName", "first_name", "firstname", "$first_name"];
const LAST_NAME: &[&str] = &["lastName", "last_name", "lastname", "$last_name"];
const PHONE: &[&str] = &["phone", "phoneNumber", "phone_number", "$phone_number"];
const TITLE: &[&str] = &["title", "$title"];
const ORGANIZATION: &[&str] = &["organization", "$organization"];
const IMAGE: &[&str] = &["avatar", "image", "$image"];
const ADDRESS1: &[&str] = &["street", "address1", "address_1", "line1", "$address1"];
const ADDRESS2: &[&str] = &["street2", "address2", "address_2", "line2", "$address2"];
const CITY: &[&str] = &["city", "$city"];
const REGION: &[&str] = &["region", "state", "$region"];
const COUNTRY: &[&str] = &["country", "$country"];
const ZIP: &[&str] = &[
    "postalCode",
    "postal_code",
    "zip",
    "zipCode",
    "zip_code",
    "$zip",
];
/// Keys dropped from custom properties: ids that have their own fields.
const ID_KEYS: &[&str] = &["id", "userId", "user_id", "anonymousId", "$id"];

/// Maps traits (identify's, or a track's `context.traits`) into the profile. With
/// `keep_custom`, the traits that are no standard field become custom properties.
fn apply_traits(
    mapped: &mut Mapped,
    mut rest: Map<String, Value>,
    context: Option<&Map<String, Value>>,
    keep_custom: bool,
) {
    let profile = &mut mapped.profile;
    let mut bad_email = None;
    if let Some(value) = take_first(&mut rest, EMAIL) {
        match value.as_str().map(Email::parse) {
            Some(Ok(email)) => profile.email = Some(email.into_string()),
            Some(Err(err)) => bad_email = Some((value, err)),
            None => bad_email = Some((value, EmailError::NotAnEmail)),
        }
    }
    set_text(&mut profile.first_name, take_first(&mut rest, FIRST_NAME));
    set_text(&mut profile.last_name, take_first(&mut rest, LAST_NAME));
    set_text(&mut profile.title, take_first(&mut rest, TITLE));
    set_text(
        &mut profile.organization,
        take_first(&mut rest, ORGANIZATION),
    );
    if profile.organization.is_none() {
        profile.organization = match rest.get("company") {
            Some(Value::Object(company)) => text(company.get("name")),
            Some(Value::String(name)) if !name.trim().is_empty() => Some(name.trim().to_owned()),
            _ => None,
        };
    }
    set_text(&mut profile.image, take_first(&mut rest, IMAGE));

    let mut location = Location::default();
    // Fields of the address object win over flat ones of the same meaning.
    if let Some(Value::Object(mut address)) = rest.remove("address") {
        fill_location(&mut location, &mut address);
    }
    fill_location(&mut location, &mut rest);
    if let Some(context) = context {
        if location.timezone.is_none() {
            location.timezone = text(context.get("timezone"));
        }
        if location.ip.is_none() {
            location.ip = text(context.get("ip"));
        }
        if let Some(loc) = context.get("location").and_then(Value::as_object) {
            location.latitude = number(loc.get("latitude"));
            location.longitude = number(loc.get("longitude"));
        }
        if profile.locale.is_none() {
            profile.locale = text(context.get("locale"));
        }
    }
    if let Some(tz) = take_first(&mut rest, &["timezone", "$timezone"]) {
        location.timezone = text(Some(&tz)).or(location.timezone);
    }

    if let Some(raw) = take_first(&mut rest, PHONE) {
        if let Some(raw_text) = text(Some(&raw)) {
            let country = location
                .country
                .as_deref()
                .and_then(phone::country_code)
                .or_else(|| profile.locale.as_deref().and_then(phone::locale_country));
            match phone::normalize(&raw_text, country) {
                Ok(e164) => profile.phone_number = Some(e164),
                Err(reason) => {
                    mapped
                        .problems
                        .push(format!("phone {raw_text:?} kept as a property: {reason}"));
                    if keep_custom || profile.phone_number.is_none() {
                        profile.properties.insert("phone".into(), raw);
                    }
                }
            }
        }
    }
    profile.location = location;

    if let Some((value, err)) = bad_email {
        mapped
            .problems
            .push(format!("email {value} {err}; kept as a property"));
        profile.properties.insert("email".into(), value);
    }
    if keep_custom {
        for key in ID_KEYS {
            rest.remove(*key);
        }
        for (key, value) in rest {
            if !value.is_null() {
                profile.properties.insert(key, value);
            }
        }
    }
}

fn set_text(slot: &mut Option<String>, value: Option<Value>) {
    if let Some(t) = text(value.as_ref()) {
        *slot = Some(t);
    }
}

fn fill_location(location: &mut Location, source: &mut Map<String, Value>) {
    let mut fill = |slot: &mut Option<String>, keys: &[&str]| {
        let value = take_first(source, keys);
        if slot.is_none() {
            *slot = text(value.as_ref());
        }
    };
    fill(&mut location.address1, ADDRESS1);
    fill(&mut location.address2, ADDRESS2);
    fill(&mut location.city, CITY);
    fill(&mut location.region, REGION);
    fill(&mut location.country, COUNTRY);
    fill(&mut location.zip, ZIP);
}

/// A track call's one event.
fn track_event(
    name: String,
    mut properties: Map<String, Value>,
    time: Timestamp,
    message_id: Option<String>,
) -> MappedEvent {
    let value = number(properties.get("revenue"));
    let value_currency = text(properties.get("currency"));
    let unique_id = text(properties.get("eventId")).or(message_id);
    if let Some(id) = &unique_id {
        properties.insert("$event_id".into(), Value::String(id.clone()));
    }
    if let Some(v) = value {
        properties.insert("$value".into(), json_number(v));
    }
    MappedEvent {
        metric_name: name,
        time,
        value,
        value_currency,
        unique_id,
        properties,
    }
}

fn json_number(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Product keys that have a place of their own in `Items` and `Ordered Product`.
const PRODUCT_SKU: &[&str] = &["sku", "SKU"];
const PRODUCT_NAME: &[&str] = &["name", "Name"];
const PRODUCT_QUANTITY: &[&str] = &["quantity", "Quantity"];
const PRODUCT_PRICE: &[&str] = &["price", "Price"];
const PRODUCT_CATEGORY: &[&str] = &["category", "Category", "categories"];
const PRODUCT_URL: &[&str] = &["url", "productUrl", "product_url"];
const PRODUCT_IMAGE: &[&str] = &["image_url", "imageUrl", "image"];
const PRODUCT_ID: &[&str] = &["product_id", "productId", "id"];

/// A product's standard fields, read from the keys Segment's spec names, and every key the
/// product came with (`custom`), kept under its own name and value so a template loop or a
/// segment filter on `product_id` finds what was sent.
struct Product {
    id: Option<String>,
    sku: Option<String>,
    name: Option<String>,
    quantity: Option<f64>,
    price: Option<f64>,
    categories: Vec<Value>,
    url: Option<String>,
    image_url: Option<String>,
    custom: Map<String, Value>,
}

impl Product {
    fn read(value: &Value) -> Option<Product> {
        let original = value.as_object()?;
        let mut rest = original.clone();
        let id = take_first(&mut rest, PRODUCT_ID);
        let categories = match take_first(&mut rest, PRODUCT_CATEGORY) {
            Some(Value::Array(items)) => items.into_iter().filter(|v| !v.is_null()).collect(),
            Some(other) => text(Some(&other)).map(Value::String).into_iter().collect(),
            None => Vec::new(),
        };
        let product = Product {
            id: id_text(id.as_ref()),
            sku: text(take_first(&mut rest, PRODUCT_SKU).as_ref()),
            name: text(take_first(&mut rest, PRODUCT_NAME).as_ref()),
            quantity: number(take_first(&mut rest, PRODUCT_QUANTITY).as_ref()),
            price: number(take_first(&mut rest, PRODUCT_PRICE).as_ref()),
            categories,
            url: text(take_first(&mut rest, PRODUCT_URL).as_ref()),
            image_url: text(take_first(&mut rest, PRODUCT_IMAGE).as_ref()),
            custom: original.clone(),
        };
        Some(product)
    }

    /// The product's id for unique ids: its id, else its SKU.
    fn key(&self) -> Option<&str> {
        self.id.as_deref().or(self.sku.as_deref())
    }

    fn insert_common(&self, out: &mut Map<String, Value>) {
        if let Some(id) = &self.id {
            out.insert("ProductID".into(), Value::String(id.clone()));
        }
        if let Some(sku) = &self.sku {
            out.insert("SKU".into(), Value::String(sku.clone()));
        }
        if let Some(name) = &self.name {
            out.insert("Name".into(), Value::String(name.clone()));
        }
        if let Some(q) = self.quantity {
            out.insert("Quantity".into(), json_number(q));
        }
        if let Some(url) = &self.url {
            out.insert("Product URL".into(), Value::String(url.clone()));
        }
        if let Some(url) = &self.image_url {
            out.insert("Image URL".into(), Value::String(url.clone()));
        }
    }

    /// The product as a line of the order's `Items`.
    fn item(&self) -> Value {
        let mut out = self.custom.clone();
        self.insert_common(&mut out);
        if let Some(price) = self.price {
            out.insert("Item Price".into(), json_number(price));
            out.insert(
                "Row Total".into(),
                json_number(price * self.quantity.unwrap_or(1.0)),
            );
        }
        out.insert("Categories".into(), Value::Array(self.categories.clone()));
        Value::Object(out)
    }
}

/// The order event and one `Ordered Product` per product.
fn order_events(
    mut properties: Map<String, Value>,
    time: Timestamp,
    message_id: Option<String>,
    use_segment_spec: bool,
) -> Vec<MappedEvent> {
    let order_id = id_text(take_first(&mut properties, &["order_id", "orderId"]).as_ref());
    let revenue = take_first(&mut properties, &["revenue"]);
    let total = take_first(&mut properties, &["total"]);
    let value = number(revenue.as_ref()).or(number(total.as_ref()));
    let value_currency = text(properties.get("currency"));
    let products: Vec<Product> = match properties.remove("products") {
        Some(Value::Array(items)) => items.iter().filter_map(Product::read).collect(),
        _ => Vec::new(),
    };
    let explicit = text(properties.remove("eventId").as_ref());
    let order_key = explicit.or(order_id.clone()).or(message_id);

    let mut categories: Vec<Value> = Vec::new();
    for product in &products {
        for c in &product.categories {
            if !categories.contains(c) {
                categories.push(c.clone());
            }
        }
    }
    let item_names: Vec<Value> = products
        .iter()
        .filter_map(|p| p.name.clone().map(Value::String))
        .collect();
    let items: Vec<Value> = products.iter().map(Product::item).collect();

    let mut order = properties.clone();
    if let Some(id) = &order_id {
        order.insert("OrderId".into(), Value::String(id.clone()));
    }
    if let Some(key) = &order_key {
        order.insert("$event_id".into(), Value::String(key.clone()));
    }
    if let Some(v) = value {
        order.insert("$value".into(), json_number(v));
    }
    order.insert("Categories".into(), Value::Array(categories));
    order.insert("Item Names".into(), Value::Array(item_names));
    order.insert("Items".into(), Value::Array(items));
    let name = if use_segment_spec {
        "Order Completed"
    } else {
        "Placed Order"
    };
    let mut events = vec![MappedEvent {
        metric_name: name.into(),
        time,
        value,
        value_currency: value_currency.clone(),
        unique_id: order_key.clone(),
        properties: order,
    }];
    for (idx, product) in products.iter().enumerate() {
        let mut props = product.custom.clone();
        product.insert_common(&mut props);
        props.insert(
            "Product Categories".into(),
            Value::Array(product.categories.clone()),
        );
        if let Some(id) = &order_id {
            props.insert("OrderId".into(), Value::String(id.clone()));
        }
        let line = product
            .key()
            .map(str::to_owned)
            .unwrap_or_else(|| idx.to_string());
        let unique_id = order_key.as_ref().map(|order| format!("{order}_{line}"));
        if let Some(id) = &unique_id {
            props.insert("$event_id".into(), Value::String(id.clone()));
        }
        if let Some(price) = product.price {
            props.insert("$value".into(), json_number(price));
        }
        events.push(MappedEvent {
            metric_name: "Ordered Product".into(),
            time,
            value: product.price,
            value_currency: value_currency.clone(),
            unique_id,
            properties: props,
        });
    }
    events
}

/// An API profile input, checked and normalised as Segment traits are: email normalised (see
/// [`Email`]), phone to E.164 (refused when it cannot be); its properties within the
/// [`limits`].
pub fn normalize_input(mut input: ProfileInput) -> Result<ProfileInput, (String, String)> {
    limits::check_properties(&input.properties)
        .map_err(|limit| (limit.field(), limit.to_string()))?;
    if let Some(email) = input.email.take() {
        input.email = Some(
            Email::parse(&email)
                .map_err(|err| ("email".to_owned(), format!("{email:?} {err}")))?
                .into_string(),
        );
    }
    if let Some(raw) = input.phone_number.take() {
        let country = input
            .location
            .country
            .as_deref()
            .and_then(phone::country_code)
            .or_else(|| input.locale.as_deref().and_then(phone::locale_country));
        input.phone_number =
            Some(phone::normalize(&raw, country).map_err(|e| ("phone_number".to_owned(), e))?);
    }
    for field in [&mut input.external_id, &mut input.anonymous_id] {
        if let Some(id) = field.take() {
            let id = id.trim().to_owned();
            if !id.is_empty() {
                *field = Some(id);
            }
        }
    }
    Ok(input)
}

#[cfg(test)]
mod tests;
