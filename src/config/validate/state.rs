//! `state:`: where counters and spending live (memory or Redis), what happens when Redis
//! fails, snapshots of the in-memory state, and how long stored responses are kept.

use std::time::Duration;

use url::Url;

use super::{absolute_path, positive, Issues};
use crate::config::raw::RawState;
use crate::config::{
    FailureMode, Secret, SnapshotSettings, StateBackend, StateSettings, DEFAULT_CACHE_MAX_MIB,
    DEFAULT_RESPONSES_MAX_ENTRIES, DEFAULT_RESPONSES_MAX_MIB, DEFAULT_RESPONSES_TTL_S,
};

pub(super) fn state(
    raw: RawState,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> StateSettings {
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => {
            if raw.url.is_some() {
                issues.push("state.url", "only used with backend: redis");
            }
            StateBackend::Memory
        }
        Some("redis") => match raw.url.filter(|u| !u.is_empty()) {
            Some(url) => {
                let ok = Url::parse(&url)
                    .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss") && u.host().is_some());
                if !ok {
                    // The URL may carry a password: it is not repeated in the message.
                    issues.push("state.url", "not a redis:// or rediss:// URL with a host");
                }
                StateBackend::Redis {
                    url: Secret::new(url),
                }
            }
            None => {
                issues.push("state.url", "required with backend: redis");
                StateBackend::Memory
            }
        },
        Some(other) => {
            issues.push(
                "state.backend",
                format!("unknown backend '{other}' (expected memory or redis)"),
            );
            StateBackend::Memory
        }
    };
    let failure_mode = match raw.failure_mode.as_deref() {
        None | Some("fail_open") => FailureMode::FailOpen,
        Some("fail_closed") => FailureMode::FailClosed,
        Some(other) => {
            issues.push(
                "state.failure_mode",
                format!("unknown mode '{other}' (expected fail_open or fail_closed)"),
            );
            FailureMode::FailOpen
        }
    };
    let snapshot = match raw.snapshot_path.filter(|p| !p.is_empty()) {
        // Ignored rather than refused, so one file can switch backends by an environment
        // variable (as the production example does).
        Some(_) if matches!(backend, StateBackend::Redis { .. }) => {
            warnings.push(
                "state.snapshot_path is ignored with backend: redis (Redis keeps the counters)"
                    .to_string(),
            );
            None
        }
        Some(path) => {
            let path = absolute_path("state.snapshot_path", Some(path), "", issues);
            if path.file_name().is_none() {
                issues.push("state.snapshot_path", "must name a file");
            }
            let interval = positive(
                "state.snapshot_interval_s",
                raw.snapshot_interval_s,
                10,
                issues,
            );
            Some(SnapshotSettings {
                path,
                interval: Duration::from_secs(interval),
            })
        }
        None => {
            if raw.snapshot_interval_s.is_some() {
                issues.push("state.snapshot_interval_s", "only used with snapshot_path");
            }
            None
        }
    };
    let responses_ttl = positive(
        "state.responses_ttl_s",
        raw.responses_ttl_s,
        DEFAULT_RESPONSES_TTL_S,
        issues,
    );
    let responses_max_entries = positive(
        "state.responses_max_entries",
        raw.responses_max_entries,
        DEFAULT_RESPONSES_MAX_ENTRIES,
        issues,
    );
    let responses_max_mib = positive(
        "state.responses_max_mib",
        raw.responses_max_mib,
        DEFAULT_RESPONSES_MAX_MIB,
        issues,
    );
    let cache_max_mib = positive(
        "state.cache_max_mib",
        raw.cache_max_mib,
        DEFAULT_CACHE_MAX_MIB,
        issues,
    );
    for (set, key) in [
        (raw.responses_max_entries.is_some(), "responses_max_entries"),
        (raw.responses_max_mib.is_some(), "responses_max_mib"),
        (raw.cache_max_mib.is_some(), "cache_max_mib"),
    ] {
        if set && matches!(backend, StateBackend::Redis { .. }) {
            warnings.push(format!(
                "state.{key} is ignored with backend: redis (Redis's maxmemory policy applies)"
            ));
        }
    }
    StateSettings {
        backend,
        failure_mode,
        key_prefix: raw.key_prefix.unwrap_or_else(|| "switchyard:".to_string()),
        snapshot,
        responses_ttl: Duration::from_secs(responses_ttl),
        responses_max_entries: usize::try_from(responses_max_entries).unwrap_or(usize::MAX),
        responses_max_bytes: mib_to_bytes(responses_max_mib),
        cache_max_bytes: mib_to_bytes(cache_max_mib),
    }
}

fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib)
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{env, issues};
    use crate::config::{parse, SnapshotSettings};

    #[test]
    fn snapshots_keep_memory_budgets_or_warn() {
        let budgeted =
            "auth: { keys: [{ name: a, key: k, budget_usd: { amount: 5, period: monthly } }] }";
        let cfg = parse(
            &format!("state: {{ snapshot_path: /var/lib/switchyard/spend.json, snapshot_interval_s: 3 }}\n{budgeted}"),
            env,
        )
        .unwrap();
        assert_eq!(
            cfg.state.snapshot,
            Some(SnapshotSettings {
                path: "/var/lib/switchyard/spend.json".into(),
                interval: std::time::Duration::from_secs(3)
            })
        );
        assert!(!cfg.warnings.iter().any(|w| w.contains("snapshot_path")));
        // Without a snapshot, budgets on memory are allowed but warned about.
        let cfg = parse(budgeted, env).unwrap();
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("without state.snapshot_path")),
            "{:?}",
            cfg.warnings
        );
        let cfg = parse(
            "state: { backend: redis, url: \"redis://h\", snapshot_path: /x/spend.json }",
            env,
        )
        .unwrap();
        assert_eq!(cfg.state.snapshot, None);
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.contains("ignored with backend: redis")));
        let found = issues("state: { snapshot_path: spend.json, snapshot_interval_s: 0 }");
        for expected in [
            "state.snapshot_path: must be an absolute path",
            "state.snapshot_interval_s: must be a positive integer",
        ] {
            assert!(
                found.contains(&expected.to_string()),
                "{expected}: {found:?}"
            );
        }
        assert_eq!(
            issues("state: { snapshot_interval_s: 5 }"),
            vec!["state.snapshot_interval_s: only used with snapshot_path"]
        );
    }

    #[test]
    fn responses_retention_has_defaults_and_must_be_positive() {
        let cfg = parse("{}", env).unwrap();
        assert_eq!(
            cfg.state.responses_ttl,
            std::time::Duration::from_secs(2_592_000)
        );
        assert_eq!(cfg.state.responses_max_entries, 10_000);
        assert_eq!(cfg.state.responses_max_bytes, 256 << 20);
        let cfg = parse(
            "state: { responses_ttl_s: 60, responses_max_entries: 5, responses_max_mib: 3 }",
            env,
        )
        .unwrap();
        assert_eq!(cfg.state.responses_ttl, std::time::Duration::from_secs(60));
        assert_eq!(cfg.state.responses_max_entries, 5);
        assert_eq!(cfg.state.responses_max_bytes, 3 << 20);
        assert!(!cfg.warnings.iter().any(|w| w.contains("responses")));
        assert_eq!(
            issues(
                "state: { responses_ttl_s: 0, responses_max_entries: -1, responses_max_mib: 0 }"
            ),
            vec![
                "state.responses_ttl_s: must be a positive integer",
                "state.responses_max_entries: must be a positive integer",
                "state.responses_max_mib: must be a positive integer",
            ]
        );
        // The caps are the memory backend's; with Redis they are ignored, with a warning.
        let cfg = parse(
            "state: { backend: redis, url: \"redis://h\", responses_max_entries: 5, responses_max_mib: 1 }",
            env,
        )
        .unwrap();
        for key in ["responses_max_entries", "responses_max_mib"] {
            let warning = format!("state.{key} is ignored with backend: redis");
            assert!(cfg.warnings.iter().any(|w| w.contains(&warning)), "{key}");
        }
    }
}
