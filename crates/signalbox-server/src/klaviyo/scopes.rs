//! What each `/api` route requires of the caller's key, as types.
//!
//! A handler names its requirement in its extractor, `Caller<ProfilesRead>`, so a handler
//! cannot be written without one, and the requirement is read where the route is. The sets
//! are Klaviyo's, per endpoint as its reference documents them (`GET /api/lists/{id}/profiles`
//! needs `lists:read` and `profiles:read`); endpoints of our own follow the same pattern.
//! A key holds a requirement if it holds each scope in it, `:write` granting `:read` and
//! `full` granting all (see [`signalbox_core::Scopes::allows`]).

use signalbox_core::Resource::{
    Events, Flows, Lists, Metrics, Profiles, Segments, Subscriptions, Templates,
};
use signalbox_core::Scope;

/// A route's requirement: every scope in [`Requires::SCOPES`].
pub trait Requires: Send + Sync + 'static {
    const SCOPES: &'static [Scope];
}

macro_rules! requirements {
    ($($(#[$doc:meta])* $name:ident => [$($scope:expr),+ $(,)?];)+) => {$(
        $(#[$doc])*
        pub enum $name {}

        impl Requires for $name {
            const SCOPES: &'static [Scope] = &[$($scope),+];
        }
    )+};
}

requirements! {
    /// Metrics and their aggregates.
    MetricsRead => [Scope::read(Metrics)];
    EventsRead => [Scope::read(Events)];
    EventsWrite => [Scope::write(Events)];
    ProfilesRead => [Scope::read(Profiles)];
    ProfilesWrite => [Scope::write(Profiles)];
    ListsRead => [Scope::read(Lists)];
    ListsWrite => [Scope::write(Lists)];
    /// A list's members.
    ListsProfilesRead => [Scope::read(Lists), Scope::read(Profiles)];
    /// Adding profiles to a list, removing them.
    ListsProfilesWrite => [Scope::write(Lists), Scope::write(Profiles)];
    /// Subscribing and unsubscribing profiles (which can touch a list).
    ListsProfilesSubscriptionsWrite => [
        Scope::write(Lists),
        Scope::write(Profiles),
        Scope::write(Subscriptions),
    ];
    /// Suppressing profiles.
    ProfilesSubscriptionsWrite => [Scope::write(Profiles), Scope::write(Subscriptions)];
    /// Lifting suppressions.
    SubscriptionsWrite => [Scope::write(Subscriptions)];
    /// Templates, and rendering one.
    TemplatesRead => [Scope::read(Templates)];
    TemplatesWrite => [Scope::write(Templates)];
    FlowsRead => [Scope::read(Flows)];
    FlowsWrite => [Scope::write(Flows)];
    /// Segments, and previews of a draft definition (counts only).
    SegmentsRead => [Scope::read(Segments)];
    SegmentsWrite => [Scope::write(Segments)];
    /// A segment's members, a profile's segments, why a profile is in a segment.
    SegmentsProfilesRead => [Scope::read(Segments), Scope::read(Profiles)];
}
