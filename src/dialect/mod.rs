//! Client dialects: the APIs clients speak to Switchyard.

pub mod openai;
