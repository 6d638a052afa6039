//! `server:`: listen addresses, threads, body size, graceful shutdown and upgrade files.

use std::net::SocketAddr;
use std::time::Duration;

use super::{absolute_path, non_negative, positive, Issues};
use crate::config::raw::RawServer;
use crate::config::ServerSettings;

pub(super) fn server(raw: RawServer, issues: &mut Issues) -> ServerSettings {
    let listen = match raw.listen {
        None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
        Some(list) if list.is_empty() => {
            issues.push("server.listen", "must name at least one address");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, addr)| socket_addr(&format!("server.listen[{i}]"), addr, issues))
            .collect(),
    };
    let admin_listen = match raw.admin_listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        Some("") => None,
        Some(addr) => socket_addr("server.admin_listen", addr, issues),
    };
    let threads = positive("server.threads", raw.threads, 2, issues) as usize;
    let max_body_bytes = positive(
        "server.max_body_bytes",
        raw.max_body_bytes,
        10 * 1024 * 1024,
        issues,
    ) as usize;
    let grace = non_negative("server.grace_period_s", raw.grace_period_s, 30, issues);
    let pid_file = absolute_path(
        "server.pid_file",
        raw.pid_file,
        "/tmp/switchyard.pid",
        issues,
    );
    let upgrade_sock = absolute_path(
        "server.upgrade_sock",
        raw.upgrade_sock,
        "/tmp/switchyard_upgrade.sock",
        issues,
    );
    ServerSettings {
        listen,
        admin_listen,
        threads,
        max_body_bytes,
        grace_period: Duration::from_secs(grace),
        pid_file,
        upgrade_sock,
    }
}

fn socket_addr(path: &str, text: &str, issues: &mut Issues) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(path, format!("'{text}' is not an IP:port address"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::env;
    use crate::config::parse;

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse("", env).unwrap();
        assert_eq!(cfg.server.listen[0].to_string(), "0.0.0.0:8080");
        assert_eq!(
            cfg.server.admin_listen.unwrap().to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(cfg.server.max_body_bytes, 10 * 1024 * 1024);
    }
}
