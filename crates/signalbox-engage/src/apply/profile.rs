//! A profile as the applier holds it while a batch runs, and how changes patch it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::store::{ApplyTx, ProfileWrite};
use crate::error::EngageResult;
use crate::limits::{self, PropertyLimit, MAX_PROFILE_PROPERTIES, MAX_PROFILE_PROPERTIES_BYTES};
use crate::model::{Location, Origin, Profile, ProfileId, ProfileInput};

/// Whether an input changes anything kept in `profiles.data`.
fn has_fields(input: &ProfileInput) -> bool {
    input.first_name.is_some()
        || input.last_name.is_some()
        || input.organization.is_some()
        || input.title.is_some()
        || input.image.is_some()
        || input.locale.is_some()
        || !input.location.is_empty()
        || !input.properties.is_empty()
        || !input.unset.is_empty()
}

/// What [`ProfileRow::patch`] did.
#[derive(Debug, Default)]
pub(crate) struct Patched {
    /// Whether anything changed.
    pub changed: bool,
    /// The limit that kept the input's property changes from being applied.
    pub refused: Option<PropertyLimit>,
}

/// What `profiles.data` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProfileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub properties: Map<String, Value>,
    pub created_by: Origin,
    pub updated_by: Origin,
}

/// A profile row. Its JSON `data` is parsed only when something reads or changes it, so a
/// call that only adds an event to a profile never pays for it.
#[derive(Debug, Clone)]
pub(crate) struct ProfileRow {
    pub pk: i64,
    pub id: String,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
    /// Read from `events` when loaded (not kept up to date while applying).
    pub last_event_us: Option<i64>,
    /// A call from a Segment source (or an API write forwarded from one) touched it.
    pub from_segment: bool,
    /// The `userId` a Segment source last gave it.
    pub segment_user_id: Option<String>,
    /// `data` as stored, until parsed.
    raw: Option<String>,
    parsed: Option<ProfileData>,
    /// Columns changed since loaded or saved.
    pub dirty: bool,
    /// `data` changed since loaded or saved.
    data_dirty: bool,
    /// Whether the row is in the table.
    stored: bool,
}

/// The columns of a stored profile row.
pub(crate) struct StoredProfile {
    pub pk: i64,
    pub id: String,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
    pub last_event_us: Option<i64>,
    /// `data` as stored (JSON).
    pub data: String,
    pub from_segment: bool,
    pub segment_user_id: Option<String>,
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl ProfileRow {
    pub(crate) fn new(pk: i64, id: String, at_us: i64, origin: &Origin) -> ProfileRow {
        ProfileRow {
            pk,
            id,
            email: None,
            phone_number: None,
            external_id: None,
            anonymous_id: None,
            created_us: at_us,
            updated_us: at_us,
            last_event_us: None,
            from_segment: false,
            segment_user_id: None,
            raw: None,
            parsed: Some(ProfileData {
                first_name: None,
                last_name: None,
                organization: None,
                title: None,
                image: None,
                locale: None,
                location: Location::default(),
                properties: Map::new(),
                created_by: origin.clone(),
                updated_by: origin.clone(),
            }),
            dirty: true,
            data_dirty: true,
            stored: false,
        }
    }

    /// A row as stored; its `data` is parsed when first read.
    pub(crate) fn stored(row: StoredProfile) -> ProfileRow {
        ProfileRow {
            pk: row.pk,
            id: row.id,
            email: row.email,
            phone_number: row.phone_number,
            external_id: row.external_id,
            anonymous_id: row.anonymous_id,
            created_us: row.created_us,
            updated_us: row.updated_us,
            last_event_us: row.last_event_us,
            raw: Some(row.data),
            from_segment: row.from_segment,
            segment_user_id: row.segment_user_id,
            parsed: None,
            dirty: false,
            data_dirty: false,
            stored: true,
        }
    }

    fn parse(raw: &str) -> ProfileData {
        serde_json::from_str(raw).unwrap_or_else(|err| {
            tracing::error!(error = %err, "unreadable profile data; starting it over");
            ProfileData {
                first_name: None,
                last_name: None,
                organization: None,
                title: None,
                image: None,
                locale: None,
                location: Location::default(),
                properties: Map::new(),
                created_by: Origin {
                    integration: Origin::SIGNALBOX.into(),
                    source: None,
                },
                updated_by: Origin {
                    integration: Origin::SIGNALBOX.into(),
                    source: None,
                },
            }
        })
    }

    /// The data, parsed (once).
    pub(crate) fn data(&mut self) -> &ProfileData {
        self.data_mut_clean()
    }

    fn data_mut_clean(&mut self) -> &mut ProfileData {
        if self.parsed.is_none() {
            let raw = self.raw.take().unwrap_or_default();
            self.parsed = Some(ProfileRow::parse(&raw));
        }
        self.parsed.as_mut().expect("parsed")
    }

    /// The data, to change it: it will be written back.
    fn data_mut(&mut self) -> &mut ProfileData {
        self.data_dirty = true;
        self.dirty = true;
        self.data_mut_clean()
    }

    /// A copy of the data without caching the parse.
    fn data_copy(&self) -> ProfileData {
        match (&self.parsed, &self.raw) {
            (Some(data), _) => data.clone(),
            (None, Some(raw)) => ProfileRow::parse(raw),
            (None, None) => ProfileRow::parse(""),
        }
    }

    /// Marks the row changed without changing its columns (consent, list membership), so
    /// that saving it moves `changed_seq` and the change feed reports the profile.
    pub(crate) fn mark_changed(&mut self) {
        self.dirty = true;
    }

    /// Writes the row back if it changed; `seq` (the batch's last log entry) goes to
    /// `changed_seq`, which the change feed follows.
    pub(crate) fn save(&mut self, tx: &impl ApplyTx, seq: i64) -> EngageResult<()> {
        if !self.dirty {
            return Ok(());
        }
        if !self.stored || self.data_dirty {
            let data = serde_json::to_string(self.data()).expect("profile data serialises");
            tx.save_profile(self, ProfileWrite::Full { data: &data }, seq)?;
        } else {
            tx.save_profile(self, ProfileWrite::Columns, seq)?;
        }
        self.stored = true;
        self.dirty = false;
        self.data_dirty = false;
        Ok(())
    }

    pub(crate) fn to_profile(&self) -> Profile {
        let data = self.data_copy();
        Profile {
            id: ProfileId(self.id.clone()),
            email: self.email.clone(),
            phone_number: self.phone_number.clone(),
            external_id: self.external_id.clone(),
            anonymous_id: self.anonymous_id.clone(),
            first_name: data.first_name,
            last_name: data.last_name,
            organization: data.organization,
            title: data.title,
            image: data.image,
            locale: data.locale,
            location: data.location,
            properties: data.properties,
            created: ts(self.created_us),
            updated: ts(self.updated_us),
            last_event_date: self.last_event_us.map(ts),
            created_by: data.created_by,
            updated_by: data.updated_by,
        }
    }

    /// Whether `input`'s property changes fit this profile's limits.
    pub(crate) fn properties_fit(&mut self, input: &ProfileInput) -> Result<(), PropertyLimit> {
        if input.properties.is_empty() {
            return Ok(());
        }
        let mut properties = self.data().properties.clone();
        limits::apply_properties(&mut properties, &input.properties).map(|_| ())
    }

    /// Applies the non-identifier fields of `input` (see [`Patched`]): its property changes
    /// only if the result stays within the limits of [`limits`].
    pub(crate) fn patch(&mut self, input: &ProfileInput, origin: &Origin, at_us: i64) -> Patched {
        if !has_fields(input) {
            return Patched::default();
        }
        let mut changed = false;
        let d = self.data_mut_clean();
        let mut set = |slot: &mut Option<String>, value: &Option<String>| {
            if value.is_some() && slot != value {
                slot.clone_from(value);
                changed = true;
            }
        };
        set(&mut d.first_name, &input.first_name);
        set(&mut d.last_name, &input.last_name);
        set(&mut d.organization, &input.organization);
        set(&mut d.title, &input.title);
        set(&mut d.image, &input.image);
        set(&mut d.locale, &input.locale);
        let l = &input.location;
        set(&mut d.location.address1, &l.address1);
        set(&mut d.location.address2, &l.address2);
        set(&mut d.location.city, &l.city);
        set(&mut d.location.country, &l.country);
        set(&mut d.location.region, &l.region);
        set(&mut d.location.zip, &l.zip);
        set(&mut d.location.timezone, &l.timezone);
        set(&mut d.location.ip, &l.ip);
        for (slot, value) in [
            (&mut d.location.latitude, l.latitude),
            (&mut d.location.longitude, l.longitude),
        ] {
            if value.is_some() && *slot != value {
                *slot = value;
                changed = true;
            }
        }
        let mut refused = None;
        match limits::apply_properties(&mut d.properties, &input.properties) {
            Ok(properties_changed) => changed |= properties_changed,
            Err(limit) => refused = Some(limit),
        }
        for name in &input.unset {
            changed |= self.unset(name);
        }
        if changed {
            self.touch(origin, at_us);
        }
        Patched { changed, refused }
    }

    /// Clears a standard attribute by its API name, or removes a custom property.
    fn unset(&mut self, name: &str) -> bool {
        let d = self.data_mut_clean();
        let slot = match name {
            "first_name" => &mut d.first_name,
            "last_name" => &mut d.last_name,
            "organization" => &mut d.organization,
            "title" => &mut d.title,
            "image" => &mut d.image,
            "locale" => &mut d.locale,
            "location.address1" => &mut d.location.address1,
            "location.address2" => &mut d.location.address2,
            "location.city" => &mut d.location.city,
            "location.country" => &mut d.location.country,
            "location.region" => &mut d.location.region,
            "location.zip" => &mut d.location.zip,
            "location.timezone" => &mut d.location.timezone,
            "location.ip" => &mut d.location.ip,
            "location.latitude" => return d.location.latitude.take().is_some(),
            "location.longitude" => return d.location.longitude.take().is_some(),
            "location" => {
                let had = !d.location.is_empty();
                d.location = Location::default();
                return had;
            }
            _ => return d.properties.remove(name).is_some(),
        };
        slot.take().is_some()
    }

    /// Records that a Segment source (directly or through a forwarded API write) touched the
    /// profile, with the `userId` it gave. Dirties the row only when something is new: the
    /// first time, or a different user id.
    pub(crate) fn mark_from_segment(&mut self, user_id: Option<&str>) {
        if !self.from_segment {
            self.from_segment = true;
            self.dirty = true;
        }
        if let Some(user_id) = user_id {
            if self.segment_user_id.as_deref() != Some(user_id) {
                self.segment_user_id = Some(user_id.to_owned());
                self.dirty = true;
            }
        }
    }

    pub(crate) fn touch(&mut self, origin: &Origin, at_us: i64) {
        self.updated_us = self.updated_us.max(at_us);
        self.data_mut().updated_by = origin.clone();
    }

    /// Takes over what `other` knows and this profile does not (a merge: this one survives).
    pub(crate) fn absorb(&mut self, other: &ProfileRow) {
        fn fill(slot: &mut Option<String>, value: &Option<String>) {
            if slot.is_none() {
                slot.clone_from(value);
            }
        }
        fill(&mut self.email, &other.email);
        fill(&mut self.phone_number, &other.phone_number);
        fill(&mut self.external_id, &other.external_id);
        fill(&mut self.anonymous_id, &other.anonymous_id);
        fill(&mut self.segment_user_id, &other.segment_user_id);
        self.from_segment |= other.from_segment;
        let other_data = other.data_copy();
        let (d, o) = (self.data_mut(), &other_data);
        fill(&mut d.first_name, &o.first_name);
        fill(&mut d.last_name, &o.last_name);
        fill(&mut d.organization, &o.organization);
        fill(&mut d.title, &o.title);
        fill(&mut d.image, &o.image);
        fill(&mut d.locale, &o.locale);
        let (l, ol) = (&mut d.location, &o.location);
        fill(&mut l.address1, &ol.address1);
        fill(&mut l.address2, &ol.address2);
        fill(&mut l.city, &ol.city);
        fill(&mut l.country, &ol.country);
        fill(&mut l.region, &ol.region);
        fill(&mut l.zip, &ol.zip);
        fill(&mut l.timezone, &ol.timezone);
        fill(&mut l.ip, &ol.ip);
        l.latitude = l.latitude.or(ol.latitude);
        l.longitude = l.longitude.or(ol.longitude);
        // The survivor takes the other's properties it lacks while they fit its limits.
        let mut size = limits::json_len(&d.properties);
        for (key, value) in &o.properties {
            if d.properties.contains_key(key) || d.properties.len() >= MAX_PROFILE_PROPERTIES {
                continue;
            }
            let grows = limits::json_len(key) + limits::json_len(value) + 2;
            if size + grows > MAX_PROFILE_PROPERTIES_BYTES {
                continue;
            }
            size += grows;
            d.properties.insert(key.clone(), value.clone());
        }
        if other.created_us < self.created_us {
            self.created_us = other.created_us;
            self.data_mut().created_by = other_data.created_by.clone();
        }
        self.dirty = true;
    }
}
