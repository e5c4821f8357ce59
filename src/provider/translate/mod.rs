//! Chat Completions ⇄ Responses. A Chat Completions client whose model version is served by a
//! Responses-API provider, and a Responses client in front of a Chat Completions provider: the
//! request (messages/input items and content parts, tools and tool choice, tool calls and
//! results, json_schema formats, reasoning effort, limits) one way, the answer and its stream
//! (text, refusals, function calls with streamed arguments, usage) the other. Whatever has no
//! equivalent is refused with a 400 naming the field, never dropped.
//!
//! - `chat_to_responses`: a Chat Completions client, a Responses provider.
//! - `responses_to_chat`: a Responses client, a Chat Completions provider.

mod chat_to_responses;
mod responses_to_chat;

use super::ProviderError;
pub use chat_to_responses::{
    chat_to_responses, response_to_chat_completion, ResponsesToChatStream,
};
pub use responses_to_chat::{
    chat_completion_to_response, responses_to_chat, ChatToResponsesStream,
};

pub(super) fn unsupported(param: impl Into<String>, why: &str) -> ProviderError {
    let param = param.into();
    ProviderError::Unsupported {
        message: format!(
            "`{param}` cannot be sent to this model version: its provider speaks the Responses API, \
             which {why}."
        ),
        param,
    }
}

pub(super) fn unsupported_on_chat(param: impl Into<String>, why: &str) -> ProviderError {
    let param = param.into();
    ProviderError::Unsupported {
        message: format!(
            "`{param}` cannot be sent to this model version: its provider speaks the Chat \
             Completions API, which {why}."
        ),
        param,
    }
}

#[cfg(test)]
mod tests;
