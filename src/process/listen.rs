//! The listening sockets, bound before the server starts.
//!
//! Pingora binds each service's addresses inside that service's thread, retries a taken port for
//! a while and then panics there, which leaves the process alive with nothing bound (systemd
//! sees it running; `Restart=on-failure` never fires). Binding here first turns a taken port into
//! one line and exit code 1 before anything has started. The bound sockets are then put into
//! Pingora's table of listening sockets, where its services look first (the table a graceful
//! upgrade fills with the old process's sockets), so Pingora never binds them a second time.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, OwnedFd};

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Sockets bound up front, by the address string Pingora knows them by (`SocketAddr`'s display).
#[derive(Debug, Default)]
pub struct Sockets(HashMap<String, OwnedFd>);

/// Binds every address. When taking over from a running process (`upgrading`), an address in
/// use is normal — the old process holds it and hands it over — and is left to the hand-over.
pub fn bind(addrs: &[SocketAddr], upgrading: bool) -> Result<Sockets, ListenError> {
    let mut sockets = Sockets::default();
    for &addr in addrs {
        // std sets SO_REUSEADDR, as Pingora does, and listens with a backlog that Pingora raises
        // to its own when it adopts the socket.
        match TcpListener::bind(addr).and_then(|l| {
            // Pingora hands it to tokio, which expects a non-blocking socket.
            l.set_nonblocking(true)?;
            Ok(l)
        }) {
            Ok(listener) => {
                sockets.0.insert(addr.to_string(), listener.into());
            }
            Err(e) if upgrading && e.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(source) => return Err(ListenError { addr, source }),
        }
    }
    Ok(sockets)
}

impl Sockets {
    /// Takes the sockets of `addrs` out, for the service that listens on them.
    pub fn take(&mut self, addrs: &[SocketAddr]) -> Vec<(String, OwnedFd)> {
        addrs
            .iter()
            .filter_map(|a| {
                let key = a.to_string();
                self.0.remove(&key).map(|fd| (key, fd))
            })
            .collect()
    }
}

/// A Pingora service whose sockets were bound beforehand.
pub struct PreBound<S> {
    inner: S,
    sockets: Vec<(String, OwnedFd)>,
}

impl<S> PreBound<S> {
    pub fn new(inner: S, sockets: Vec<(String, OwnedFd)>) -> Self {
        PreBound { inner, sockets }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for PreBound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        if let Some(table) = &fds {
            let mut table = table.lock();
            for (addr, fd) in self.sockets.drain(..) {
                // A socket handed over by an old process wins; ours is closed.
                if table.get(&addr).is_none() {
                    // Pingora's listener takes ownership of the descriptor.
                    table.add(addr, fd.into_raw_fd());
                }
            }
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// What Pingora's listening service panics with when it cannot bind an address (after an
/// upgrade whose config listens somewhere new that is taken: the only bind left to Pingora).
const LISTENER_PANIC: &str = "Failed to build listeners";

/// Makes that panic end the process with one line and exit code 1, instead of leaving it
/// running with the service dead. Every other panic goes to the previous hook unchanged.
pub fn exit_on_listener_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(detail) = message.strip_prefix(LISTENER_PANIC) {
            let detail = detail.trim_start_matches(':').trim();
            let first_line = detail.lines().next().unwrap_or(detail);
            eprintln!("cannot listen: {first_line}");
            std::process::exit(1);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_an_error_naming_the_address_unless_upgrading() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(&[addr], false).unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr}: Address already in use")),
            "{err}"
        );
        let mut sockets = bind(&[addr], true).unwrap();
        assert!(sockets.take(&[addr]).is_empty(), "left to the hand-over");
    }

    #[test]
    fn free_addresses_are_bound_and_taken_once() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let mut sockets = bind(&[addr], false).unwrap();
        assert!(
            TcpListener::bind(addr).is_err(),
            "the address is held from now on"
        );
        let taken = sockets.take(&[addr]);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, addr.to_string());
        assert!(sockets.take(&[addr]).is_empty());
    }
}
