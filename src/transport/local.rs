//! An answer made inside the process, read like one from the network: its body pieces, paced
//! at a token rate. The built-in `mock` provider answers with it, so mock traffic takes the same
//! adapter, decode and encode path as real traffic.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// An in-process answer being read.
pub struct LocalExchange {
    /// Each piece, and whether the pause comes before it.
    chunks: VecDeque<(bool, Bytes)>,
    interval: Option<Duration>,
    pub waited: Duration,
}

impl LocalExchange {
    /// `chunks` are the body's pieces, each with whether `interval` passes before it;
    /// `waited` is the time already spent before the answer started.
    pub fn new(
        chunks: VecDeque<(bool, Bytes)>,
        interval: Option<Duration>,
        waited: Duration,
    ) -> Self {
        LocalExchange {
            chunks,
            interval,
            waited,
        }
    }

    pub async fn read_chunk(&mut self) -> Option<Bytes> {
        let (paced, chunk) = self.chunks.pop_front()?;
        if let (true, Some(pause)) = (paced, self.interval) {
            tokio::time::sleep(pause).await;
            self.waited += pause;
        }
        Some(chunk)
    }

    pub async fn read_all(&mut self) -> Bytes {
        let mut all = Vec::new();
        while let Some(chunk) = self.read_chunk().await {
            all.extend_from_slice(&chunk);
        }
        Bytes::from(all)
    }
}
