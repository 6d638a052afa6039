//! Responses API input items → canonical request.

use crate::chat;
use crate::error::GatewayError;

pub fn canonical<'a>(
    raw: &'a [u8],
    history: Option<&'a [u8]>,
    stream: bool,
) -> Result<chat::Request<'a>, GatewayError> {
    let _ = (raw, history, stream);
    Err(GatewayError::invalid("not yet", None))
}
