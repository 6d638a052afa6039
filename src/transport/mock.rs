//! The fake transport of the built-in `mock` provider: an OpenAI-compatible server inside the
//! process. It reads the request the OpenAI adapter built, as a real server would, and answers
//! with OpenAI JSON or SSE bytes, so mock traffic takes the same adapter, decode and encode path
//! as real traffic — in tests and in benchmarks.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::{AttemptError, Exchange};
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::openai::ChatRequest;
use crate::providers::mock::MockProvider;
use crate::providers::UpstreamRequest;

/// A mock answer being read.
pub struct MockExchange {
    /// Each piece, and whether the token rate's pause comes before it.
    chunks: VecDeque<(bool, Bytes)>,
    interval: Option<Duration>,
    pub waited: Duration,
}

/// Answers `req` after the mock's configured latency.
pub async fn send(mock: &MockProvider, req: &UpstreamRequest) -> Result<Exchange, AttemptError> {
    if req.path_and_query.ends_with("/embeddings") {
        return embeddings(mock, req).await;
    }
    // The adapter wrote this body; it always parses.
    let request = ChatRequest::parse(&req.body)
        .map_err(|e| AttemptError::Io(format!("mock cannot read the request: {e}")))?;
    let answer = mock.answer(&request, &request.model);
    let latency = mock.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let interval = mock.token_interval();
    let mut chunks = VecDeque::new();
    if !request.stream {
        chunks.push_back((false, answer.json()));
    } else {
        let usage = request.include_usage;
        match interval {
            Some(_) => {
                chunks.push_back((false, answer.role_chunk(usage)));
                chunks
                    .extend((0..answer.tokens.len()).map(|i| (true, answer.token_chunk(i, usage))));
                chunks.push_back((false, answer.closing_chunks(usage)));
            }
            // Without a token rate the whole stream is ready at once: one piece.
            None => {
                let mut all = answer.role_chunk(usage).to_vec();
                for i in 0..answer.tokens.len() {
                    all.extend_from_slice(&answer.token_chunk(i, usage));
                }
                all.extend_from_slice(&answer.closing_chunks(usage));
                chunks.push_back((false, Bytes::from(all)));
            }
        }
    }
    Ok(Exchange::Mock(MockExchange {
        chunks,
        interval,
        waited: latency,
    }))
}

/// `POST /embeddings`: deterministic vectors, one per input.
async fn embeddings(mock: &MockProvider, req: &UpstreamRequest) -> Result<Exchange, AttemptError> {
    let request = EmbeddingsRequest::parse(&req.body)
        .map_err(|e| AttemptError::Io(format!("mock cannot read the request: {e}")))?;
    let latency = mock.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (vectors, usage) = mock.embed(&request);
    let body = request.answer(&request.model, &vectors, &usage);
    Ok(Exchange::Mock(MockExchange {
        chunks: VecDeque::from([(false, body)]),
        interval: None,
        waited: latency,
    }))
}

impl MockExchange {
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
