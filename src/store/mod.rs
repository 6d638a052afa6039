//! Answers kept in the state backend, each under an id in a namespace of its own: stored
//! Responses API answers ([`RESPONSES`], for `previous_response_id` and `GET`/`DELETE
//! /v1/responses/{id}`) and cached answers ([`ANSWERS`], the exact-match cache).
//!
//! An entry belongs to an owner: for a stored response, the client key that created it, by
//! the key's configured name (never the key). Only a caller with that same owner can read or
//! delete it, and to everyone else it is absent (the caller answers 404 either way, so nobody
//! learns that an id exists). Without client auth the owner is `None`, and an entry stored
//! then is visible only to owner `None` — not to keys configured by a later reload.
//!
//! Entries live where `state.backend` says: in this process (a map capped in entries and
//! bytes, the least recently used evicted first) or in Redis, shared by every instance on it,
//! under `{state.key_prefix}{namespace}{id}`. Either way they expire after their TTL. A reload
//! that keeps the backend keeps the entries (and the Redis connection); new caps and TTLs apply
//! to what is stored next.
//!
//! The Redis value is the owner, length-prefixed, then the body: `-` + body without an owner,
//! `+{len}:{owner}` + body with one. A body can therefore not forge an owner, and a value that
//! does not decode (another key under the prefix) counts as absent.

mod memory;

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::config::{StateBackend, StateSettings};
pub use crate::limits::StoreError;
use crate::limits::{self, RedisStore, Rider};
use memory::{Limits, MemoryResponses};

/// A stored entry: who may read it and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The configured name of the client key that created it; `None` without client auth.
    pub owner: Option<String>,
    /// Opaque bytes (the JSON the caller built).
    pub body: Bytes,
}

impl StoredResponse {
    /// The Redis value: the owner, length-prefixed, then the body.
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = owner_tag(self.owner.as_deref()).into_owned();
        out.extend_from_slice(&self.body);
        out
    }

    /// The inverse of [`owner_tag`] and the body after it; `None` for anything not so written.
    fn decode(value: Bytes) -> Option<StoredResponse> {
        match value.first()? {
            b'-' => Some(StoredResponse {
                owner: None,
                body: value.slice(1..),
            }),
            b'+' => {
                let colon = value.iter().position(|&b| b == b':')?;
                let len: usize = std::str::from_utf8(&value[1..colon]).ok()?.parse().ok()?;
                let end = colon.checked_add(1)?.checked_add(len)?;
                let owner = std::str::from_utf8(value.get(colon + 1..end)?).ok()?;
                Some(StoredResponse {
                    owner: Some(owner.to_string()),
                    body: value.slice(end..),
                })
            }
            _ => None,
        }
    }
}

/// What a Redis value starts with: `-` without an owner, `+{len}:{owner}` with one.
fn owner_tag(owner: Option<&str>) -> Cow<'static, [u8]> {
    match owner {
        None => Cow::Borrowed(b"-"),
        Some(owner) => {
            let mut tag = Vec::with_capacity(owner.len() + 8);
            tag.push(b'+');
            tag.extend_from_slice(itoa::Buffer::new().format(owner.len()).as_bytes());
            tag.push(b':');
            tag.extend_from_slice(owner.as_bytes());
            Cow::Owned(tag)
        }
    }
}

/// Stored Responses API answers; their contents survive reloads that keep `state.backend`.
pub static RESPONSES: LazyLock<Store> = LazyLock::new(|| {
    Store::new("resp:", |state| Retention {
        ttl: state.responses_ttl,
        max_entries: state.responses_max_entries,
        max_bytes: state.responses_max_bytes,
    })
});

/// Cached answers (each stored with its model's cache TTL).
pub static ANSWERS: LazyLock<Store> = LazyLock::new(|| {
    Store::new("cache:", |state| Retention {
        ttl: Duration::from_secs(300),
        max_entries: usize::MAX,
        max_bytes: state.cache_max_bytes,
    })
});

/// Applies a config's `state` to every store.
pub fn configure(state: &StateSettings) -> Result<(), String> {
    RESPONSES.configure(state)?;
    ANSWERS.configure(state)?;
    AFFINITY.configure(state)
}

/// Which target each conversation of a sticky model was last sent to (each stored with its
/// model's sticky TTL).
pub static AFFINITY: LazyLock<Store> = LazyLock::new(|| {
    Store::new("aff:", |_| Retention {
        ttl: Duration::from_secs(3600),
        max_entries: MAX_CONVERSATIONS,
        max_bytes: usize::MAX,
    })
});

/// Conversations [`AFFINITY`] remembers in memory (about 150 bytes each), the least recently
/// active forgotten first.
const MAX_CONVERSATIONS: usize = 100_000;

/// How long a store keeps entries, and how many (the caps bind the memory backend only;
/// Redis's own memory policy applies to the other).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// For entries stored without a TTL of their own.
    pub ttl: Duration,
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// Where entries go now, from the last [`Store::configure`].
struct Current {
    /// The URL (kept to tell an unchanged backend) and its store; `None`: memory.
    redis: Option<(String, Arc<RedisStore>)>,
    prefix: String,
    retention: Retention,
}

pub struct Store {
    /// Between the key prefix and the id in Redis keys.
    namespace: &'static str,
    /// This store's part of `state`.
    retention: fn(&StateSettings) -> Retention,
    /// The memory backend's entries, kept across reloads (emptied when Redis takes over).
    memory: MemoryResponses,
    current: ArcSwap<Current>,
}

impl Store {
    pub fn new(namespace: &'static str, retention: fn(&StateSettings) -> Retention) -> Self {
        let defaults = StateSettings::default();
        Store {
            namespace,
            retention,
            memory: MemoryResponses::default(),
            current: ArcSwap::from_pointee(Current {
                redis: None,
                prefix: defaults.key_prefix.clone(),
                retention: retention(&defaults),
            }),
        }
    }

    /// Applies a config's `state`. An unchanged Redis URL keeps its connection; staying on
    /// memory keeps the entries.
    pub fn configure(&self, state: &StateSettings) -> Result<(), String> {
        let old = self.current.load();
        let redis = match &state.backend {
            StateBackend::Memory => None,
            StateBackend::Redis { url } => match &old.redis {
                Some((same, store)) if same == url.expose() => Some((same.clone(), store.clone())),
                _ => Some((url.expose().to_string(), RedisStore::shared(url)?)),
            },
        };
        if redis.is_some() && old.redis.is_none() {
            self.memory.clear();
        }
        self.current.store(Arc::new(Current {
            redis,
            prefix: state.key_prefix.clone(),
            retention: (self.retention)(state),
        }));
        Ok(())
    }

    /// Stores `body` as `id`, for `owner`, replacing what `id` held, for the store's TTL.
    pub async fn put(&self, id: &str, owner: Option<&str>, body: Bytes) -> Result<(), StoreError> {
        let ttl = self.current.load().retention.ttl;
        self.put_for(id, owner, body, ttl).await
    }

    /// Stores `body` as `id`, for `owner`, replacing what `id` held, for `ttl`.
    pub async fn put_for(
        &self,
        id: &str,
        owner: Option<&str>,
        body: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write(id, owner, &[], body, ttl).finish().await
    }

    /// Begins [`Self::put_for`] of the body `head` then `body`: done at once in memory; in
    /// Redis, a [`Rider`] that another call (settlement) may take along, finished by
    /// [`Write::finish`]. In two parts so that an entry made of a header and bytes it holds
    /// already (a cached answer) goes into the command without being joined first.
    pub fn write(
        &self,
        id: &str,
        owner: Option<&str>,
        head: &[u8],
        body: Bytes,
        ttl: Duration,
    ) -> Write {
        let current = self.current.load();
        match &current.redis {
            None => {
                let body = if head.is_empty() {
                    body
                } else {
                    Bytes::from([head, &body].concat())
                };
                let response = StoredResponse {
                    owner: owner.map(str::to_string),
                    body,
                };
                self.memory.put(
                    id,
                    response,
                    ttl,
                    Limits {
                        entries: current.retention.max_entries,
                        bytes: current.retention.max_bytes,
                    },
                    Instant::now(),
                );
                Write::Done
            }
            Some((_, redis)) => {
                let tag = owner_tag(owner);
                let key = self.key(&current.prefix, id);
                let cmd = limits::set_px(&key, &[&tag, head, &body], ttl);
                Write::Riding(Rider::new(redis.clone(), cmd))
            }
        }
    }

    /// The body of `id`; `None` when it is absent, expired, or not `owner`'s.
    pub async fn get(&self, id: &str, owner: Option<&str>) -> Result<Option<Bytes>, StoreError> {
        self.lookup(id, owner).finish().await
    }

    /// Begins [`Self::get`]: done at once in memory; in Redis, a [`Rider`] that another call
    /// (admission) may take along, finished by [`Lookup::finish`].
    pub fn lookup<'o>(&self, id: &str, owner: Option<&'o str>) -> Lookup<'o> {
        let current = self.current.load();
        match &current.redis {
            None => Lookup::Found(self.memory.get(id, owner, Instant::now())),
            Some((_, redis)) => Lookup::Riding {
                rider: Rider::new(redis.clone(), limits::get(&self.key(&current.prefix, id))),
                owner,
            },
        }
    }

    /// Removes `id`; false when it is absent, expired, or not `owner`'s.
    pub async fn delete(&self, id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let current = self.current.load_full();
        match &current.redis {
            None => Ok(self.memory.delete(id, owner, Instant::now())),
            Some((_, redis)) => {
                let key = self.key(&current.prefix, id);
                // Ids are the gateway's own random ones: nobody else writes this key between
                // the owner check and the delete.
                match fetch(redis, &key).await? {
                    Some(r) if r.owner.as_deref() == owner => redis.del(&key).await,
                    _ => Ok(false),
                }
            }
        }
    }
}

impl Store {
    fn key(&self, prefix: &str, id: &str) -> String {
        let mut key = String::with_capacity(prefix.len() + self.namespace.len() + id.len());
        key.push_str(prefix);
        key.push_str(self.namespace);
        key.push_str(id);
        key
    }
}

async fn fetch(redis: &RedisStore, key: &str) -> Result<Option<StoredResponse>, StoreError> {
    Ok(redis.get_bytes(key).await?.and_then(decode))
}

fn decode(value: Bytes) -> Option<StoredResponse> {
    let decoded = StoredResponse::decode(value);
    if decoded.is_none() {
        log::debug!("a key under the prefix does not hold a stored entry; treated as absent");
    }
    decoded
}

/// A read begun by [`Store::lookup`].
pub enum Lookup<'o> {
    /// Read from memory.
    Found(Option<Bytes>),
    /// To be read from Redis, for `owner`.
    Riding {
        rider: Rider,
        owner: Option<&'o str>,
    },
}

impl Lookup<'_> {
    /// The command another Redis call may take along.
    pub fn rider(&mut self) -> Option<&mut Rider> {
        match self {
            Lookup::Found(_) => None,
            Lookup::Riding { rider, .. } => Some(rider),
        }
    }

    /// The entry's body; `None` when it is absent, expired, or not the owner's.
    pub async fn finish(self) -> Result<Option<Bytes>, StoreError> {
        match self {
            Lookup::Found(found) => Ok(found),
            Lookup::Riding { rider, owner } => Ok(limits::bytes_of(rider.reply().await)?
                .and_then(decode)
                .filter(|r| r.owner.as_deref() == owner)
                .map(|r| r.body)),
        }
    }
}

/// A write begun by [`Store::write`].
pub enum Write {
    /// Written to memory.
    Done,
    /// To be written to Redis.
    Riding(Rider),
}

impl Write {
    /// The command another Redis call may take along.
    pub fn rider(&mut self) -> Option<&mut Rider> {
        match self {
            Write::Done => None,
            Write::Riding(rider) => Some(rider),
        }
    }

    pub async fn finish(self) -> Result<(), StoreError> {
        match self {
            Write::Done => Ok(()),
            Write::Riding(rider) => rider.reply().await.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::limits::test_server::Server;

    fn responses() -> Store {
        Store::new("resp:", |state| Retention {
            ttl: state.responses_ttl,
            max_entries: state.responses_max_entries,
            max_bytes: state.responses_max_bytes,
        })
    }

    fn memory_settings(ttl: Duration, max_entries: usize) -> StateSettings {
        StateSettings {
            responses_ttl: ttl,
            responses_max_entries: max_entries,
            ..StateSettings::default()
        }
    }

    fn redis_settings(url: &str, prefix: &str, ttl: Duration) -> StateSettings {
        StateSettings {
            backend: StateBackend::Redis {
                url: Secret::new(url.to_string()),
            },
            key_prefix: prefix.to_string(),
            responses_ttl: ttl,
            ..StateSettings::default()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn body(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    /// Put, get and delete with owners, and expiry, on whichever backend `store` is set to.
    async fn exercise(store: &Store, short_ttl: impl Fn() -> StateSettings) {
        store
            .put("resp_1", Some("a"), body("{\"id\":\"resp_1\"}"))
            .await
            .unwrap();
        store.put("resp_2", None, body("{}")).await.unwrap();
        let got = store.get("resp_1", Some("a")).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"{\"id\":\"resp_1\"}"[..]));
        assert_eq!(store.get("resp_1", Some("b")).await.unwrap(), None);
        assert_eq!(store.get("resp_1", None).await.unwrap(), None);
        assert_eq!(store.get("resp_2", None).await.unwrap(), Some(body("{}")));
        assert_eq!(store.get("resp_2", Some("a")).await.unwrap(), None);
        assert_eq!(store.get("resp_x", Some("a")).await.unwrap(), None);
        assert!(!store.delete("resp_1", Some("b")).await.unwrap());
        assert!(!store.delete("resp_1", None).await.unwrap());
        assert!(store.get("resp_1", Some("a")).await.unwrap().is_some());
        assert!(store.delete("resp_1", Some("a")).await.unwrap());
        assert!(!store.delete("resp_1", Some("a")).await.unwrap());
        assert_eq!(store.get("resp_1", Some("a")).await.unwrap(), None);

        // A body that looks like a framed owner stays a body.
        store.put("resp_3", None, body("+1:a{}")).await.unwrap();
        assert_eq!(store.get("resp_3", Some("a")).await.unwrap(), None);
        assert_eq!(
            store.get("resp_3", None).await.unwrap(),
            Some(body("+1:a{}"))
        );

        store.configure(&short_ttl()).unwrap();
        store.put("resp_4", Some("a"), body("{}")).await.unwrap();
        assert!(store.get("resp_4", Some("a")).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.get("resp_4", Some("a")).await.unwrap(), None);
        assert!(!store.delete("resp_4", Some("a")).await.unwrap());
        // Stored before the TTL changed: kept for the TTL it was stored with.
        assert_eq!(store.get("resp_2", None).await.unwrap(), Some(body("{}")));
    }

    #[test]
    fn memory_backend_scopes_expires_and_survives_reloads() {
        let store = responses();
        store
            .configure(&memory_settings(Duration::from_secs(60), 100))
            .unwrap();
        block_on(exercise(&store, || {
            memory_settings(Duration::from_millis(400), 100)
        }));
        // A reload that stays on memory keeps what is stored; a smaller cap evicts the least
        // recently used.
        store
            .configure(&memory_settings(Duration::from_secs(60), 2))
            .unwrap();
        block_on(async {
            assert!(store.get("resp_3", None).await.unwrap().is_some());
            assert!(store.get("resp_2", None).await.unwrap().is_some());
            store.put("resp_5", None, body("5")).await.unwrap();
            assert_eq!(store.memory.len(), 2);
            assert_eq!(
                store.get("resp_3", None).await.unwrap(),
                None,
                "least recently used"
            );
            assert!(store.get("resp_2", None).await.unwrap().is_some());
            assert!(store.get("resp_5", None).await.unwrap().is_some());
        });
    }

    #[test]
    fn the_frame_round_trips_and_refuses_what_it_did_not_write() {
        for owner in [None, Some("team:a"), Some("")] {
            let r = StoredResponse {
                owner: owner.map(str::to_string),
                body: body("+3:abc{\"x\":1}"),
            };
            assert_eq!(StoredResponse::decode(r.encode().into()), Some(r));
        }
        for bad in [&b""[..], b"42", b"+x:a", b"+9:ab", b"+:"] {
            assert_eq!(
                StoredResponse::decode(Bytes::from_static(bad)),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn redis_backend_scopes_expires_and_keeps_its_connection() {
        let Some(server) = Server::start() else {
            eprintln!("SKIPPED redis_backend_scopes_expires_and_keeps_its_connection: redis-server is not installed or did not start");
            return;
        };
        let url = server.url();
        let store = responses();
        // Something in memory before the switch is gone after it.
        block_on(store.put("resp_mem", None, body("m"))).unwrap();
        store
            .configure(&redis_settings(&url, "t:", Duration::from_secs(60)))
            .unwrap();
        assert_eq!(store.memory.len(), 0);
        let connection = store.current.load().redis.as_ref().unwrap().1.clone();
        block_on(async {
            assert_eq!(store.get("resp_mem", None).await.unwrap(), None);
            exercise(&store, || {
                redis_settings(&url, "t:", Duration::from_millis(400))
            })
            .await;
            // The keys are where the operator expects them, framed.
            let raw = connection.get_bytes("t:resp:resp_2").await.unwrap();
            assert_eq!(raw.as_deref(), Some(&b"-{}"[..]));
            // Another key under the prefix is not a response, and is not deleted.
            connection
                .set_px("t:resp:counter", b"17", Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(store.get("counter", None).await.unwrap(), None);
            assert!(!store.delete("counter", None).await.unwrap());
            assert!(connection
                .get_bytes("t:resp:counter")
                .await
                .unwrap()
                .is_some());
        });
        // Same URL: same connection; the prefix still applies.
        store
            .configure(&redis_settings(&url, "u:", Duration::from_secs(60)))
            .unwrap();
        let now = store.current.load().redis.as_ref().unwrap().1.clone();
        assert!(Arc::ptr_eq(&connection, &now));
        block_on(async {
            assert_eq!(store.get("resp_2", None).await.unwrap(), None);
            store.put("resp_6", Some("a"), body("6")).await.unwrap();
            let raw = connection.get_bytes("u:resp:resp_6").await.unwrap();
            assert_eq!(raw.as_deref(), Some(&b"+1:a6"[..]));
        });
    }

    #[test]
    fn an_unreachable_redis_is_an_error_without_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = responses();
        let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
        store
            .configure(&redis_settings(&url, "t:", Duration::from_secs(60)))
            .unwrap();
        block_on(async {
            let err = store.get("resp_1", None).await.unwrap_err();
            assert!(matches!(err, StoreError::Unreachable(_)), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            let err = store.put("resp_1", None, body("{}")).await.unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        });
    }
}
