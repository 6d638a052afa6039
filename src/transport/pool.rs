//! Idle keep-alive connections to upstreams, kept for the next request to the same peer.
//!
//! Not Pingora's pool: that one wraps every returned connection in an `Arc<Mutex>`, spawns a
//! task to watch it while it is idle, and asks the kernel for the socket's peer address
//! (`getpeername`) each time one is taken, about 13k instructions, three allocations and a
//! system call per request. Here a returned connection goes on its peer's list, and the newest
//! is taken first. A connection the server closed while it sat idle is noticed when it is taken
//! (a read that does not wait sees the end of the stream) and by a sweep every few seconds that
//! also closes those idle for longer than the idle timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// How often idle connections are checked for age and for a close by the server.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

struct Idle {
    stream: Stream,
    since: Instant,
}

/// Lists of idle connections, one per peer (keyed by `Peer::reuse_hash`), oldest first.
pub struct Pool {
    lists: Mutex<HashMap<u64, Vec<Idle>>>,
    /// Most idle connections kept per peer; one more returned closes the oldest.
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool with a thread that sweeps it until the pool is dropped.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            lists: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout,
        });
        let weak = Arc::downgrade(&pool);
        // A thread rather than a task: the pool serves every runtime of the process, and a
        // task would stop with whichever runtime spawned it.
        let spawned = std::thread::Builder::new()
            .name("upstream-pool".into())
            .spawn(move || sweep_until_dropped(weak));
        if let Err(e) = spawned {
            log::warn!("no sweeper for idle upstream connections: {e}");
        }
        pool
    }

    /// The newest idle connection to `key` that the server has not closed.
    pub fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            // Popped under the lock, checked and (when stale) closed outside it.
            let mut idle = self.lists().get_mut(&key)?.pop()?;
            if now.saturating_duration_since(idle.since) < self.idle_timeout
                && still_idle(&mut idle.stream)
            {
                return Some(idle.stream);
            }
        }
    }

    /// Keeps `stream`, whose last answer was read to its end, for the next request to `key`.
    pub fn put(&self, key: u64, stream: Stream) {
        let idle = Idle {
            stream,
            since: Instant::now(),
        };
        let evicted = {
            let mut lists = self.lists();
            let list = lists.entry(key).or_default();
            list.push(idle);
            (list.len() > self.max_idle).then(|| list.remove(0))
        };
        drop(evicted);
    }

    /// Closes connections idle too long or closed by their server.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut lists = self.lists();
            for list in lists.values_mut() {
                let mut kept = Vec::with_capacity(list.len());
                for mut idle in list.drain(..) {
                    if now.saturating_duration_since(idle.since) < self.idle_timeout
                        && still_idle(&mut idle.stream)
                    {
                        kept.push(idle);
                    } else {
                        closed.push(idle);
                    }
                }
                *list = kept;
            }
            lists.retain(|_, list| !list.is_empty());
        }
        drop(closed);
    }

    /// How many idle connections the pool holds.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lists().values().map(Vec::len).sum()
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Idle>>> {
        // Nothing under the lock can leave the lists half-changed.
        self.lists.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sweep_until_dropped(pool: Weak<Pool>) {
    loop {
        std::thread::sleep(SWEEP_INTERVAL);
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

/// Whether an idle connection is still open with nothing to read: a server sends nothing on an
/// idle connection unless it closes it (or misbehaves), and either way it cannot be reused.
/// Unconstrained: out of its cooperative budget, a Tokio read says "not ready" even when it is.
fn still_idle(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the pool's side as a Pingora stream, and the server's side.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(client));
        (stream, server)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn newest_connection_is_taken_first_and_only_for_its_peer() {
        let pool = Pool::new(8, Duration::from_secs(60));
        let (old, _old_server) = pair().await;
        let (new, _new_server) = pair().await;
        let (old_id, new_id) = (old.id(), new.id());
        pool.put(1, old);
        pool.put(1, new);
        assert!(pool.take(2).is_none());
        assert_eq!(pool.take(1).unwrap().id(), new_id);
        assert_eq!(pool.take(1).unwrap().id(), old_id);
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_or_wrote_on_is_not_reused() {
        let pool = Pool::new(8, Duration::from_secs(60));
        let (closed, closed_server) = pair().await;
        let (chatty, mut chatty_server) = pair().await;
        let (open, _open_server) = pair().await;
        let open_id = open.id();
        pool.put(1, open);
        pool.put(1, closed);
        pool.put(1, chatty);
        drop(closed_server);
        chatty_server
            .write_all(b"HTTP/1.1 408\r\n\r\n")
            .await
            .unwrap();
        settle().await;
        assert_eq!(pool.take(1).unwrap().id(), open_id);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn connections_idle_too_long_are_dropped_and_swept() {
        let pool = Pool::new(8, Duration::from_millis(30));
        let (stream, _server) = pair().await;
        pool.put(1, stream);
        settle().await;
        assert!(pool.take(1).is_none());

        let (stream, _server) = pair().await;
        pool.put(1, stream);
        settle().await;
        sweep_off_the_runtime(&pool);
        assert_eq!(pool.idle_count(), 0);
    }

    /// As the sweeper thread does it: outside any runtime.
    fn sweep_off_the_runtime(pool: &Arc<Pool>) {
        let pool = pool.clone();
        std::thread::spawn(move || pool.sweep()).join().unwrap();
    }

    #[tokio::test]
    async fn the_sweep_closes_what_the_server_closed_and_keeps_the_rest() {
        let pool = Pool::new(8, Duration::from_secs(60));
        let (closed, closed_server) = pair().await;
        let (open, _open_server) = pair().await;
        let open_id = open.id();
        pool.put(1, closed);
        pool.put(2, open);
        drop(closed_server);
        settle().await;
        sweep_off_the_runtime(&pool);
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(pool.take(2).unwrap().id(), open_id);
    }

    #[tokio::test]
    async fn the_oldest_connection_goes_when_a_peer_has_too_many() {
        let pool = Pool::new(2, Duration::from_secs(60));
        let mut servers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (stream, server) = pair().await;
            ids.push(stream.id());
            servers.push(server);
            pool.put(7, stream);
        }
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(pool.take(7).unwrap().id(), ids[2]);
        assert_eq!(pool.take(7).unwrap().id(), ids[1]);
    }
}
