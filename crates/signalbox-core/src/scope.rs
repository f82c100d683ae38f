//! What a private API key may do.
//!
//! A key holds a set of [`Scope`]s: Klaviyo's own (`profiles:read`, `events:write`, …, named
//! as Klaviyo names them, so a key scoped for an SDK integration here is scoped as it would be
//! there), `full` (every Klaviyo scope), and `admin` (Signalbox's admin API: keys, sources and
//! their write keys, settings, the raw call log and rejections, imports, the test clock).
//!
//! As in Klaviyo, a `:write` scope includes the `:read` scope of the same resource. `full`
//! does not include `admin`, and `admin` does not include any Klaviyo scope.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A Klaviyo resource that scopes are granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Accounts,
    Campaigns,
    Catalogs,
    Conversations,
    CouponCodes,
    Coupons,
    CustomObjects,
    DataPrivacy,
    Events,
    Flows,
    Forms,
    Images,
    Lists,
    Metrics,
    Profiles,
    PushTokens,
    Reviews,
    Segments,
    Subscriptions,
    Tags,
    Templates,
    TrackingSettings,
    WebFeeds,
    Webhooks,
}

impl Resource {
    pub const ALL: [Resource; 24] = [
        Resource::Accounts,
        Resource::Campaigns,
        Resource::Catalogs,
        Resource::Conversations,
        Resource::CouponCodes,
        Resource::Coupons,
        Resource::CustomObjects,
        Resource::DataPrivacy,
        Resource::Events,
        Resource::Flows,
        Resource::Forms,
        Resource::Images,
        Resource::Lists,
        Resource::Metrics,
        Resource::Profiles,
        Resource::PushTokens,
        Resource::Reviews,
        Resource::Segments,
        Resource::Subscriptions,
        Resource::Tags,
        Resource::Templates,
        Resource::TrackingSettings,
        Resource::WebFeeds,
        Resource::Webhooks,
    ];

    /// The name in a scope, e.g. `data-privacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Accounts => "accounts",
            Resource::Campaigns => "campaigns",
            Resource::Catalogs => "catalogs",
            Resource::Conversations => "conversations",
            Resource::CouponCodes => "coupon-codes",
            Resource::Coupons => "coupons",
            Resource::CustomObjects => "custom-objects",
            Resource::DataPrivacy => "data-privacy",
            Resource::Events => "events",
            Resource::Flows => "flows",
            Resource::Forms => "forms",
            Resource::Images => "images",
            Resource::Lists => "lists",
            Resource::Metrics => "metrics",
            Resource::Profiles => "profiles",
            Resource::PushTokens => "push-tokens",
            Resource::Reviews => "reviews",
            Resource::Segments => "segments",
            Resource::Subscriptions => "subscriptions",
            Resource::Tags => "tags",
            Resource::Templates => "templates",
            Resource::TrackingSettings => "tracking-settings",
            Resource::WebFeeds => "web-feeds",
            Resource::Webhooks => "webhooks",
        }
    }

    /// Whether Klaviyo has a `:write` scope for it (`accounts` is read-only).
    pub fn writable(self) -> bool {
        self != Resource::Accounts
    }
}

/// Read or write access to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One scope a key can hold, or a route can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every Klaviyo scope (Klaviyo's "full access" key).
    Full,
    /// Signalbox's admin API.
    Admin,
    /// A Klaviyo scope, `resource:read` or `resource:write`.
    Klaviyo(Resource, Access),
}

impl Scope {
    /// The name of `full`, which holds every Klaviyo scope.
    pub const FULL: &'static str = "full";
    /// The name of `admin`.
    pub const ADMIN: &'static str = "admin";

    pub const fn read(resource: Resource) -> Scope {
        Scope::Klaviyo(resource, Access::Read)
    }

    pub const fn write(resource: Resource) -> Scope {
        Scope::Klaviyo(resource, Access::Write)
    }

    /// Every valid scope, in the order listings show them.
    pub fn all() -> impl Iterator<Item = Scope> {
        [Scope::Full, Scope::Admin]
            .into_iter()
            .chain(Resource::ALL.into_iter().flat_map(|resource| {
                let write = resource.writable().then_some(Scope::write(resource));
                std::iter::once(Scope::read(resource)).chain(write)
            }))
    }

    /// Every valid scope's name, comma-separated: what an error about an unknown one lists.
    pub fn valid_names() -> String {
        Scope::all()
            .map(|scope| scope.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Full => f.write_str(Scope::FULL),
            Scope::Admin => f.write_str(Scope::ADMIN),
            Scope::Klaviyo(resource, access) => {
                write!(f, "{}:{}", resource.as_str(), access.as_str())
            }
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A scope name that is not one of [`Scope::all`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope '{name}'; valid scopes are: {}", Scope::valid_names())]
pub struct UnknownScope {
    pub name: String,
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(name: &str) -> Result<Scope, UnknownScope> {
        let unknown = || UnknownScope {
            name: name.to_owned(),
        };
        match name {
            Scope::FULL => return Ok(Scope::Full),
            Scope::ADMIN => return Ok(Scope::Admin),
            _ => {}
        }
        let (resource, access) = name.split_once(':').ok_or_else(unknown)?;
        let resource = Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == resource)
            .ok_or_else(unknown)?;
        match access {
            "read" => Ok(Scope::read(resource)),
            "write" if resource.writable() => Ok(Scope::write(resource)),
            _ => Err(unknown()),
        }
    }
}

/// The scopes a key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// A key created without naming scopes: every Klaviyo scope, not `admin`.
    pub fn default_for_new_key() -> Scopes {
        Scopes::from_iter([Scope::Full])
    }

    /// What keys made before scopes existed hold: they could do everything, and still can.
    pub fn before_scopes() -> Scopes {
        Scopes::from_iter([Scope::Full, Scope::Admin])
    }

    /// Parses names as a user gives them: each item may hold several, separated by commas or
    /// spaces (`--scope profiles:read,events:write --scope admin`).
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Scopes, UnknownScope> {
        let mut scopes = BTreeSet::new();
        for item in items {
            for name in item.split(|c: char| c == ',' || c.is_whitespace()) {
                if !name.is_empty() {
                    scopes.insert(name.parse()?);
                }
            }
        }
        Ok(Scopes(scopes))
    }

    /// Reads the stored form ([`Scopes::to_stored`]). Names this version does not know grant
    /// nothing and are returned apart, so a key written by a newer version keeps working for
    /// what this one understands.
    pub fn from_stored(stored: &str) -> (Scopes, Vec<String>) {
        let mut scopes = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in stored.split_whitespace() {
            match name.parse() {
                Ok(scope) => {
                    scopes.insert(scope);
                }
                Err(_) => unknown.push(name.to_owned()),
            }
        }
        (Scopes(scopes), unknown)
    }

    /// Space-separated names, as OAuth writes scopes.
    pub fn to_stored(&self) -> String {
        self.names().join(" ")
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// Whether these scopes grant `needed`: `full` grants every Klaviyo scope, a `:write`
    /// scope grants the `:read` of its resource, `admin` is granted only by itself.
    pub fn allows(&self, needed: Scope) -> bool {
        match needed {
            Scope::Full | Scope::Admin => self.contains(needed),
            Scope::Klaviyo(resource, access) => {
                self.contains(Scope::Full)
                    || self.contains(Scope::write(resource))
                    || (access == Access::Read && self.contains(Scope::read(resource)))
            }
        }
    }

    /// The scopes of `needed` these do not grant, in the order given.
    pub fn missing(&self, needed: &[Scope]) -> Vec<Scope> {
        needed
            .iter()
            .copied()
            .filter(|scope| !self.allows(*scope))
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Scopes {
        Scopes(iter.into_iter().collect())
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let names: Vec<String> = Scope::all().map(|s| s.to_string()).collect();
        assert!(names.contains(&"profiles:read".to_owned()));
        assert!(names.contains(&"data-privacy:write".to_owned()));
        assert!(names.contains(&"accounts:read".to_owned()));
        assert!(!names.contains(&"accounts:write".to_owned()));
        for name in &names {
            assert_eq!(name.parse::<Scope>().unwrap().to_string(), *name);
        }
        assert_eq!(names.len(), 2 + 24 * 2 - 1);
    }

    #[test]
    fn unknown_names_are_refused_with_the_valid_ones() {
        for bad in [
            "profiles",
            "profiles:delete",
            "profile:read",
            "accounts:write",
            "Full",
            "",
            ":read",
        ] {
            let err = bad.parse::<Scope>().unwrap_err();
            assert_eq!(err.name, bad);
            let message = err.to_string();
            assert!(message.contains(&format!("'{bad}'")), "{message}");
            assert!(
                message.contains("profiles:read, profiles:write"),
                "{message}"
            );
            assert!(message.contains("full, admin"), "{message}");
        }
    }

    #[test]
    fn parses_lists_as_users_write_them() {
        let scopes =
            Scopes::parse(["profiles:read,events:write", "admin", " lists:read "]).unwrap();
        assert_eq!(
            scopes.names(),
            ["admin", "events:write", "lists:read", "profiles:read"]
        );
        let err = Scopes::parse(["profiles:read,profiles:rwite"]).unwrap_err();
        assert_eq!(err.name, "profiles:rwite");
        assert!(Scopes::parse(["", ","]).unwrap().is_empty());
    }

    #[test]
    fn write_includes_read_and_full_every_klaviyo_scope() {
        let scopes = Scopes::parse(["profiles:write", "events:read"]).unwrap();
        assert!(scopes.allows(Scope::read(Resource::Profiles)));
        assert!(scopes.allows(Scope::write(Resource::Profiles)));
        assert!(scopes.allows(Scope::read(Resource::Events)));
        assert!(!scopes.allows(Scope::write(Resource::Events)));
        assert!(!scopes.allows(Scope::read(Resource::Lists)));
        assert!(!scopes.allows(Scope::Admin));

        let full = Scopes::default_for_new_key();
        assert!(Scope::all()
            .filter(|s| matches!(s, Scope::Klaviyo(..)))
            .all(|s| full.allows(s)));
        assert!(!full.allows(Scope::Admin));

        let admin = Scopes::parse(["admin"]).unwrap();
        assert!(admin.allows(Scope::Admin));
        assert!(!admin.allows(Scope::read(Resource::Profiles)));
        assert_eq!(
            admin.missing(&[Scope::read(Resource::Lists), Scope::Admin]),
            [Scope::read(Resource::Lists)]
        );
    }

    #[test]
    fn stored_form_round_trips_and_ignores_names_it_does_not_know() {
        let scopes = Scopes::before_scopes();
        assert_eq!(scopes.to_stored(), "full admin");
        assert_eq!(Scopes::from_stored("full admin"), (scopes, vec![]));
        let (known, unknown) = Scopes::from_stored("profiles:read  future:read");
        assert_eq!(known.names(), ["profiles:read"]);
        assert_eq!(unknown, ["future:read"]);
        assert!(Scopes::from_stored("").0.is_empty());
    }
}
