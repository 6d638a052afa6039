//! The memory backend: a map with a deadline per entry and caps on entries and bytes.
//!
//! Entries are also kept in the order they were last stored or read: each insert drops a few
//! expired entries from the front (with one TTL for all, mostly the order they expire in), and
//! when the map is full, the least recently used. An expired entry that was not purged yet is
//! dropped when it is read. Every lock is a short section that never spans an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::StoredResponse;

/// Expired entries an insert purges at most: more than the one it adds, so they cannot pile
/// up, and few enough that the lock stays short.
const PURGE_PER_INSERT: usize = 8;

/// How much the memory backend keeps at most.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub entries: usize,
    pub bytes: usize,
}

struct Entry {
    seq: u64,
    /// What the entry counts against [`Limits::bytes`].
    size: usize,
    /// `None`: the TTL reaches past what `Instant` can hold, so never.
    expires: Option<Instant>,
    response: StoredResponse,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Exact match: a response stored without an owner (a gateway without client keys) is not
    /// shown to keys configured later, nor one of a key to anyone else.
    fn visible_to(&self, owner: Option<&str>) -> bool {
        self.response.owner.as_deref() == owner
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Insertion sequence → id, oldest first.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    /// The sizes of all entries.
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.order.remove(&entry.seq);
        self.bytes -= entry.size;
        Some(entry)
    }

    fn pop_oldest(&mut self) -> Option<Entry> {
        let (_, id) = self.order.pop_first()?;
        let entry = self.entries.remove(&id)?;
        self.bytes -= entry.size;
        Some(entry)
    }

    fn oldest_expired(&self, now: Instant) -> bool {
        self.order
            .first_key_value()
            .and_then(|(_, id)| self.entries.get(id))
            .is_some_and(|e| e.expired(now))
    }
}

#[derive(Default)]
pub(super) struct MemoryResponses {
    inner: Mutex<Inner>,
}

impl MemoryResponses {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores (or replaces) `id` until `now + ttl`, evicting the oldest entries beyond the
    /// limits; one larger than all the bytes allowed is not stored.
    pub(super) fn put(
        &self,
        id: &str,
        response: StoredResponse,
        ttl: Duration,
        limits: Limits,
        now: Instant,
    ) {
        let size = id.len() + response.body.len() + response.owner.as_ref().map_or(0, String::len);
        // Dropped after the lock is released.
        let mut dropped = Vec::new();
        let mut inner = self.lock();
        dropped.extend(inner.remove(id));
        for _ in 0..PURGE_PER_INSERT {
            if !inner.oldest_expired(now) {
                break;
            }
            dropped.extend(inner.pop_oldest());
        }
        if size > limits.bytes {
            drop(inner);
            log::warn!("{id} not stored: its {size} bytes are more than the store may hold");
            return;
        }
        while inner.entries.len() >= limits.entries.max(1) || inner.bytes + size > limits.bytes {
            match inner.pop_oldest() {
                Some(e) => dropped.push(e),
                None => break,
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.insert(seq, id.to_string());
        inner.bytes += size;
        inner.entries.insert(
            id.to_string(),
            Entry {
                seq,
                size,
                expires: now.checked_add(ttl),
                response,
            },
        );
        drop(inner);
        drop(dropped);
    }

    /// The body of `id` when it is there, not expired, and `owner`'s.
    pub(super) fn get(&self, id: &str, owner: Option<&str>, now: Instant) -> Option<Bytes> {
        let mut inner = self.lock();
        let entry = inner.entries.get(id)?;
        if entry.expired(now) {
            let gone = inner.remove(id);
            drop(inner);
            drop(gone);
            return None;
        }
        if !entry.visible_to(owner) {
            return None;
        }
        let (old_seq, body) = (entry.seq, entry.response.body.clone());
        // Read: now the most recently used.
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(id) = inner.order.remove(&old_seq) {
            inner.order.insert(seq, id);
        }
        if let Some(entry) = inner.entries.get_mut(id) {
            entry.seq = seq;
        }
        Some(body)
    }

    /// Removes `id` when it is there, not expired, and `owner`'s; whether it did.
    pub(super) fn delete(&self, id: &str, owner: Option<&str>, now: Instant) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(id) else {
            return false;
        };
        let (expired, visible) = (entry.expired(now), entry.visible_to(owner));
        if !expired && !visible {
            return false;
        }
        let gone = inner.remove(id);
        drop(inner);
        drop(gone);
        !expired
    }

    /// Drops every entry (the backend moved to Redis).
    pub(super) fn clear(&self) {
        let old = std::mem::take(&mut *self.lock());
        drop(old);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(entries: usize) -> Limits {
        Limits {
            entries,
            bytes: usize::MAX,
        }
    }

    fn stored(owner: Option<&str>, body: &'static str) -> StoredResponse {
        StoredResponse {
            owner: owner.map(str::to_string),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn put_get_delete_scoped_by_owner() {
        let m = MemoryResponses::default();
        let now = Instant::now();
        m.put("r1", stored(Some("a"), "{\"x\":1}"), TTL, cap(10), now);
        m.put("r2", stored(None, "open"), TTL, cap(10), now);
        assert_eq!(
            m.get("r1", Some("a"), now).as_deref(),
            Some(&b"{\"x\":1}"[..])
        );
        assert_eq!(m.get("r1", Some("b"), now), None);
        assert_eq!(m.get("r1", None, now), None);
        assert_eq!(m.get("r2", None, now).as_deref(), Some(&b"open"[..]));
        assert_eq!(m.get("r2", Some("a"), now), None, "exact owner match");
        assert_eq!(m.get("nope", Some("a"), now), None);
        assert!(!m.delete("r1", Some("b"), now));
        assert!(!m.delete("r1", None, now));
        assert!(
            m.get("r1", Some("a"), now).is_some(),
            "survives others' deletes"
        );
        assert!(m.delete("r1", Some("a"), now));
        assert!(!m.delete("r1", Some("a"), now));
        assert_eq!(m.get("r1", Some("a"), now), None);
        // Replacing an id keeps one entry, with the new body and owner.
        m.put("r2", stored(Some("b"), "new"), TTL, cap(10), now);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("r2", None, now), None);
        assert_eq!(m.get("r2", Some("b"), now).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn entries_expire_and_are_purged_on_insert() {
        let m = MemoryResponses::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        m.put("old", stored(None, "1"), ttl, cap(100), t0);
        let later = t0 + Duration::from_secs(5);
        m.put("young", stored(None, "2"), ttl, cap(100), later);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(m.get("old", None, t1), None, "expired at its deadline");
        assert!(!m.delete("old", None, t1));
        assert_eq!(m.get("young", None, t1).as_deref(), Some(&b"2"[..]));

        // Expired entries nobody reads again go on a later insert.
        for i in 0..20 {
            m.put(&format!("e{i}"), stored(None, "x"), ttl, cap(100), t1);
        }
        assert_eq!(m.len(), 21);
        let t2 = t1 + Duration::from_secs(11);
        m.put("a", stored(None, "x"), ttl, cap(100), t2);
        m.put("b", stored(None, "x"), ttl, cap(100), t2);
        m.put("c", stored(None, "x"), ttl, cap(100), t2);
        assert_eq!(m.len(), 3, "the 21 expired ones purged, 8 per insert");
        // A TTL past what Instant holds never expires rather than panicking.
        m.put("forever", stored(None, "x"), Duration::MAX, cap(100), t2);
        assert!(m.get("forever", None, t2 + TTL).is_some());
    }

    #[test]
    fn a_read_makes_an_entry_the_most_recently_used() {
        let m = MemoryResponses::default();
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            m.put(id, stored(None, "x"), TTL, cap(3), now);
        }
        assert!(m.get("a", None, now).is_some());
        m.put("d", stored(None, "x"), TTL, cap(3), now);
        assert_eq!(m.get("b", None, now), None, "the least recently used went");
        for id in ["a", "c", "d"] {
            assert!(m.get(id, None, now).is_some(), "{id}");
        }
    }

    #[test]
    fn a_full_map_evicts_the_oldest() {
        let m = MemoryResponses::default();
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            m.put(id, stored(None, "x"), TTL, cap(3), now);
        }
        // Re-storing "a" makes it the newest; then "b" is the oldest.
        m.put("a", stored(None, "y"), TTL, cap(3), now);
        m.put("d", stored(None, "x"), TTL, cap(3), now);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("b", None, now), None);
        for id in ["a", "c", "d"] {
            assert!(m.get(id, None, now).is_some(), "{id}");
        }
        // A smaller cap (after a reload) evicts down to it on the next insert.
        m.put("e", stored(None, "x"), TTL, cap(2), now);
        assert_eq!(m.len(), 2);
        assert!(m.get("d", None, now).is_some() && m.get("e", None, now).is_some());
        m.clear();
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest_and_refuses_what_cannot_fit() {
        let m = MemoryResponses::default();
        let now = Instant::now();
        // Each entry counts its id and body: 1 + 9 bytes.
        let limits = Limits {
            entries: 100,
            bytes: 25,
        };
        for id in ["a", "b"] {
            m.put(id, stored(None, "123456789"), TTL, limits, now);
        }
        m.put("c", stored(None, "123456789"), TTL, limits, now);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a", None, now), None);
        assert!(m.get("b", None, now).is_some() && m.get("c", None, now).is_some());
        // Larger than everything allowed: not stored, nothing evicted for it.
        m.put(
            "huge",
            stored(None, "0123456789012345678901234567"),
            TTL,
            limits,
            now,
        );
        assert_eq!(m.get("huge", None, now), None);
        assert_eq!(m.len(), 2);
        // Replacing an entry frees its old bytes first.
        m.put("b", stored(None, "12"), TTL, limits, now);
        m.put("d", stored(None, "1234567"), TTL, limits, now);
        assert_eq!(m.len(), 3);
    }
}
