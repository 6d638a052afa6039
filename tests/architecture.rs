//! The module graph: which top-level module of `src/` may use which. Lower layers never reach
//! up, so there is no import cycle and each layer can be read, tested and replaced without the
//! ones above it. A new `crate::x` path in module `y` fails here until `x` is added to `y`'s
//! row below, which the acyclicity check only allows for a module beneath `y`.
//!
//! Layers, bottom up: `error`, `calendar`, `auth`, `observability`, `process` (leaves) → `config` →
//! `transport` (HTTP/1.1 to upstreams; no vendor knowledge), `accounting` → `chat` (the
//! canonical model) → `dialect` (client formats) → `providers` (vendor adapters; they read the
//! client's parsed request for pass-throughs) and `limits` → `cache` (the answer cache's pure
//! parts; it decodes a kept vendor answer as that vendor's adapter does) → `routing`, `store`
//! (stored Responses answers, cached answers, sticky routing's table) → `proxy`, `admin`,
//! `reload` → `control`, `server`, `cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("calendar", &[]),
    ("auth", &[]),
    ("observability", &[]),
    ("process", &[]),
    ("config", &["auth", "error"]),
    ("transport", &["config"]),
    ("accounting", &["config"]),
    ("chat", &["accounting", "config", "error"]),
    ("dialect", &["accounting", "chat", "config", "error"]),
    (
        "filters",
        &[
            "accounting",
            "chat",
            "config",
            "dialect",
            "error",
            "observability",
            "transport",
        ],
    ),
    (
        "providers",
        &[
            "accounting",
            "calendar",
            "chat",
            "config",
            "dialect",
            "error",
            "filters",
            "transport",
        ],
    ),
    ("limits", &["calendar", "config", "error", "observability"]),
    (
        "cache",
        &["accounting", "chat", "dialect", "filters", "providers"],
    ),
    ("store", &["config", "error", "limits", "observability"]),
    (
        "routing",
        &[
            "accounting",
            "auth",
            "config",
            "error",
            "filters",
            "limits",
            "observability",
            "providers",
            "transport",
        ],
    ),
    (
        "proxy",
        &[
            "accounting",
            "cache",
            "chat",
            "config",
            "store",
            "dialect",
            "error",
            "filters",
            "limits",
            "observability",
            "process",
            "providers",
            "routing",
            "transport",
        ],
    ),
    (
        "admin",
        &["accounting", "limits", "observability", "reload", "routing"],
    ),
    (
        "reload",
        &[
            "config",
            "store",
            "limits",
            "observability",
            "process",
            "routing",
        ],
    ),
    ("control", &["observability", "process", "reload"]),
    (
        "server",
        &[
            "admin",
            "config",
            "control",
            "store",
            "filters",
            "limits",
            "observability",
            "process",
            "proxy",
            "reload",
            "routing",
            "transport",
        ],
    ),
    ("cli", &["auth", "config"]),
    (
        "app",
        &[
            "cli",
            "config",
            "filters",
            "limits",
            "observability",
            "process",
            "routing",
            "server",
        ],
    ),
];

/// Every `crate::<module>` a file names outside its unit tests (which may reach anywhere).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    code.match_indices("crate::")
        .map(|(at, m)| {
            code[at + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn visit(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_reaches_up_a_layer() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(top.as_str(), "lib" | "main") {
            continue;
        }
        let Some(may_use) = allowed.get(top.as_str()) else {
            wrong.push(format!(
                "{}: module '{top}' has no row in ALLOWED",
                rel.display()
            ));
            continue;
        };
        for used in crate_paths(&std::fs::read_to_string(file).unwrap()) {
            if used != top && !may_use.contains(&used.as_str()) {
                wrong.push(format!("{}: uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports across layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_allowed_graph_has_no_cycle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Kahn's algorithm: a module is placed once everything it uses is placed.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < allowed.len() {
        let ready: Vec<&str> = allowed
            .iter()
            .filter(|(m, deps)| !placed.contains(*m) && deps.iter().all(|d| placed.contains(d)))
            .map(|(m, _)| *m)
            .collect();
        assert!(
            !ready.is_empty(),
            "a cycle among {:?}",
            allowed
                .keys()
                .filter(|m| !placed.contains(*m))
                .collect::<Vec<_>>()
        );
        placed.extend(ready);
    }
}
