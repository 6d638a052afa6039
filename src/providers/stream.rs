//! The shared frame of SSE-based stream decoders: bytes in, whole events to the vendor's
//! translator, the vendor's verdict at the end.

use super::sse::{SseDecoder, SseEvent};
use super::{StreamDecoder, StreamFailure};
use crate::accounting::Usage;

/// A vendor's translation of whole SSE events into OpenAI chunks.
pub trait EventTranslator: Send {
    /// Translates one event, appending client bytes to `out`.
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure>;
    /// The upstream body ended: appends the closing bytes, or fails when the vendor's end of
    /// stream was never seen.
    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure>;
    fn usage(&self) -> Option<Usage>;
}

/// A [`StreamDecoder`] made of the incremental SSE parser and a vendor's [`EventTranslator`].
pub struct SseTranslator<T> {
    sse: SseDecoder,
    events: Vec<SseEvent>,
    translator: T,
}

impl<T: EventTranslator> SseTranslator<T> {
    pub fn new(translator: T) -> Self {
        SseTranslator {
            sse: SseDecoder::new(),
            events: Vec::new(),
            translator,
        }
    }
}

impl<T: EventTranslator> StreamDecoder for SseTranslator<T> {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let parsed = self
            .sse
            .push(chunk, &mut self.events)
            .map_err(|e| StreamFailure::Malformed(e.to_string()));
        // Events completed before a parse error are still translated, in order.
        let mut result = Ok(());
        for event in self.events.drain(..) {
            if result.is_ok() {
                result = self.translator.event(event, out);
            }
        }
        parsed.and(result)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        // A last event without its blank line still counts (some hosts end with `data: [DONE]`);
        // the translator's `end` decides whether the stream was whole.
        if let Some(tail) = self
            .sse
            .finish()
            .map_err(|e| StreamFailure::Malformed(e.to_string()))?
        {
            self.translator.event(tail, out)?;
        }
        self.translator.end(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.translator.usage()
    }
}
