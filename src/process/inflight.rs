//! How many client connections have a request in progress: what a stopping process waits for.
//!
//! Counted per connection from the moment its request head is read until the answer is finished
//! and the connection handed back (or closed), so the last chunk of a stream is out before the
//! count drops. Connections idle between requests are not counted: Pingora drops them at
//! shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
}

impl InFlight {
    /// Counts one request until the guard is dropped (also on errors and cancellation).
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_until_dropped() {
        let inflight = InFlight::default();
        let a = inflight.enter();
        let b = inflight.enter();
        assert_eq!(inflight.count(), 2);
        drop(a);
        assert_eq!(inflight.count(), 1);
        drop(b);
        assert_eq!(inflight.count(), 0);
    }
}
