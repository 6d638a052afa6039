//! The shared frame of SSE-based stream decoders (bytes in, whole events to the vendor's
//! handler, the vendor's verdict at the end), and [`Translated`], which joins a vendor's event
//! decoder to the client dialect's encoder.

use super::sse::{SseDecoder, SseEvent};
use super::{EventDecoder, StreamDecoder, StreamFailure};
use crate::accounting::Usage;
use crate::chat::{Event, EventSink};
use crate::dialect::StreamEncoder;
use crate::filters::{StreamChain, StreamFilter};

/// A vendor's handling of whole SSE events, writing to `O`: canonical events
/// (`dyn EventSink`, a translation) or the client's bytes (`Vec<u8>`, a pass-through relay).
pub trait SseHandler<O: ?Sized>: Send {
    /// Handles one event.
    fn event(&mut self, event: SseEvent, out: &mut O) -> Result<(), StreamFailure>;
    /// The upstream body ended: writes the closing output, or fails when the vendor's end of
    /// stream was never seen.
    fn end(&mut self, out: &mut O) -> Result<(), StreamFailure>;
    fn usage(&self) -> Option<Usage>;
    /// See [`StreamDecoder::fail`]; pass-through relays of a dialect that numbers its events
    /// write their own ending.
    fn fail(&mut self, error: &crate::error::GatewayError, out: &mut O) -> bool {
        let _ = (error, out);
        false
    }
    /// See [`StreamDecoder::finished`].
    fn finished(&mut self) -> Option<bytes::Bytes> {
        None
    }
}

/// The incremental SSE parser in front of a vendor's [`SseHandler`]: an [`EventDecoder`] for
/// translations, a [`StreamDecoder`] for pass-through relays.
pub struct SseFrame<T> {
    sse: SseDecoder,
    events: Vec<SseEvent>,
    handler: T,
}

impl<T> SseFrame<T> {
    pub fn new(handler: T) -> Self {
        SseFrame {
            sse: SseDecoder::new(),
            events: Vec::new(),
            handler,
        }
    }

    fn push_into<O: ?Sized>(&mut self, chunk: &[u8], out: &mut O) -> Result<(), StreamFailure>
    where
        T: SseHandler<O>,
    {
        let parsed = self
            .sse
            .push(chunk, &mut self.events)
            .map_err(|e| StreamFailure::Malformed(e.to_string()));
        // Events completed before a parse error are still handled, in order.
        let mut result = Ok(());
        for event in self.events.drain(..) {
            if result.is_ok() {
                result = self.handler.event(event, out);
            }
        }
        parsed.and(result)
    }

    fn finish_into<O: ?Sized>(&mut self, out: &mut O) -> Result<(), StreamFailure>
    where
        T: SseHandler<O>,
    {
        // A last event without its blank line still counts (some hosts end with `data: [DONE]`);
        // the handler's `end` decides whether the stream was whole.
        if let Some(tail) = self
            .sse
            .finish()
            .map_err(|e| StreamFailure::Malformed(e.to_string()))?
        {
            self.handler.event(tail, out)?;
        }
        self.handler.end(out)
    }
}

impl<T> EventDecoder for SseFrame<T>
where
    T: for<'s> SseHandler<dyn EventSink + 's>,
{
    fn push(&mut self, chunk: &[u8], sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        self.push_into(chunk, sink)
    }

    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        self.finish_into(sink)
    }

    fn usage(&self) -> Option<Usage> {
        self.handler.usage()
    }
}

impl<T: SseHandler<Vec<u8>>> StreamDecoder for SseFrame<T> {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.push_into(chunk, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.finish_into(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.handler.usage()
    }

    fn fail(&mut self, error: &crate::error::GatewayError, out: &mut Vec<u8>) -> bool {
        self.handler.fail(error, out)
    }

    fn finished(&mut self) -> Option<bytes::Bytes> {
        self.handler.finished()
    }
}

/// A vendor's events, through the request's stream filters (if any), encoded in the client's
/// dialect as they are decoded.
pub struct Translated {
    decoder: Box<dyn EventDecoder>,
    encoder: Box<dyn StreamEncoder>,
    filters: Vec<Box<dyn StreamFilter>>,
}

impl Translated {
    pub fn new(decoder: Box<dyn EventDecoder>, encoder: Box<dyn StreamEncoder>) -> Self {
        Self::with_filters(decoder, encoder, Vec::new())
    }

    pub fn with_filters(
        decoder: Box<dyn EventDecoder>,
        encoder: Box<dyn StreamEncoder>,
        filters: Vec<Box<dyn StreamFilter>>,
    ) -> Self {
        Translated {
            decoder,
            encoder,
            filters,
        }
    }

    /// Feeds the decoder's events through the filters into the encoder; a filter's refusal
    /// fails the stream like an upstream error would.
    fn run(
        &mut self,
        out: &mut Vec<u8>,
        step: impl FnOnce(&mut dyn EventDecoder, &mut dyn EventSink) -> Result<(), StreamFailure>,
    ) -> Result<(), StreamFailure> {
        let mut sink = Encoding {
            encoder: &mut *self.encoder,
            out,
        };
        if self.filters.is_empty() {
            return step(&mut *self.decoder, &mut sink);
        }
        let mut refused = None;
        let mut chain = StreamChain::new(&mut self.filters, &mut sink, &mut refused);
        let decoded = step(&mut *self.decoder, &mut chain);
        match refused {
            Some(error) => Err(StreamFailure::Upstream(Box::new(
                crate::error::GatewayError::Filtered {
                    status: error.status,
                    message: error.message,
                    code: error.code,
                },
            ))),
            None => decoded,
        }
    }
}

/// Encodes each event into the output buffer the moment it is emitted.
struct Encoding<'a> {
    encoder: &'a mut dyn StreamEncoder,
    out: &'a mut Vec<u8>,
}

impl EventSink for Encoding<'_> {
    fn emit(&mut self, event: Event<'_>) {
        self.encoder.encode(event, self.out);
    }
}

impl StreamDecoder for Translated {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.run(out, |decoder, sink| decoder.push(chunk, sink))
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.run(out, |decoder, sink| decoder.finish(sink))
    }

    fn usage(&self) -> Option<Usage> {
        self.decoder.usage()
    }

    fn fail(&mut self, error: &crate::error::GatewayError, out: &mut Vec<u8>) -> bool {
        self.encoder.fail(error, out)
    }

    fn finished(&mut self) -> Option<bytes::Bytes> {
        self.encoder.finished()
    }
}
