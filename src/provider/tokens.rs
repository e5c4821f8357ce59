//! Token counting for when an upstream reports no usage (the built-in mock, some compatible servers):
//! tiktoken's `o200k_base` (GPT-4o / GPT-5 family), built once, with a chars/4 fallback. The cost is
//! bounded: one count encodes at most [`EXACT_COUNT_BYTES`] exactly and estimates the rest at the
//! rate it measured (a 390,000-character prompt of one repeated letter cost 0.65 s of tiktoken).
//! Callers on the request path run large counts on `crate::blocking`'s pool.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::LazyLock;

use tiktoken_rs::CoreBPE;

use super::ChatMessage;

/// Tokens every message costs on top of its role and content (OpenAI's chat format wraps each message
/// in `<|start|>role<|message|>content<|end|>`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens that prime the assistant's reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// fancy-regex gives up (and tiktoken-rs 0.7 panics) on very long runs without a split point, e.g. a
/// million `-`, and byte-pair merging costs grow with the square of such a run. Encoding in bounded
/// pieces keeps every regex match short (32 KiB of one repeated letter: 11 ms at 1 KiB pieces, 87 ms
/// at 4 KiB); cutting before whitespace keeps the count identical to a whole-text encode except
/// where a piece had to be cut mid-run.
const MAX_PIECE_BYTES: usize = 1024;

/// Text one count encodes exactly; beyond it, tokens are estimated at the rate measured on what
/// was encoded. Prose is counted exactly up to ~8,000 tokens, and within a few percent beyond.
pub const EXACT_COUNT_BYTES: usize = 32 * 1024;

/// Building the BPE tables takes a few hundred milliseconds, so it happens once, on first use (or in
/// [`warm_up`] at start-up).
static BPE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| match tiktoken_rs::o200k_base() {
    Ok(bpe) => Some(bpe),
    Err(e) => {
        tracing::warn!(error = %e, "cannot load the o200k_base tokenizer; counting tokens as characters / 4");
        None
    }
});

/// Loads the tokenizer now so the first request does not pay for it. Blocking: call it from
/// `spawn_blocking` or before the runtime serves traffic.
pub fn warm_up() {
    LazyLock::force(&BPE);
}

/// Tokens in `text` (0 for the empty string); exact up to [`EXACT_COUNT_BYTES`], estimated
/// beyond.
pub fn count_tokens(text: &str) -> u64 {
    Counter::default().add(text)
}

/// Prompt tokens of a chat request, OpenAI-style: per message [`TOKENS_PER_MESSAGE`] + role + content,
/// plus [`REPLY_PRIMING_TOKENS`] once. No messages count 0. Within a few tokens of what OpenAI bills,
/// which is what cost estimates need. One budget of exact counting for all the messages.
pub fn count_message_tokens(messages: &[ChatMessage]) -> u64 {
    if messages.is_empty() {
        return 0;
    }
    let mut counter = Counter::default();
    messages
        .iter()
        .map(|m| TOKENS_PER_MESSAGE + counter.add(m.role.as_str()) + counter.add(&m.content))
        .sum::<u64>()
        + REPLY_PRIMING_TOKENS
}

/// Whether counting `bytes` of text is worth moving off a request worker.
pub fn is_heavy(bytes: usize) -> bool {
    bytes >= crate::blocking::HEAVY_BYTES
}

/// Counts texts exactly until [`EXACT_COUNT_BYTES`] have been encoded, then estimates at the
/// tokens-per-byte rate measured so far.
#[derive(Debug, Default)]
struct Counter {
    exact_bytes: usize,
    exact_tokens: u64,
}

impl Counter {
    fn add(&mut self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        let room = EXACT_COUNT_BYTES.saturating_sub(self.exact_bytes);
        let mut cut = room.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, rest) = text.split_at(cut);
        let exact = exact_tokens(head);
        self.exact_bytes += head.len();
        self.exact_tokens += exact;
        if rest.is_empty() {
            return exact;
        }
        let estimated = if self.exact_bytes == 0 || self.exact_tokens == 0 {
            approx_tokens(rest)
        } else {
            (rest.len() as f64 * self.exact_tokens as f64 / self.exact_bytes as f64).ceil() as u64
        };
        exact + estimated
    }
}

/// Exact tokens of `text`, encoded piece by piece.
fn exact_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match BPE.as_ref() {
        Some(bpe) => split_pieces(text)
            .map(|piece| {
                // Belt and braces for the panic described at MAX_PIECE_BYTES: a count must never
                // take the request down.
                catch_unwind(AssertUnwindSafe(|| bpe.encode_ordinary(piece).len() as u64))
                    .unwrap_or_else(|_| approx_tokens(piece))
            })
            .sum(),
        None => approx_tokens(text),
    }
}

/// The fallback: one token per four characters, rounded up.
fn approx_tokens(text: &str) -> u64 {
    text.chars().count().div_ceil(4) as u64
}

/// Splits `text` into pieces of at most about [`MAX_PIECE_BYTES`], cutting right before a whitespace
/// character when there is one in the second half of the window (tokens start with their leading
/// space), else at any char boundary.
fn split_pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= MAX_PIECE_BYTES {
            let piece = rest;
            rest = "";
            return Some(piece);
        }
        let mut end = MAX_PIECE_BYTES;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let window = &rest[..end];
        let cut = window
            .char_indices()
            .rev()
            .take_while(|(i, _)| *i >= end / 2)
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, _)| i)
            .filter(|i| *i > 0)
            .unwrap_or(end);
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: crate::provider::Role::parse(role).expect("a role"),
            content: content.into(),
        }
    }

    #[test]
    fn empty_text_is_zero_tokens() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_message_tokens(&[]), 0);
    }

    #[test]
    fn text_counts_are_positive_and_stable() {
        let text = "Hello, world! How many tokens is this sentence?";
        let n = count_tokens(text);
        assert!(n > 0);
        assert_eq!(n, count_tokens(text));
        // o200k_base: "Hello" "," " world" "!" → 4.
        assert_eq!(count_tokens("Hello, world!"), 4);
        assert!(count_tokens(&text.repeat(10)) > n);
    }

    #[test]
    fn message_counts_add_overheads() {
        let messages = [msg("system", "Be brief."), msg("user", "Hi")];
        let expected = 2 * TOKENS_PER_MESSAGE
            + count_tokens("system")
            + count_tokens("Be brief.")
            + count_tokens("user")
            + count_tokens("Hi")
            + REPLY_PRIMING_TOKENS;
        assert_eq!(count_message_tokens(&messages), expected);
    }

    #[test]
    fn pathological_long_runs_do_not_panic() {
        let dashes = "-".repeat(200_000);
        assert!(count_tokens(&dashes) > 0);
        let spaces = " ".repeat(100_000);
        assert!(count_tokens(&spaces) > 0);
        let mixed = "é".repeat(50_000);
        assert!(count_tokens(&mixed) > 0);
    }

    #[test]
    fn splitting_long_prose_barely_changes_the_count() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(500);
        let pieces: Vec<&str> = split_pieces(&prose).collect();
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), prose);
        let whole = BPE.as_ref().map(|b| b.encode_ordinary(&prose).len() as u64);
        if let Some(whole) = whole {
            assert_eq!(count_tokens(&prose), whole);
        }
    }

    #[test]
    fn long_texts_are_counted_exactly_up_to_the_budget_and_estimated_beyond() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(4000);
        assert!(prose.len() > 4 * EXACT_COUNT_BYTES);
        let head = &prose[..EXACT_COUNT_BYTES];
        let exact_head = exact_tokens(head);
        let n = count_tokens(&prose);
        // Prose repeats its rate: the estimate is within a percent of the exact count.
        let exact = exact_tokens(&prose);
        assert!(
            (n as f64 - exact as f64).abs() / (exact as f64) < 0.01,
            "{n} vs {exact}"
        );
        assert!(n > exact_head);
        // The finding: 390,000 of one letter. Bounded work, still a plausible count.
        let letters = "a".repeat(390_000);
        let started = std::time::Instant::now();
        let n = count_tokens(&letters);
        let took = started.elapsed();
        assert!(n > 0);
        eprintln!("390,000 letters: {n} tokens in {took:?}");
        // Messages share one budget: many long messages cost no more exact encoding than one.
        let messages: Vec<ChatMessage> = (0..20).map(|_| msg("user", &prose[..20_000])).collect();
        let counted = count_message_tokens(&messages);
        let each = exact_tokens(&prose[..20_000]);
        let want = 20 * (TOKENS_PER_MESSAGE + count_tokens("user") + each) + REPLY_PRIMING_TOKENS;
        assert!(
            (counted as f64 - want as f64).abs() / (want as f64) < 0.01,
            "{counted} vs {want}"
        );
    }

    #[test]
    fn fallback_rounds_up() {
        assert_eq!(approx_tokens("abcde"), 2);
        assert_eq!(approx_tokens("abcd"), 1);
    }
}
