//! Masks personal data and secrets in text before it is stored (`logging.content: redacted`):
//! e-mail addresses, phone numbers, card numbers (Luhn-checked) and key-like tokens.
//! Applied only to what is stored; never to what goes upstream or back to the client.
//!
//! Also the one place that hides the secrets of a connection URL (userinfo password and any
//! password-, secret-, token- or key-like query parameter) wherever a URL is shown: config dumps,
//! connection errors, logs. And `ContentLogging`, the `logging.content` setting it serves.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

pub const EMAIL: &str = "[EMAIL]";
pub const PHONE: &str = "[PHONE]";
pub const CARD: &str = "[CARD]";
pub const SECRET: &str = "[SECRET]";

fn re(pattern: &str) -> Regex {
    // The patterns are constants checked by the unit tests; a typo fails every test run.
    Regex::new(pattern).unwrap_or_else(|e| panic!("redaction pattern {pattern:?}: {e}"))
}

/// `Authorization`-style bearer values: the scheme is kept, the credential masked.
static BEARER: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"));

/// Tokens with a recognisable vendor shape.
static VENDOR_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"\b(?:",
        r"sk-[A-Za-z0-9_-]{16,}", // OpenAI, Anthropic (sk-ant-…), sk-proj-…
        r"|lqo_[A-Za-z0-9]{16,}", // our own client keys
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}", // AWS access key ids
        r"|gh[pousr]_[A-Za-z0-9]{30,}", // GitHub
        r"|github_pat_[A-Za-z0-9_]{30,}",
        r"|xox[abposr]-[A-Za-z0-9-]{10,}", // Slack
        r"|AIza[0-9A-Za-z_-]{35}",         // Google API keys
        r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", // JWTs
        r")"
    ))
});

/// Long runs of hex (≥ 32) or base64-ish characters (≥ 32) that mix letters and digits.
static LONG_TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z0-9+/_-]{32,}={0,2}"));

static EMAIL_RE: LazyLock<Regex> =
    LazyLock::new(|| re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"));

/// 13–19 digits, optionally grouped by single spaces or dashes.
static CARD_RE: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d(?:[ -]?\d){12,18}\b"));

/// International (+CC …) or grouped national numbers; the digit count is checked afterwards.
static PHONE_RE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b)",
        r"|(?:(?:\(\d{3}\)\s?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b)",
    ))
});

/// Luhn checksum, as card numbers carry.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn looks_like_secret(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    let letters = body.bytes().filter(u8::is_ascii_alphabetic).count();
    let is_hex = body.bytes().all(|b| b.is_ascii_hexdigit());
    // Hex digests and keys, or random base64: both letters and digits in quantity. Long plain
    // words, paths and identifiers (few digits) are left alone.
    (is_hex && body.len() >= 32 && digits >= 4) || (digits >= 4 && letters >= 8)
}

/// The text with every e-mail address, phone number, card number and key-like token masked.
/// Borrowed when nothing matched, so clean text costs no allocation.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    let mut apply = |re: &Regex, f: &dyn Fn(&Captures<'_>) -> String| {
        if re.is_match(&out) {
            let replaced = re.replace_all(&out, |c: &Captures<'_>| f(c)).into_owned();
            // A match the check kept (e.g. a long word, a number failing Luhn) changes nothing.
            if replaced != *out {
                out = Cow::Owned(replaced);
            }
        }
    };
    apply(&BEARER, &|c| format!("{} {SECRET}", &c[1]));
    apply(&VENDOR_TOKEN, &|_| SECRET.to_string());
    apply(&EMAIL_RE, &|_| EMAIL.to_string());
    apply(&LONG_TOKEN, &|c| {
        if looks_like_secret(&c[0]) {
            SECRET.to_string()
        } else {
            c[0].to_string()
        }
    });
    apply(&CARD_RE, &|c| {
        let digits: Vec<u8> = c[0]
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        if (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
            CARD.to_string()
        } else {
            c[0].to_string()
        }
    });
    apply(&PHONE_RE, &|c| {
        let n = c[0].bytes().filter(u8::is_ascii_digit).count();
        if (7..=15).contains(&n) {
            PHONE.to_string()
        } else {
            c[0].to_string()
        }
    });
    out
}

/// What of prompts and responses is stored in `llm_logs` (`logging.content`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContentLogging {
    #[default]
    Full,
    /// Stored with e-mail addresses, phone numbers, card numbers and key-like tokens masked.
    Redacted,
    /// Prompts and responses are not stored; everything else is.
    None,
}

/// Query parameter names (URL-decoded, lowercased) that carry a secret when they contain one of
/// these: `password`, `pwd`, `sslpassword`, `api_key`, `apikey`, `access_token`, `secret`, …
const SECRET_PARAM_WORDS: [&str; 7] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
];

/// The URL with its secrets replaced by `***`: the password of `scheme://user:password@host`
/// and the value of every query parameter whose name (URL-decoded, so `pass%77ord` counts)
/// looks like a password, secret, token or key. Anything else is kept as written.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (head, query) = match before_fragment.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    match userinfo_password_span(head) {
        Some((start, end)) => {
            out.push_str(&head[..start]);
            out.push_str("***");
            out.push_str(&head[end..]);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret_param(name) => {
                    out.push_str(name);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out.push_str(fragment);
    out
}

/// `message` with the URL and each of its secrets (as written and URL-decoded) masked, for driver
/// errors that might echo them.
pub fn scrub_url_secrets(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact_url(url));
    for secret in url_secrets(url) {
        // A one- or two-character secret would mask unrelated text; the URL itself is masked above.
        if secret.chars().count() >= 3 {
            out = out.replace(&secret, "***");
        }
    }
    out
}

/// Byte range of the password in `scheme://user:password@host…` (`head` has no query).
fn userinfo_password_span(head: &str) -> Option<(usize, usize)> {
    let start = head.find("://")? + 3;
    // The last `@` ends the userinfo, even when an unencoded `/` sits in the password.
    let at = start + head[start..].rfind('@')?;
    let colon = start + head[start..at].find(':')?;
    Some((colon + 1, at))
}

fn is_secret_param(raw_name: &str) -> bool {
    let name = percent_decode(raw_name).to_lowercase();
    SECRET_PARAM_WORDS.iter().any(|w| name.contains(w))
}

fn url_secrets(url: &str) -> Vec<String> {
    let before_fragment = url.split('#').next().unwrap_or(url);
    let (head, query) = match before_fragment.split_once('?') {
        Some((h, q)) => (h, q),
        None => (before_fragment, ""),
    };
    let mut secrets = Vec::new();
    if let Some((start, end)) = userinfo_password_span(head) {
        secrets.push(head[start..end].to_string());
    }
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=') {
            if is_secret_param(name) {
                secrets.push(value.to_string());
            }
        }
    }
    let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
    secrets.extend(decoded);
    secrets
}

/// `%XX` escapes and `+` (a space in a query) decoded; invalid escapes kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(s).into_owned()
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("mail jane.doe+x@mail.example.co.uk now"),
            "mail [EMAIL] now"
        );
        assert_eq!(r("a@b.io, c_d@e-f.com"), "[EMAIL], [EMAIL]");
        assert_eq!(r("not an email: a@b"), "not an email: a@b");
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(r("call +1 415-555-0132 today"), "call [PHONE] today");
        assert_eq!(r("call +44 20 7946 0958"), "call [PHONE]");
        assert_eq!(r("(415) 555-0132"), "[PHONE]");
        assert_eq!(r("415.555.0132"), "[PHONE]");
        assert_eq!(r("+49 (30) 123456"), "[PHONE]");
        // Not phones: dates, versions, small numbers, IP addresses.
        for keep in [
            "2024-05-01",
            "v1.2.3",
            "42 apples",
            "192.168.100.200",
            "+1 day",
        ] {
            assert_eq!(r(keep), keep);
        }
    }

    #[test]
    fn card_numbers_need_a_valid_luhn_checksum() {
        assert_eq!(r("card 4111 1111 1111 1111 exp"), "card [CARD] exp");
        assert_eq!(r("4111-1111-1111-1111"), "[CARD]");
        assert_eq!(r("5500005555555559"), "[CARD]");
        assert_eq!(r("378282246310005"), "[CARD]"); // Amex, 15 digits
                                                    // 16 digits failing Luhn: an order number, kept.
        assert_eq!(r("order 1234567812345678"), "order 1234567812345678");
        assert!(luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn_valid(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
    }

    #[test]
    fn key_like_tokens() {
        assert_eq!(
            r("key sk-proj-AbCdEf0123456789xyzXYZ ok"),
            "key [SECRET] ok"
        );
        assert_eq!(r("sk-ant-api03-abcdefghij0123456789"), "[SECRET]");
        assert_eq!(
            r("lqo_7fK2mQ9xLp3RtV8wZb1NcY4hJd6GsA0eUoIyTrEqWkM"),
            "[SECRET]"
        );
        assert_eq!(r("aws AKIAIOSFODNN7EXAMPLE"), "aws [SECRET]");
        assert_eq!(
            r("Authorization: Bearer abc.def-ghi_jkl"),
            "Authorization: Bearer [SECRET]"
        );
        assert_eq!(r("ghp_abcdefghijklmnopqrstuvwxyz0123456789"), "[SECRET]");
        assert_eq!(
            r("sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
            "sha [SECRET]"
        );
        assert_eq!(
            r("secret=dGhpcyBpcyBhIHNlY3JldCB0b2tlbiAxMjM0NTY3ODkw=="),
            "secret=[SECRET]"
        );
        assert_eq!(
            r("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
            "jwt [SECRET]"
        );
    }

    #[test]
    fn ordinary_text_is_untouched_and_borrowed() {
        for keep in [
            "What is the capital of France?",
            "Antidisestablishmentarianism_and_other_very_long_identifiers_here",
            "/usr/local/lib/python3.11/site-packages/some_module/file.py",
            "The meeting is at 10:30 on 2024-05-01, room 4.",
            "",
        ] {
            assert!(matches!(redact(keep), Cow::Borrowed(_)), "{keep}");
        }
    }

    #[test]
    fn several_kinds_in_one_text() {
        assert_eq!(
            r("I'm bob@x.org, +1 (415) 555-0132, card 4242 4242 4242 4242, key sk-abcdefghijklmnop1234"),
            "I'm [EMAIL], [PHONE], card [CARD], key [SECRET]"
        );
    }

    #[test]
    fn urls_lose_userinfo_passwords_and_secret_like_parameters() {
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require&password=x"),
            "postgresql://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/lqo.db"), "sqlite://data/lqo.db");
        assert_eq!(redact_url("data/lqo.db"), "data/lqo.db");
        // Encoded names are secrets too, and so is anything token- or key-like.
        assert_eq!(
            redact_url("postgres://h/db?pass%77ord=hunter2&application_name=lqo"),
            "postgres://h/db?pass%77ord=***&application_name=lqo"
        );
        assert_eq!(
            redact_url("postgres://h/db?PASSWORD=a&sslpassword=b&api_key=c&access_token=d&Secret=e&sslkey=f"),
            "postgres://h/db?PASSWORD=***&sslpassword=***&api_key=***&access_token=***&Secret=***&sslkey=***"
        );
        // A `/` or `?`-free password with an unencoded `/` still ends at the last `@`.
        assert_eq!(
            redact_url("postgres://u:pa/ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("sqlite:x.db?mode=rwc#frag"),
            "sqlite:x.db?mode=rwc#frag"
        );
        assert_eq!(
            redact_url("sqlite:x.db?token=t#frag"),
            "sqlite:x.db?token=***#frag"
        );
    }

    #[test]
    fn driver_messages_lose_every_form_of_the_url_secrets() {
        let url = "postgres://lqo:s3cret%21pw@db/x?pass%77ord=hunter22";
        let msg = format!("failed {url}: password s3cret!pw / s3cret%21pw rejected, hunter22 too");
        let clean = scrub_url_secrets(&msg, url);
        for secret in ["s3cret", "hunter22"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.contains("lqo:***@db/x"), "{clean}");
    }

    #[test]
    fn percent_decoding_never_panics_on_broken_escapes() {
        for s in ["%", "%4", "%zz", "a%", "%%41", "%C3%A9", "%FF"] {
            let _ = percent_decode(s);
        }
        assert_eq!(percent_decode("pass%77ord"), "password");
        assert_eq!(percent_decode("%41%"), "A%");
    }

    proptest::proptest! {
        /// Any URL is shown without its password, however the password and the secret-like
        /// parameter are spelled, and no input makes the redaction panic.
        #[test]
        fn no_url_shows_its_secrets(
            junk in "\\PC{0,60}",
            password in "[A-Za-z0-9!$%^~_.-]{3,20}",
            name in "(password|PassWord|pass%77ord|api_key|token|sslpassword)",
            secret in "S3[A-Za-z0-9]{6,18}",
        ) {
            let _ = redact_url(&junk);
            let _ = scrub_url_secrets(&junk, &junk);
            let url = format!("postgres://user:{password}@db:5432/x?sslmode=require&{name}={secret}");
            let shown = redact_url(&url);
            proptest::prop_assert!(!shown.contains(&format!(":{password}@")), "{}", shown);
            proptest::prop_assert!(!shown.contains(&secret), "{}", shown);
            let message = format!("cannot connect to {url}: password {password} and {secret} refused");
            let clean = scrub_url_secrets(&message, &url);
            proptest::prop_assert!(!clean.contains(&secret), "{}", clean);
        }
    }
}
