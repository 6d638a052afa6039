//! Budget spending of the memory backend kept in a file (`state.snapshot_path`), so that a
//! restart or a graceful upgrade does not give every key its budget back.
//!
//! The file holds, per key name, the spending of the key's current budget period (with the
//! period's kind and start, so a period that has ended is dropped on read). It is only ever
//! changed by a **merge**, under an exclusive `flock` of `<path>.lock`:
//! read the file, add this process's spending since its last merge (`unflushed`), write it back
//! atomically (temporary file, fsync, rename), and take into this process's counters what other
//! processes added meanwhile (the file's value minus what this process saw there last time).
//!
//! Every process adds only its own spending, and only once, so nothing is lost or counted twice
//! however processes overlap. That is exactly the case of a graceful upgrade: the new process
//! merges (loads) at start, while the old one still serves for a few seconds and then drains;
//! the old one keeps merging every `snapshot_interval_s` and a last time at exit, and the new
//! one picks that up at its next merge. A plain restart is the same with no overlap: the last
//! merge happens at exit (SIGTERM, SIGINT, SIGQUIT), the first at start. Only a crash or SIGKILL
//! loses spending: at most the last interval's.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use super::memory::{BudgetCounter, PeriodKind};
use super::period::{now_secs, period_start};
use crate::config::SnapshotSettings;

const VERSION: u32 = 1;

/// Why the snapshot file could not be read or written; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a spending snapshot of this version ({reason}); move it away to start from zero", path.display())]
    Format { path: PathBuf, reason: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SpendFile {
    version: u32,
    /// Seconds since the epoch of the last merge, for people reading the file.
    #[serde(default)]
    written_at: u64,
    #[serde(default)]
    keys: BTreeMap<String, Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// `daily`, `weekly`, `monthly`, `total`, or `none` for a key without a budget.
    period: String,
    /// Seconds since the epoch when the period started (0 for `total` and `none`).
    period_start: u64,
    spent_nano_usd: u64,
}

impl Entry {
    /// (kind, period number, spending) when the entry is readable.
    fn parse(&self) -> Option<(PeriodKind, u64, u64)> {
        let kind = PeriodKind::parse(&self.period)?;
        Some((kind, kind.period_at(self.period_start), self.spent_nano_usd))
    }
}

fn start_of(kind: PeriodKind, number: u64) -> u64 {
    match kind {
        PeriodKind::NoBudget => 0,
        PeriodKind::Budget(p) => period_start(p, number),
    }
}

/// What this process last saw in the file for one key.
#[derive(Debug, Clone, Copy)]
struct Seen {
    kind: PeriodKind,
    period: u64,
    nano_usd: u64,
}

/// An exclusive `flock` on the lock file, released when dropped (the descriptor closes).
struct FileLock {
    _held: File,
}

impl FileLock {
    fn exclusive(path: &Path) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io {
            action: "lock",
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        loop {
            // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { _held: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(io(err));
            }
        }
    }
}

pub struct Snapshots {
    path: PathBuf,
    lock_path: PathBuf,
    interval_s: AtomicU64,
    /// Serialises this process's merges, and holds what the file held at the last one.
    seen: Mutex<HashMap<String, Seen>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Snapshots {
    pub fn new(settings: &SnapshotSettings) -> Self {
        let mut lock_name = settings.path.clone().into_os_string();
        lock_name.push(".lock");
        Snapshots {
            path: settings.path.clone(),
            lock_path: PathBuf::from(lock_name),
            interval_s: AtomicU64::new(settings.interval.as_secs().max(1)),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file (if there is one yet) can be read as a snapshot, without taking its
    /// lock or changing it: what `switchyard check` asks.
    pub fn check(&self) -> Result<(), SnapshotError> {
        self.read().map(drop)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_s.load(Ordering::Relaxed))
    }

    pub fn set_interval(&self, interval: Duration) {
        self.interval_s
            .store(interval.as_secs().max(1), Ordering::Relaxed);
    }

    fn read(&self) -> Result<SpendFile, SnapshotError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SpendFile {
                    version: VERSION,
                    ..SpendFile::default()
                })
            }
            Err(source) => {
                return Err(SnapshotError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let file: SpendFile = serde_json::from_slice(&text).map_err(|e| SnapshotError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if file.version != VERSION {
            return Err(SnapshotError::Format {
                path: self.path.clone(),
                reason: format!("version {}, expected {VERSION}", file.version),
            });
        }
        Ok(file)
    }

    /// Replaces the file so that a reader (or a crash) sees the old or the new one, whole.
    fn write(&self, file: &SpendFile) -> Result<(), SnapshotError> {
        let mut tmp_name = self.path.clone().into_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let io = |action, source| SnapshotError::Io {
            action,
            path: tmp.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| SnapshotError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut out = File::create(&tmp).map_err(|e| io("create", e))?;
        out.write_all(&bytes).map_err(|e| io("write", e))?;
        out.sync_all().map_err(|e| io("sync", e))?;
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            SnapshotError::Io {
                action: "replace",
                path: self.path.clone(),
                source,
            }
        })?;
        // The rename itself survives a power cut only once the directory is synced.
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Merges this process's spending into the file and the file's news into this process's
    /// counters (see the module doc). Returns the number of keys in the file.
    pub fn merge(
        &self,
        budgets: &Mutex<HashMap<String, Arc<BudgetCounter>>>,
    ) -> Result<usize, SnapshotError> {
        let mut seen = lock(&self.seen);
        let _flock = FileLock::exclusive(&self.lock_path)?;
        let file = self.read()?;
        let now = now_secs();
        let counters: Vec<(String, Arc<BudgetCounter>)> = {
            let mut map = lock(budgets);
            // A name only the file knows (a key removed from this config, or one added by the
            // other process of an upgrade) keeps its entry, and its spending comes back with
            // the key, as in memory across reloads.
            for name in file.keys.keys() {
                map.entry(name.clone()).or_default();
            }
            map.iter().map(|(n, c)| (n.clone(), c.clone())).collect()
        };
        let mut out = SpendFile {
            version: VERSION,
            written_at: now,
            keys: BTreeMap::new(),
        };
        let mut taken = Vec::new();
        let mut next_seen = HashMap::with_capacity(counters.len());
        for (name, counter) in counters {
            let entry = file.keys.get(&name).and_then(Entry::parse);
            let Some(kind) = counter.kind_or(entry.map(|e| e.0)) else {
                continue;
            };
            let current = kind.period_at(now);
            let (period, own) = counter.take_unflushed();
            // Spending of an ended period is worth nothing now.
            let own = if period == current { own } else { 0 };
            // A period that ended, or a kind the config changed, starts from zero.
            let base = match entry {
                Some((k, p, v)) if k == kind && p == current => v,
                _ => 0,
            };
            let before = match seen.get(&name) {
                Some(s) if s.kind == kind && s.period == current => s.nano_usd,
                _ => 0,
            };
            let foreign = base.saturating_sub(before);
            if foreign > 0 {
                counter.add_known(current, foreign);
            }
            let total = base.saturating_add(own);
            if own > 0 {
                taken.push((counter.clone(), current, own));
            }
            next_seen.insert(
                name.clone(),
                (
                    Seen {
                        kind,
                        period: current,
                        nano_usd: base,
                    },
                    total,
                ),
            );
            if total > 0 {
                out.keys.insert(
                    name,
                    Entry {
                        period: kind.as_str().to_string(),
                        period_start: start_of(kind, current),
                        spent_nano_usd: total,
                    },
                );
            }
        }
        let written = self.write(&out);
        if written.is_err() {
            // Not in the file: it stays this process's to write next time.
            for (counter, period, own) in taken {
                counter.restore_unflushed(period, own);
            }
        }
        *seen = next_seen
            .into_iter()
            .map(|(name, (mut s, total))| {
                if written.is_ok() {
                    s.nano_usd = total;
                }
                (name, s)
            })
            .collect();
        written.map(|()| out.keys.len())
    }
}

extern "C" fn merge_at_exit() {
    // Unwinding out of an atexit handler would abort: a failed last merge is logged instead.
    let _ = std::panic::catch_unwind(|| super::LIMITS.merge_snapshot("exit"));
}

/// Merges every `snapshot_interval_s`, once more when the process starts to stop, and a last
/// time at exit, after Pingora has let in-flight requests finish (the last settlements).
pub struct SnapshotService;

#[async_trait]
impl BackgroundService for SnapshotService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Registered here, in the process that serves: with --daemon this runs after the fork.
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: registers a plain function; atexit(3) has no other requirements.
            if unsafe { libc::atexit(merge_at_exit) } != 0 {
                log::error!("cannot register the exit-time spending snapshot");
            }
        });
        let mut stopping = false;
        loop {
            let interval = super::LIMITS
                .snapshot_interval()
                .unwrap_or(Duration::from_secs(1));
            let why = tokio::select! {
                _ = tokio::time::sleep(interval) => "interval",
                _ = shutdown.changed(), if !stopping => "stop",
            };
            stopping |= why == "stop";
            let _ = tokio::task::spawn_blocking(move || super::LIMITS.merge_snapshot(why)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BudgetPeriod;

    /// One process's view: its counters by key name and its snapshot handle.
    struct Process {
        budgets: Mutex<HashMap<String, Arc<BudgetCounter>>>,
        snapshots: Snapshots,
    }

    impl Process {
        fn start(path: &Path, keys: &[(&str, PeriodKind)]) -> Process {
            let budgets = Mutex::new(HashMap::new());
            for (name, kind) in keys {
                let c = Arc::new(BudgetCounter::default());
                c.set_kind(*kind);
                lock(&budgets).insert(name.to_string(), c);
            }
            let p = Process {
                budgets,
                snapshots: Snapshots::new(&SnapshotSettings {
                    path: path.to_path_buf(),
                    interval: Duration::from_secs(1),
                }),
            };
            p.merge();
            p
        }
        fn counter(&self, name: &str) -> Arc<BudgetCounter> {
            lock(&self.budgets)[name].clone()
        }
        fn spend(&self, name: &str, kind: PeriodKind, nano: u64) {
            self.counter(name).add(kind.period_at(now_secs()), nano);
        }
        fn spent(&self, name: &str, kind: PeriodKind) -> u64 {
            self.counter(name).spent(kind.period_at(now_secs()))
        }
        fn merge(&self) -> usize {
            self.snapshots.merge(&self.budgets).unwrap()
        }
    }

    fn file_entry(path: &Path, name: &str) -> Option<u64> {
        let file: SpendFile = serde_json::from_slice(&std::fs::read(path).ok()?).unwrap();
        file.keys.get(name).map(|e| e.spent_nano_usd)
    }

    const MONTHLY: PeriodKind = PeriodKind::Budget(BudgetPeriod::Monthly);

    #[test]
    fn an_upgrade_overlap_loses_nothing_and_counts_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.json");
        let keys = [("team", MONTHLY), ("free", PeriodKind::NoBudget)];
        let old = Process::start(&path, &keys);
        old.spend("team", MONTHLY, 100);
        old.merge();
        old.spend("team", MONTHLY, 10); // not merged yet when the new process starts
        let new = Process::start(&path, &keys);
        assert_eq!(new.spent("team", MONTHLY), 100);
        // Both serve for a while, merging in any order.
        new.spend("team", MONTHLY, 1000);
        old.spend("team", MONTHLY, 1);
        new.merge();
        old.merge();
        old.spend("free", PeriodKind::NoBudget, 7);
        old.merge(); // the old process's exit
        new.merge();
        assert_eq!(file_entry(&path, "team"), Some(1111));
        assert_eq!(new.spent("team", MONTHLY), 1111);
        assert_eq!(new.spent("free", PeriodKind::NoBudget), 7);
        // Merging again changes nothing.
        new.merge();
        new.merge();
        assert_eq!(new.spent("team", MONTHLY), 1111);
        assert_eq!(file_entry(&path, "team"), Some(1111));
        // A restart reads it back.
        let again = Process::start(&path, &keys);
        assert_eq!(again.spent("team", MONTHLY), 1111);
    }

    #[test]
    fn ended_periods_changed_kinds_and_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.json");
        let now = now_secs();
        let last_month = MONTHLY.period_at(now) - 1;
        let file = SpendFile {
            version: VERSION,
            written_at: 0,
            keys: [
                ("stale", last_month, "monthly"),
                ("daily-now", MONTHLY.period_at(now), "monthly"),
                ("removed", MONTHLY.period_at(now), "monthly"),
            ]
            .into_iter()
            .map(|(name, n, kind)| {
                let entry = Entry {
                    period: kind.into(),
                    period_start: start_of(MONTHLY, n),
                    spent_nano_usd: 5,
                };
                (name.to_string(), entry)
            })
            .collect(),
        };
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        let daily = PeriodKind::Budget(BudgetPeriod::Daily);
        let p = Process::start(&path, &[("stale", MONTHLY), ("daily-now", daily)]);
        assert_eq!(
            p.spent("stale", MONTHLY),
            0,
            "last month's spending is over"
        );
        assert_eq!(
            p.spent("daily-now", daily),
            0,
            "a changed period starts afresh"
        );
        assert_eq!(file_entry(&path, "stale"), None);
        // A key this config does not have keeps its entry (and comes back with it).
        assert_eq!(file_entry(&path, "removed"), Some(5));
        assert_eq!(p.spent("removed", MONTHLY), 5);

        std::fs::write(&path, "{not json").unwrap();
        let err = p.snapshots.merge(&p.budgets).unwrap_err().to_string();
        assert!(err.contains("not a spending snapshot"), "{err}");
    }

    #[test]
    fn a_failed_write_keeps_the_spending_for_the_next_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.json");
        let p = Process::start(&path, &[("team", MONTHLY)]);
        p.spend("team", MONTHLY, 42);
        // A directory where the temporary file goes: the write fails after the spending
        // was taken from the counter.
        let tmp = dir
            .path()
            .join(format!("spend.json.tmp-{}", std::process::id()));
        std::fs::create_dir(&tmp).unwrap();
        assert!(p.snapshots.merge(&p.budgets).is_err());
        std::fs::remove_dir(&tmp).unwrap();
        p.merge();
        assert_eq!(file_entry(&path, "team"), Some(42));
        assert_eq!(p.spent("team", MONTHLY), 42);
    }
}
