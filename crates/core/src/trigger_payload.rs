//! Pure builders for what the triggers write: notification `group_id`s and JSON documents.
//!
//! No pgrx types here, so everything is testable with plain `cargo test`. The JSON text is produced
//! byte-for-byte the way PostgreSQL 15's `json_build_object(...)::text` prints it (`{"k" : v, "k2" : v2}`,
//! `escape_json` rules), because the `pg_notify('challenge_disbursed', …)` payload is compared
//! verbatim by listeners and by the differential test. The same text is also used for
//! `notification.data` (cast to jsonb there, so only the values matter).
//!
//! SQL NULL semantics are kept: `||` with a NULL operand gives NULL (so `group_id` is `None` when any
//! part is), and a NULL value inside `json_build_object` is the JSON literal `null`.

use std::fmt::Write as _;

/// The notification kinds the three triggers write (the `notification.type` values).
pub const CLAIMABLE_REWARD: &str = "claimable_reward";
/// Written by `on_user_challenge` (cooldown 0/NULL) and by both disbursement triggers.
pub const CHALLENGE_REWARD: &str = "challenge_reward";
/// Written by `on_user_challenge` for challenges with a cooldown.
pub const REWARD_IN_COOLDOWN: &str = "reward_in_cooldown";

/// One value inside a JSON object, as `json_build_object` renders SQL values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonValue<'a> {
    /// A SQL text/varchar value: a JSON string.
    Str(&'a str),
    /// A SQL integer/bigint value: a JSON number.
    Int(i64),
    /// SQL NULL.
    Null,
}

impl<'a> JsonValue<'a> {
    /// A nullable string.
    pub fn opt_str(value: Option<&'a str>) -> Self {
        value.map_or(JsonValue::Null, JsonValue::Str)
    }

    /// A nullable integer.
    pub fn opt_int<I: Into<i64>>(value: Option<I>) -> Self {
        value.map_or(JsonValue::Null, |v| JsonValue::Int(v.into()))
    }
}

/// Appends `s` as a JSON string literal exactly like PostgreSQL's `escape_json()`:
/// `\b \f \n \r \t \" \\` get short escapes, other bytes below 0x20 become `\u00XX` (lowercase hex),
/// everything else (including non-ASCII and DEL) is copied as is.
pub fn escape_json_into(buf: &mut String, s: &str) {
    buf.push('"');
    for ch in s.chars() {
        match ch {
            '\u{08}' => buf.push_str("\\b"),
            '\u{0c}' => buf.push_str("\\f"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// Renders `pairs` as `json_build_object(k1, v1, k2, v2, …)::text` does.
pub fn json_object(pairs: &[(&str, JsonValue<'_>)]) -> String {
    let mut buf = String::with_capacity(16 + pairs.len() * 24);
    buf.push('{');
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            buf.push_str(", ");
        }
        escape_json_into(&mut buf, key);
        buf.push_str(" : ");
        match value {
            JsonValue::Str(s) => escape_json_into(&mut buf, s),
            JsonValue::Int(n) => {
                let _ = write!(buf, "{n}");
            }
            JsonValue::Null => buf.push_str("null"),
        }
    }
    buf.push('}');
    buf
}

/// `'<kind>:' || user_id || ':challenge:' || challenge_id || ':specifier:' || specifier`
/// (NULL when any operand is NULL, as with SQL `||`).
pub fn group_id(
    kind: &str,
    user_id: Option<i32>,
    challenge_id: Option<&str>,
    specifier: Option<&str>,
) -> Option<String> {
    let (user_id, challenge_id, specifier) = (user_id?, challenge_id?, specifier?);
    Some(format!(
        "{kind}:{user_id}:challenge:{challenge_id}:specifier:{specifier}"
    ))
}

/// `amount::text || '00000000'` — the challenge_reward amount of `on_user_challenge`
/// (the integer amount scaled by 10^8, as a string; NULL stays NULL).
pub fn scaled_amount_text(amount: Option<i32>) -> Option<String> {
    amount.map(|a| format!("{a}00000000"))
}

/// `data` of the `claimable_reward` and `reward_in_cooldown` notifications of `on_user_challenge`:
/// `{specifier, challenge_id, amount}` with amount as a JSON number.
pub fn user_challenge_data(
    specifier: Option<&str>,
    challenge_id: Option<&str>,
    amount: Option<i32>,
) -> String {
    json_object(&[
        ("specifier", JsonValue::opt_str(specifier)),
        ("challenge_id", JsonValue::opt_str(challenge_id)),
        ("amount", JsonValue::opt_int(amount)),
    ])
}

/// `data` of the `challenge_reward` notification of `on_user_challenge`: amount as the scaled string,
/// plus `listen_streak` (`coalesce(streak, 0)`) when the challenge is `e`.
pub fn user_challenge_reward_data(
    specifier: Option<&str>,
    challenge_id: Option<&str>,
    amount: Option<i32>,
    listen_streak: Option<Option<i32>>,
) -> String {
    let scaled = scaled_amount_text(amount);
    let mut pairs = vec![
        ("specifier", JsonValue::opt_str(specifier)),
        ("challenge_id", JsonValue::opt_str(challenge_id)),
        ("amount", JsonValue::opt_str(scaled.as_deref())),
    ];
    if let Some(streak) = listen_streak {
        pairs.push((
            "listen_streak",
            JsonValue::Int(i64::from(streak.unwrap_or(0))),
        ));
    }
    json_object(&pairs)
}

/// `data` of the `challenge_reward` notification of the disbursement triggers. The legacy table's
/// amount is varchar (a JSON string), the sol table's is bigint (a JSON number): the caller picks.
pub fn disbursement_data(
    specifier: Option<&str>,
    challenge_id: Option<&str>,
    amount: JsonValue<'_>,
) -> String {
    json_object(&[
        ("specifier", JsonValue::opt_str(specifier)),
        ("challenge_id", JsonValue::opt_str(challenge_id)),
        ("amount", amount),
    ])
}

/// The `pg_notify('challenge_disbursed', …)` payload of `handle_sol_reward_disbursement`.
pub fn challenge_disbursed_payload(
    user_id: i32,
    challenge_id: Option<&str>,
    specifier: Option<&str>,
    amount: Option<i64>,
    signature: Option<&str>,
    slot: Option<i64>,
) -> String {
    json_object(&[
        ("user_id", JsonValue::Int(i64::from(user_id))),
        ("challenge_id", JsonValue::opt_str(challenge_id)),
        ("specifier", JsonValue::opt_str(specifier)),
        ("amount", JsonValue::opt_int(amount)),
        ("signature", JsonValue::opt_str(signature)),
        ("slot", JsonValue::opt_int(slot)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_match_sql_concatenation() {
        assert_eq!(
            group_id(REWARD_IN_COOLDOWN, Some(42), Some("m"), Some("2a")).as_deref(),
            Some("reward_in_cooldown:42:challenge:m:specifier:2a")
        );
        assert_eq!(
            group_id(CHALLENGE_REWARD, Some(-7), Some("rd"), Some("a:b")).as_deref(),
            Some("challenge_reward:-7:challenge:rd:specifier:a:b")
        );
        assert_eq!(group_id(CLAIMABLE_REWARD, None, Some("p"), Some("x")), None);
        assert_eq!(group_id(CLAIMABLE_REWARD, Some(1), None, Some("x")), None);
        assert_eq!(group_id(CLAIMABLE_REWARD, Some(1), Some("p"), None), None);
    }

    #[test]
    fn json_build_object_text_format() {
        // SELECT json_build_object('user_id', 5, 'challenge_id', 'p', 'amount', 10, 'x', NULL)::text
        assert_eq!(
            json_object(&[
                ("user_id", JsonValue::Int(5)),
                ("challenge_id", JsonValue::Str("p")),
                ("amount", JsonValue::Int(10)),
                ("x", JsonValue::Null),
            ]),
            r#"{"user_id" : 5, "challenge_id" : "p", "amount" : 10, "x" : null}"#
        );
        assert_eq!(json_object(&[]), "{}");
    }

    #[test]
    fn escaping_matches_postgres_escape_json() {
        let mut s = String::new();
        escape_json_into(
            &mut s,
            "a\"b\\c\nd\re\tf\u{08}g\u{0c}h\u{01}i\u{1f}j\u{7f}kü€😀/",
        );
        assert_eq!(
            s,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u001fj\u{7f}kü€😀/\""
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(scaled_amount_text(Some(5)).as_deref(), Some("500000000"));
        assert_eq!(scaled_amount_text(Some(0)).as_deref(), Some("000000000"));
        assert_eq!(scaled_amount_text(Some(-3)).as_deref(), Some("-300000000"));
        assert_eq!(scaled_amount_text(None), None);
        assert_eq!(
            user_challenge_reward_data(Some("s"), Some("e"), Some(2), Some(None)),
            r#"{"specifier" : "s", "challenge_id" : "e", "amount" : "200000000", "listen_streak" : 0}"#
        );
        assert_eq!(
            user_challenge_reward_data(Some("s"), Some("p"), Some(2), None),
            r#"{"specifier" : "s", "challenge_id" : "p", "amount" : "200000000"}"#
        );
        assert_eq!(
            user_challenge_data(Some("s"), Some("p"), Some(i32::MIN)),
            r#"{"specifier" : "s", "challenge_id" : "p", "amount" : -2147483648}"#
        );
    }

    #[test]
    fn notify_payload_shape() {
        assert_eq!(
            challenge_disbursed_payload(
                7,
                Some("p"),
                Some("7"),
                Some(i64::MAX),
                Some("sig"),
                Some(99)
            ),
            r#"{"user_id" : 7, "challenge_id" : "p", "specifier" : "7", "amount" : 9223372036854775807, "signature" : "sig", "slot" : 99}"#
        );
    }
}
