//! The process signals Pingora acts on, as its [`ShutdownSignalWatch`]:
//! - SIGTERM: stop accepting, let in-flight work finish (see [`super::lifecycle`]), exit;
//! - SIGINT: stop at once;
//! - SIGQUIT: hand the listening sockets to a new process started with `serve --upgrade`, then
//!   drain and exit. Pingora's own handler drains and exits even when no process took the
//!   sockets (none was started, or it failed), which leaves nothing listening; here a SIGQUIT
//!   with no new process waiting on `server.upgrade_sock` is refused and this process keeps
//!   serving.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::systemd;

/// Registers for a signal; `None` (logged) when that fails, so the rest still works.
pub fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!("cannot listen for {name}: {e}");
            None
        }
    }
}

/// The next delivery of `signal`; never, when it could not be registered.
pub async fn next(signal: &mut Option<Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

pub struct Signals {
    upgrade_sock: PathBuf,
}

impl Signals {
    pub fn new(upgrade_sock: PathBuf) -> Self {
        Signals { upgrade_sock }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        loop {
            tokio::select! {
                _ = next(&mut quit) => {
                    if successor_waiting(&self.upgrade_sock) {
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    log::warn!(
                        "SIGQUIT: no new process waits for the sockets on {}, so this process \
                         keeps serving (start `switchyard serve --upgrade` first, or send SIGUSR2)",
                        self.upgrade_sock.display()
                    );
                }
                _ = next(&mut term) => {
                    systemd::stopping();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = next(&mut interrupt) => {
                    systemd::stopping();
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

/// Whether a process listens on the Unix socket `path`: a new process started with
/// `--upgrade` waits there for the sockets. Connecting to find out would consume the one
/// connection it accepts, so the kernel's socket table is read instead (`/proc/net/unix`: flag
/// `00010000` is a listening socket). Where that table cannot be read, the file's existence
/// stands in.
pub fn successor_waiting(path: &Path) -> bool {
    match std::fs::read_to_string("/proc/net/unix") {
        Ok(table) => listening_in(&table, path),
        Err(_) => path.exists(),
    }
}

fn listening_in(table: &str, path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path (the path may contain spaces).
        let mut fields = line.split_whitespace();
        let flags = fields.nth(3);
        let rest: Vec<&str> = fields.skip(3).collect();
        flags == Some("00010000") && !rest.is_empty() && rest.join(" ") == wanted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 27081 /run/switchyard/upgrade.sock
0000000000000000: 00000003 00000000 00000000 0001 03 27090 /run/other.sock
0000000000000000: 00000002 00000000 00010000 0001 01 27095 /tmp/with space.sock
";

    #[test]
    fn finds_listening_sockets_by_path() {
        assert!(listening_in(
            TABLE,
            Path::new("/run/switchyard/upgrade.sock")
        ));
        assert!(
            !listening_in(TABLE, Path::new("/run/other.sock")),
            "connected, not listening"
        );
        assert!(listening_in(TABLE, Path::new("/tmp/with space.sock")));
        assert!(!listening_in(TABLE, Path::new("/run/switchyard/none.sock")));
    }

    #[test]
    fn a_real_listening_socket_is_seen_and_a_closed_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(successor_waiting(&path));
        drop(listener);
        assert!(
            !successor_waiting(&path),
            "the file is left, but nobody listens"
        );
    }
}
