//! Values from the RPC node, validated before use: the node is not trusted.
//!
//! Every number, hash and address the node sends goes through a strict parser here before anything
//! uses it; no allocation is ever sized by a number from the node. A value that does not pass is a
//! `BadResponse` naming the endpoint's host (never its URL) and the field, which the glue reports as
//! SQLSTATE 08P01 (protocol violation), writes nothing for, and `retry::execute` counts as a failure
//! of that endpoint (the next endpoint is tried).

use alloy_primitives::{Address, B256};
use serde_json::Value;
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use super::error::{RpcError, RpcErrorKind};

/// The highest block number accepted from the node: 2^40 (1,099,511,627,776).
///
/// Far beyond any real chain (Ethereum mainnet, at a block per 12 s, reaches 2^40 in about
/// 420,000 years; even a chain with a block per millisecond needs 35 years), and still far below
/// `i64::MAX` (2^63 - 1), so every accepted block fits a `bigint`, and sums like `head + distance`
/// or `checkpoint + max_blocks` cannot overflow. A head or any other block number above it is
/// refused (08P01): a node answering `0x7fffffffffffffff` is broken or hostile, and planning work
/// up to it (or stamping rows with it) would make the indexer unusable.
pub const MAX_PLAUSIBLE_BLOCK: u64 = 1 << 40;

/// How long a head answered by `eth_blockNumber` is trusted for the block-ahead check before the
/// node is asked again: a single absurd (but plausible) head cannot disable the check for longer.
pub const HEAD_TRUST: Duration = Duration::from_secs(60);

/// A short, bounded rendering of a value from the node for error messages (never the whole value:
/// an answer may be megabytes).
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let mut out: String = s.chars().take(40).collect();
            if s.chars().nth(40).is_some() {
                out.push('…');
            }
            format!("{out:?}")
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

/// A JSON-RPC quantity: a JSON string `0x` followed by 1 to 16 hex digits (either case), nothing
/// else, with a value that fits a `bigint` (at most `i64::MAX`). Refused: JSON numbers, null,
/// negative values, a missing or `0X` prefix, non-hex digits, more than 16 digits (e.g. 2^256-1),
/// values above `i64::MAX` (e.g. 2^64-1). The error says why, without naming the field.
pub fn quantity(v: &Value) -> Result<u64, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("is not a hex quantity string: {}", show(v)))?;
    let digits = s
        .strip_prefix("0x")
        .filter(|d| (1..=16).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "is not a hex quantity (0x and 1 to 16 hex digits): {}",
                show(v)
            )
        })?;
    let n = u64::from_str_radix(digits, 16)
        .map_err(|_| format!("is not a hex quantity: {}", show(v)))?;
    if n > i64::MAX as u64 {
        return Err(format!("{s} is above the largest bigint"));
    }
    Ok(n)
}

/// A block number: a strict `quantity` at most `MAX_PLAUSIBLE_BLOCK`.
pub fn block_number(v: &Value) -> Result<u64, String> {
    let n = quantity(v)?;
    check_block(n)?;
    Ok(n)
}

/// Refuses a block number above `MAX_PLAUSIBLE_BLOCK`.
pub fn check_block(n: u64) -> Result<(), String> {
    if n > MAX_PLAUSIBLE_BLOCK {
        return Err(format!(
            "block {n} is above the plausible maximum {MAX_PLAUSIBLE_BLOCK} (2^40): refused"
        ));
    }
    Ok(())
}

/// Exactly `0x` followed by `2 * N` hex digits (either case), decoded.
fn fixed_hex<const N: usize>(v: &Value) -> Option<[u8; N]> {
    let digits = v.as_str()?.strip_prefix("0x")?;
    if digits.len() != 2 * N || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    alloy_primitives::hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// A 32-byte hash: exactly `0x` and 64 hex digits. (alloy's `B256::from_str` also accepts the
/// digits without `0x`; this does not.)
pub fn hash32(v: &Value) -> Result<B256, String> {
    fixed_hex::<32>(v).map(B256::from).ok_or_else(|| {
        format!(
            "is not 32 bytes written as 0x and 64 hex digits: {}",
            show(v)
        )
    })
}

/// An address: exactly `0x` and 40 hex digits (any case; the checksum is not checked).
pub fn address(v: &Value) -> Result<Address, String> {
    fixed_hex::<20>(v)
        .map(Address::from)
        .ok_or_else(|| format!("is not an address (0x and 40 hex digits): {}", show(v)))
}

/// The `BadResponse` of `ep` for `field`: "`field` `why`".
pub fn bad_field(ep: &Endpoint, field: &str, why: impl std::fmt::Display) -> RpcError {
    RpcError::new(ep, RpcErrorKind::BadResponse(format!("{field} {why}")))
}

/// `v` (the value of `field`) as a strict quantity, or a `BadResponse` naming the host and field.
pub fn field_quantity(ep: &Endpoint, v: Option<&Value>, field: &str) -> Result<u64, RpcError> {
    quantity(v.unwrap_or(&Value::Null)).map_err(|e| bad_field(ep, field, e))
}

/// `v` (the value of `field`) as a block number, or a `BadResponse` naming the host and field.
pub fn field_block(ep: &Endpoint, v: Option<&Value>, field: &str) -> Result<u64, RpcError> {
    block_number(v.unwrap_or(&Value::Null)).map_err(|e| bad_field(ep, field, e))
}

/// `v` (the value of `field`) as a 32-byte hash, or a `BadResponse` naming the host and field.
pub fn field_hash(ep: &Endpoint, v: Option<&Value>, field: &str) -> Result<B256, RpcError> {
    hash32(v.unwrap_or(&Value::Null)).map_err(|e| bad_field(ep, field, e))
}

/// The `result` of `eth_blockNumber`: a block number (at most `MAX_PLAUSIBLE_BLOCK`).
pub fn parse_head(ep: &Endpoint, v: &Value) -> Result<u64, RpcError> {
    field_block(ep, Some(v), "eth_blockNumber result")
}

/// The `result` of a call answering a quantity (`eth_chainId`, …).
pub fn parse_quantity(ep: &Endpoint, v: &Value) -> Result<u64, RpcError> {
    field_quantity(ep, Some(v), "result")
}

/// The latest validated head and when it was seen, trusted for `HEAD_TRUST` only (it is replaced by
/// every new answer, lower or higher: it never only rises).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeenHead(Option<(u64, Instant)>);

impl SeenHead {
    /// No head seen yet.
    pub const NONE: SeenHead = SeenHead(None);

    /// Remembers `head` as seen at `at`.
    pub fn record(&mut self, head: u64, at: Instant) {
        self.0 = Some((head, at));
    }

    /// The head, while it is younger than `HEAD_TRUST` at `now`; None when there is none or it is
    /// too old (ask the node again).
    pub fn fresh(&self, now: Instant) -> Option<u64> {
        self.0
            .filter(|(_, at)| now.saturating_duration_since(*at) < HEAD_TRUST)
            .map(|(h, _)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ep() -> Endpoint {
        Endpoint::parse("https://node.example:8545/v3/SECRETKEY").unwrap()
    }

    #[test]
    fn quantities_are_strict() {
        assert_eq!(quantity(&json!("0x0")), Ok(0));
        assert_eq!(quantity(&json!("0x1b4")), Ok(436));
        assert_eq!(quantity(&json!("0xABCdef")), Ok(0xabcdef));
        assert_eq!(quantity(&json!("0x0000000000000010")), Ok(16));
        assert_eq!(quantity(&json!("0x7fffffffffffffff")), Ok(i64::MAX as u64));
        for bad in [
            json!(16),
            json!(16.0),
            json!(-1),
            json!(null),
            json!(true),
            json!([]),
            json!({}),
            json!(""),
            json!("0x"),
            json!("10"),
            json!("0X10"),
            json!("-0x1"),
            json!("0x-1"),
            json!("0x+1"),
            json!(" 0x1"),
            json!("0x1 "),
            json!("0xg"),
            json!("0x1_0"),
            json!("0xffffffffffffffff"),
            json!("0x8000000000000000"),
            json!("0x00000000000000001"),
            json!(format!("0x{}", "f".repeat(64))),
        ] {
            assert!(quantity(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn heads_above_the_plausible_maximum_are_refused_naming_host_and_field() {
        assert_eq!(parse_head(&ep(), &json!("0x10000000000")), Ok(1 << 40));
        for bad in [
            json!("0x10000000001"),
            json!("0x7fffffffffffffff"),
            json!("0xffffffffffffffff"),
            json!(format!("0x{}", "f".repeat(64))),
            json!(12),
            json!(null),
        ] {
            let e = parse_head(&ep(), &bad).unwrap_err();
            assert!(matches!(e.kind, RpcErrorKind::BadResponse(_)), "{bad}");
            assert_eq!(e.sqlstate(), "08P01");
            let msg = e.to_string();
            assert!(
                msg.contains("node.example:8545") && msg.contains("eth_blockNumber result"),
                "{msg}"
            );
            assert!(!msg.contains("SECRETKEY"), "{msg}");
        }
        let e = parse_head(&ep(), &json!("0x7fffffffffffffff")).unwrap_err();
        assert!(e.to_string().contains("plausible maximum"), "{e}");
    }

    #[test]
    fn messages_never_quote_a_whole_answer() {
        let long = format!("0x{}", "a".repeat(100_000));
        let e = quantity(&json!(long)).unwrap_err();
        assert!(e.len() < 200, "{}", e.len());
        let e = hash32(&json!(vec![1; 10_000])).unwrap_err();
        assert!(e.contains("an array") && e.len() < 200, "{e}");
    }

    #[test]
    fn hashes_and_addresses_are_strict() {
        let h = format!("0x{}", "Ab".repeat(32));
        assert_eq!(hash32(&json!(h)).unwrap(), B256::repeat_byte(0xab));
        // alloy accepts the digits without 0x; we do not
        assert!("ab".repeat(32).parse::<B256>().is_ok());
        for bad in [
            json!("ab".repeat(32)),
            json!(format!("0X{}", "ab".repeat(32))),
            json!(format!("0x{}", "ab".repeat(31))),
            json!(format!("0x{}", "ab".repeat(33))),
            json!(format!("0x{}a", "ab".repeat(31))),
            json!(format!("0x{}zz", "ab".repeat(31))),
            json!("0x12"),
            json!(null),
            json!(5),
        ] {
            assert!(hash32(&bad).is_err(), "{bad}");
        }
        let a = "0x5A52E96BAcdaBb82fd05763E25335261B270Efcb";
        assert_eq!(
            format!("{:#x}", address(&json!(a)).unwrap()),
            a.to_ascii_lowercase()
        );
        assert!(address(&json!(&a[2..])).is_err());
        assert!(address(&json!(&a[..40])).is_err());
        assert!(address(&json!(format!("{a}00"))).is_err());
    }

    #[test]
    fn a_seen_head_is_trusted_for_a_short_time_only() {
        let t = Instant::now();
        let mut s = SeenHead::default();
        assert_eq!(s.fresh(t), None);
        s.record(1_000_000, t);
        assert_eq!(s.fresh(t + Duration::from_secs(59)), Some(1_000_000));
        assert_eq!(s.fresh(t + HEAD_TRUST), None);
        // replaced, not maximised: a lower head after an absurd one is what counts
        s.record(10, t + Duration::from_secs(1));
        assert_eq!(s.fresh(t + Duration::from_secs(2)), Some(10));
    }

    #[test]
    fn the_bound_is_far_below_bigint() {
        const { assert!(MAX_PLAUSIBLE_BLOCK < (i64::MAX as u64) >> 20) };
        assert!(check_block(MAX_PLAUSIBLE_BLOCK).is_ok());
        assert!(check_block(MAX_PLAUSIBLE_BLOCK + 1).is_err());
    }

    proptest! {
        #[test]
        fn quantity_round_trips_every_bigint(n in 0u64..=i64::MAX as u64, upper in any::<bool>()) {
            let s = if upper { format!("0x{:X}", n) } else { format!("0x{:x}", n) };
            prop_assert_eq!(quantity(&json!(s)), Ok(n));
        }

        #[test]
        fn quantity_refuses_everything_above_bigint(n in (i64::MAX as u64 + 1)..=u64::MAX) {
            let hex = format!("{:#x}", n);
            prop_assert!(quantity(&json!(hex)).is_err());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,80}") {
            let v = json!(s);
            let _ = quantity(&v);
            let _ = hash32(&v);
            let _ = address(&v);
            if let Ok(n) = block_number(&v) {
                prop_assert!(n <= MAX_PLAUSIBLE_BLOCK);
                prop_assert!(s.starts_with("0x") && s.len() <= 18);
            }
        }
    }
}
