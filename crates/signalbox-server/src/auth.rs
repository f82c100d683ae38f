//! Key authentication with in-memory caches.
//!
//! Write keys are looked up by their SHA-256 digest and then compared in constant time, so
//! neither the lookup nor the comparison leaks the key through timing. The cache is refreshed
//! from the store every second, so keys created, rotated, disabled or deleted by another
//! process (the CLI against a running server) take effect within a second; a key missing from
//! the cache is looked up in the store once before it is refused.
//!
//! Private keys (`pk_…`) the store accepted are remembered for a second ([`PrivateKeys`]), by
//! the same rule: a Klaviyo API or admin request then costs no store round trip, and a key
//! deleted by another process stops working within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use signalbox_core::{ApiKey, ApiKeyInfo, Clock, SourceId, WriteKey};
use signalbox_store::{Store, StoreError, StoreResult, WriteKeyRecord};

/// How long a private key the store accepted is taken without asking it again.
pub const PRIVATE_KEY_TTL: Duration = Duration::from_secs(1);
/// Private keys remembered at most (the keys in use: a handful in practice).
const PRIVATE_KEY_CAPACITY: usize = 1_024;

/// Private keys checked against the store in the last [`PRIVATE_KEY_TTL`], by digest. Only
/// keys the store accepted are kept: an unknown key is looked up every time. A key deleted
/// through this server's admin API is forgotten at once ([`PrivateKeys::forget_all`]).
pub struct PrivateKeys {
    store: Arc<dyn Store>,
    ttl: Duration,
    checked: Mutex<Checked>,
}

/// The keys remembered, and how many times they were all forgotten: a lookup that began
/// before a [`PrivateKeys::forget_all`] does not put back what it found.
#[derive(Default)]
struct Checked {
    keys: HashMap<String, (ApiKeyInfo, Instant)>,
    forgotten: u64,
}

impl PrivateKeys {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> PrivateKeys {
        PrivateKeys {
            store,
            ttl,
            checked: Mutex::new(Checked::default()),
        }
    }

    /// The key's name and scopes, or `None` when the store knows no such key.
    pub async fn authenticate(&self, key: &ApiKey) -> StoreResult<Option<ApiKeyInfo>> {
        // The digest of the key presented: an entry under it was made for this very key.
        let digest = key.digest_hex();
        let forgotten = {
            let checked = self.lock();
            if let Some((info, at)) = checked.keys.get(&digest) {
                if at.elapsed() < self.ttl {
                    return Ok(Some(info.clone()));
                }
            }
            checked.forgotten
        };
        let found = self.store.authenticate_api_key(key).await?;
        let mut checked = self.lock();
        match &found {
            Some(info) if checked.forgotten == forgotten => {
                if checked.keys.len() >= PRIVATE_KEY_CAPACITY {
                    let ttl = self.ttl;
                    checked.keys.retain(|_, (_, at)| at.elapsed() < ttl);
                    if checked.keys.len() >= PRIVATE_KEY_CAPACITY {
                        checked.keys.clear();
                    }
                }
                checked.keys.insert(digest, (info.clone(), Instant::now()));
            }
            _ => {
                checked.keys.remove(&digest);
            }
        }
        Ok(found)
    }

    /// Forgets every key: after one was deleted or changed here.
    pub fn forget_all(&self) {
        let mut checked = self.lock();
        checked.keys.clear();
        checked.forgotten += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Checked> {
        self.checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing write key: send it as HTTP Basic user name or as \"writeKey\" in the body")]
    Missing,
    #[error("unknown write key")]
    Unknown,
    #[error("write key is disabled or expired")]
    Disabled,
    #[error("write keys are unavailable: {0}")]
    Store(String),
}

/// The authenticated source of a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub source_id: SourceId,
    pub source_name: String,
}

pub struct KeyCache {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: RwLock<HashMap<[u8; 32], WriteKeyRecord>>,
}

impl KeyCache {
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<KeyCache>, StoreError> {
        let cache = Arc::new(KeyCache {
            store,
            clock,
            keys: RwLock::new(HashMap::new()),
        });
        cache.refresh().await?;
        Ok(cache)
    }

    /// Reloads every key from the store.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let records = self.store.write_keys().await?;
        let map = records.into_iter().map(|r| (r.key.digest(), r)).collect();
        *self.keys.write().expect("key cache lock") = map;
        Ok(())
    }

    /// Refreshes every `every` until the returned task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            // The cache was just loaded: the first reload is one period away.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = cache.refresh().await {
                    tracing::warn!(error = %err, "refreshing write keys failed");
                }
            }
        })
    }

    pub async fn authenticate(&self, key: &WriteKey) -> Result<Authenticated, AuthError> {
        let digest = key.digest();
        let cached = self
            .keys
            .read()
            .expect("key cache lock")
            .get(&digest)
            .cloned();
        let record = match cached {
            Some(record) => record,
            None => {
                let found = self
                    .store
                    .find_write_key(digest)
                    .await
                    .map_err(|e| AuthError::Store(e.to_string()))?
                    .ok_or(AuthError::Unknown)?;
                self.keys
                    .write()
                    .expect("key cache lock")
                    .insert(digest, found.clone());
                found
            }
        };
        if !record.key.ct_eq(key) {
            return Err(AuthError::Unknown);
        }
        if !record.usable_at(self.clock.now()) {
            return Err(AuthError::Disabled);
        }
        Ok(Authenticated {
            source_id: record.source_id,
            source_name: record.source_name,
        })
    }
}

/// Finds the write key of a Tracking API request: HTTP Basic user name (with or without the
/// trailing colon) first, else `writeKey` from the body (alone or beside a Bearer token).
pub fn write_key_from(authorization: Option<&str>, body_key: Option<String>) -> Option<WriteKey> {
    if let Some(header) = authorization {
        let header = header.trim();
        if let Some(encoded) = strip_scheme(header, "basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some(user) = decoded {
                let user = user.split_once(':').map_or(user.as_str(), |(u, _)| u);
                if !user.is_empty() {
                    return Some(WriteKey::new(user));
                }
            }
        }
    }
    body_key.filter(|k| !k.is_empty()).map(WriteKey::new)
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_with_and_without_colon() {
        // "abc123:" and "abc123"
        for header in ["Basic YWJjMTIzOg==", "basic YWJjMTIz"] {
            let key = write_key_from(Some(header), None).unwrap();
            assert_eq!(key.expose(), "abc123");
        }
    }

    #[tokio::test]
    async fn a_private_key_deleted_elsewhere_stops_working_within_the_ttl() {
        use signalbox_core::Scopes;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            signalbox_store::SqliteStore::open(
                dir.path().join("signalbox.db"),
                signalbox_store::sqlite::SqliteOptions::default(),
            )
            .unwrap(),
        );
        let ttl = Duration::from_millis(300);
        let keys = PrivateKeys::new(Arc::clone(&store), ttl);
        let scopes = Scopes::parse(["profiles:read"]).unwrap();
        let (_, key) = store.create_api_key("reader", &scopes).await.unwrap();
        let info = keys.authenticate(&key).await.unwrap().unwrap();
        assert_eq!(info.name, "reader");
        assert!(keys
            .authenticate(&ApiKey::new("pk_nope"))
            .await
            .unwrap()
            .is_none());

        // Deleted by another process (the CLI): taken from memory for at most the TTL.
        store.delete_api_key("reader").await.unwrap();
        let started = Instant::now();
        assert!(keys.authenticate(&key).await.unwrap().is_some());
        tokio::time::sleep(ttl.saturating_sub(started.elapsed())).await;
        assert!(keys.authenticate(&key).await.unwrap().is_none());

        // Deleted here: refused at once.
        let (_, key) = store.create_api_key("writer", &scopes).await.unwrap();
        assert!(keys.authenticate(&key).await.unwrap().is_some());
        store.delete_api_key("writer").await.unwrap();
        keys.forget_all();
        assert!(keys.authenticate(&key).await.unwrap().is_none());
    }

    #[test]
    fn bearer_uses_the_body_key() {
        let key = write_key_from(Some("Bearer token"), Some("body".into())).unwrap();
        assert_eq!(key.expose(), "body");
        assert!(write_key_from(Some("Bearer token"), None).is_none());
    }
}
