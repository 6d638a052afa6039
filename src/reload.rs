//! Hot reload: a new config is read, validated and compiled whole, then swapped in with one
//! `ArcSwap` store. A bad config changes nothing: the old table keeps serving and the reason is
//! logged, counted and returned to the admin caller.
//!
//! Three triggers: SIGHUP, a change of the config file (polled, debounced) and
//! `POST /admin/reload`. Requests in flight keep the table they started with (they hold an `Arc`
//! of it), and breakers, probe results and latencies carry over through the health registry.
//!
//! Settings that belong to the listening sockets and the server itself (`server.listen`,
//! `admin_listen`, `threads`, `grace_period_s`, `pid_file`, `upgrade_sock`) cannot change in a running
//! process: a reload that changes them still applies everything else and says which need a
//! restart (or a graceful upgrade).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{self, ServerSettings};
use crate::observability::metrics::METRICS;
use crate::process::systemd;
use crate::routing::{RoutingTable, TableHandle};

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    pub models: usize,
    pub providers: usize,
    /// Changed settings that only a restart or graceful upgrade applies.
    pub restart_needed: Vec<String>,
    pub warnings: Vec<String>,
}

pub struct Reloader {
    path: PathBuf,
    table: TableHandle,
    /// The settings the process started with (those that cannot change while it runs).
    started_with: ServerSettings,
    /// Reloads run one at a time; the hash is of the last file content loaded or rejected.
    state: Mutex<ReloadState>,
}

struct ReloadState {
    last_hash: u64,
    generation: u64,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn file_hash(path: &Path) -> Option<u64> {
    std::fs::read(path).ok().map(|b| hash_of(&b))
}

impl Reloader {
    pub fn new(path: PathBuf, table: TableHandle, started_with: ServerSettings) -> Self {
        let last_hash = file_hash(&path).unwrap_or(0);
        Reloader {
            path,
            table,
            started_with,
            state: Mutex::new(ReloadState {
                last_hash,
                generation: 1,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the config file and swaps it in, or leaves everything as it was.
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        systemd::reloading();
        let result = self.reload_locked(&mut state, trigger);
        systemd::reloaded();
        result
    }

    fn reload_locked(
        &self,
        state: &mut ReloadState,
        trigger: &str,
    ) -> Result<ReloadReport, String> {
        state.last_hash = file_hash(&self.path).unwrap_or(0);
        let result = config::load(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                let table = RoutingTable::build(&cfg)?;
                // After the table: a config that does not build leaves the store as it was.
                crate::limits::LIMITS.configure(&cfg.state)?;
                crate::store::configure(&cfg.state)?;
                Ok((cfg, table))
            });
        match result {
            Ok((cfg, table)) => {
                state.generation += 1;
                let report = ReloadReport {
                    generation: state.generation,
                    models: cfg.models.len(),
                    providers: cfg
                        .providers
                        .values()
                        .filter(|p| p.disabled.is_none())
                        .count(),
                    restart_needed: restart_needed(&self.started_with, &cfg.server),
                    warnings: cfg.warnings.clone(),
                };
                self.table
                    .store(Arc::new(table.with_generation(state.generation)));
                METRICS
                    .config_reloads_total
                    .with_label_values(&["ok"])
                    .inc();
                log::info!(
                    "config reloaded ({trigger}): generation {}, {} models, {} providers",
                    report.generation,
                    report.models,
                    report.providers
                );
                for setting in &report.restart_needed {
                    log::warn!("config reload ({trigger}): {setting} changed; it takes effect after a restart or graceful upgrade");
                }
                Ok(report)
            }
            Err(reason) => {
                METRICS
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                log::error!(
                    "config reload ({trigger}) rejected, the previous config keeps serving: {}",
                    reason.replace('\n', "; ")
                );
                Err(reason)
            }
        }
    }

    /// The hash of the file's content when it differs from what was last loaded or rejected.
    pub fn file_changed(&self) -> Option<u64> {
        let hash = file_hash(&self.path)?;
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (hash != state.last_hash).then_some(hash)
    }
}

/// The start-time settings a new config changes.
fn restart_needed(old: &ServerSettings, new: &ServerSettings) -> Vec<String> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("server.listen".to_string());
    }
    if old.admin_listen != new.admin_listen {
        changed.push("server.admin_listen".to_string());
    }
    if old.threads != new.threads {
        changed.push("server.threads".to_string());
    }
    if old.grace_period != new.grace_period {
        changed.push("server.grace_period_s".to_string());
    }
    if old.pid_file != new.pid_file {
        changed.push("server.pid_file".to_string());
    }
    if old.upgrade_sock != new.upgrade_sock {
        changed.push("server.upgrade_sock".to_string());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use arc_swap::ArcSwap;

    fn settings(yaml: &str) -> ServerSettings {
        parse(yaml, |_| None).unwrap().server
    }

    #[test]
    fn names_settings_that_need_a_restart() {
        let old = settings("server: { listen: [\"127.0.0.1:1\"], threads: 2 }");
        let new = settings("server: { listen: [\"127.0.0.1:2\"], threads: 4, max_body_bytes: 10 }");
        assert_eq!(
            restart_needed(&old, &new),
            vec!["server.listen", "server.threads"]
        );
        assert!(restart_needed(&old, &old).is_empty());
    }

    #[test]
    fn bad_configs_leave_the_table_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let good = "providers: { m: { kind: mock } }\nmodels: { a: { targets: [{ provider: m, model: x }] } }\n";
        std::fs::write(&path, good).unwrap();
        let cfg = config::load(&path).unwrap();
        let table: TableHandle =
            Arc::new(ArcSwap::from_pointee(RoutingTable::build(&cfg).unwrap()));
        let reloader = Reloader::new(path.clone(), table.clone(), cfg.server.clone());
        assert!(reloader.file_changed().is_none());

        std::fs::write(&path, "providers: { m: { kind: mock } }\nmodels: { a: { targets: [{ provider: ghost, model: x }] } }\n").unwrap();
        assert!(reloader.file_changed().is_some());
        let err = reloader.reload("test").unwrap_err();
        assert!(err.contains("unknown provider 'ghost'"), "{err}");
        assert!(
            table.load().resolve("a").is_ok(),
            "the old table keeps serving"
        );
        assert!(
            reloader.file_changed().is_none(),
            "a rejected file is not retried until it changes"
        );

        std::fs::write(&path, good.replace("a:", "b:")).unwrap();
        let report = reloader.reload("test").unwrap();
        assert_eq!((report.generation, report.models), (2, 1));
        assert!(table.load().resolve("a").is_err() && table.load().resolve("b").is_ok());
        assert_eq!(table.load().generation, 2);
    }
}
