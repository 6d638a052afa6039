//! Canonical answers → Responses API response objects and typed SSE events.
//! (Skeleton: filled in by the encoder work; see the module docs of `dialect::responses`.)

use std::sync::Arc;

use bytes::Bytes;

use super::ResponseMeta;
use crate::chat::{self, Event};
use crate::config::Price;
use crate::error::GatewayError;

/// A finished answer as a `response` object.
pub fn response_body(response: &chat::Response, meta: &ResponseMeta) -> Bytes {
    let _ = (response, meta);
    Bytes::new()
}

/// An `error` event for a stream whose encoder is gone.
pub fn stream_error_event(err: &GatewayError) -> Bytes {
    let _ = err;
    Bytes::new()
}

pub struct StreamEncoder {
    meta: Arc<ResponseMeta>,
    price: Option<Price>,
}

impl StreamEncoder {
    pub fn new(meta: Arc<ResponseMeta>, price: Option<Price>) -> Self {
        StreamEncoder { meta, price }
    }
}

impl crate::dialect::StreamEncoder for StreamEncoder {
    fn encode(&mut self, event: Event<'_>, out: &mut Vec<u8>) {
        let _ = (event, out, &self.meta, self.price);
    }
}
