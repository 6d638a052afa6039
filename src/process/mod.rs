//! The gateway as an operating-system process, around Pingora's `Server`:
//! - [`listen`]: the client and admin sockets, bound in `main` before anything starts, so that a
//!   taken port is one line on stderr and exit code 1 (Pingora binds inside its service threads,
//!   where a failure is a panic that leaves the process running with nothing bound);
//! - [`inflight`]: the count of client connections with a request in progress;
//! - [`signals`]: SIGTERM, SIGQUIT and SIGINT, as Pingora's shutdown signal, with a SIGQUIT that
//!   only hands the sockets over when a new process is there to take them;
//! - [`lifecycle`]: READY and watchdog pings to systemd, and the exit as soon as in-flight work
//!   is done once stopping (Pingora would sleep the whole grace period);
//! - [`systemd`]: the sd_notify messages.

pub mod inflight;
pub mod lifecycle;
pub mod listen;
pub mod signals;
pub mod systemd;
