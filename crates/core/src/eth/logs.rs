//! AUDIO `Transfer` logs: the `eth_getLogs` request, its answer, the candidates it yields (the
//! seed's `processLogs`), block ranges and their bisection, and block headers for reorg checks.

use alloy_primitives::{keccak256, Address, B256};
use serde_json::{json, Value};
use std::collections::HashMap;

use super::rpc::{Endpoint, RpcError, RpcErrorKind};

/// keccak256("Transfer(address,address,uint256)").
pub fn transfer_topic() -> B256 {
    keccak256(b"Transfer(address,address,uint256)")
}

/// The JSON-RPC body of `eth_getLogs` for `address` and topic0 over `[from, to]`.
pub fn get_logs_body(id: u64, address: &str, topic0: &B256, from: u64, to: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "eth_getLogs", "params": [{
        "address": address,
        "topics": [format!("{topic0:#x}")],
        "fromBlock": format!("{from:#x}"),
        "toBlock": format!("{to:#x}"),
    }]})
    .to_string()
}

/// The part of a log the indexer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub block: u64,
    pub topics: Vec<B256>,
    /// `removed: true` (a log of a block that was reorganised away, as some nodes report it).
    pub removed: bool,
}

fn bad(ep: &Endpoint, d: String) -> RpcError {
    RpcError::new(ep, RpcErrorKind::BadResponse(d))
}

fn hex_u64(ep: &Endpoint, v: Option<&Value>, what: &str) -> Result<u64, RpcError> {
    let s = v.and_then(Value::as_str).unwrap_or_default();
    s.strip_prefix("0x")
        .filter(|d| !d.is_empty() && d.len() <= 16)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or_else(|| bad(ep, format!("{what} is not a hex quantity: {:.40}", s)))
}

fn parse_b256(ep: &Endpoint, v: &Value, what: &str) -> Result<B256, RpcError> {
    v.as_str()
        .and_then(|s| s.parse::<B256>().ok())
        .ok_or_else(|| {
            bad(
                ep,
                format!("{what} is not 32 bytes of hex: {:.80}", v.to_string()),
            )
        })
}

/// Parses the `result` of `eth_getLogs`.
pub fn parse_logs(ep: &Endpoint, v: &Value) -> Result<Vec<Log>, RpcError> {
    let items = v.as_array().ok_or_else(|| {
        bad(
            ep,
            format!("eth_getLogs result is not an array: {:.60}", v.to_string()),
        )
    })?;
    items
        .iter()
        .map(|item| {
            let topics = item
                .get("topics")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(ep, "log without topics".into()))?
                .iter()
                .map(|t| parse_b256(ep, t, "topic"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Log {
                block: hex_u64(ep, item.get("blockNumber"), "log blockNumber")?,
                topics,
                removed: item
                    .get("removed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        })
        .collect()
}

/// The seed's `processLogs`: `from` (topic 1) and `to` (topic 2) of every log with at least three
/// topics, each with the highest block it was seen in; first-seen order. Removed logs are ignored.
pub fn candidates(logs: &[Log]) -> Vec<(Address, u64)> {
    let mut order: Vec<Address> = Vec::new();
    let mut best: HashMap<Address, u64> = HashMap::new();
    for log in logs.iter().filter(|l| !l.removed && l.topics.len() >= 3) {
        for topic in &log.topics[1..3] {
            let a = Address::from_word(*topic);
            match best.get_mut(&a) {
                Some(b) => *b = (*b).max(log.block),
                None => {
                    best.insert(a, log.block);
                    order.push(a);
                }
            }
        }
    }
    order.into_iter().map(|a| (a, best[&a])).collect()
}

/// `[from, to]` cut into consecutive ranges of at most `size` blocks (the seed's backfill chunks).
pub fn plan_ranges(from: u64, to: u64, size: u64) -> Vec<(u64, u64)> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut a = from;
    while a <= to {
        let b = a.saturating_add(size - 1).min(to);
        out.push((a, b));
        if b == u64::MAX {
            break;
        }
        a = b + 1;
    }
    out
}

/// The two halves of a refused range; `None` for a single block (it cannot be split).
pub fn bisect(from: u64, to: u64) -> Option<((u64, u64), (u64, u64))> {
    (to > from).then(|| {
        let mid = from + (to - from) / 2;
        ((from, mid), (mid + 1, to))
    })
}

/// What the reorg check needs of a block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub number: u64,
    pub hash: B256,
    pub timestamp: u64,
}

/// The JSON-RPC body of `eth_getBlockByNumber(number, false)`.
pub fn get_block_body(id: u64, number: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "eth_getBlockByNumber",
           "params": [format!("{number:#x}"), false]})
    .to_string()
}

/// Parses the `result` of `eth_getBlockByNumber`; `null` (no such block yet) is an error.
pub fn parse_header(ep: &Endpoint, v: &Value) -> Result<Header, RpcError> {
    if v.is_null() {
        return Err(bad(
            ep,
            "eth_getBlockByNumber answered null (no such block)".into(),
        ));
    }
    Ok(Header {
        number: hex_u64(ep, v.get("number"), "block number")?,
        hash: parse_b256(ep, v.get("hash").unwrap_or(&Value::Null), "block hash")?,
        timestamp: hex_u64(ep, v.get("timestamp"), "block timestamp")?,
    })
}

/// Where a reorg left the chain: the newest stored `(block, hash)` (newest first) that the node
/// still agrees with, looked up through `node_hash`; `None` when none within the list agrees.
pub fn common_ancestor<E>(
    stored_newest_first: &[(u64, B256)],
    mut node_hash: impl FnMut(u64) -> Result<B256, E>,
) -> Result<Option<u64>, E> {
    for (block, hash) in stored_newest_first {
        if node_hash(*block)? == *hash {
            return Ok(Some(*block));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep() -> Endpoint {
        Endpoint::parse("http://127.0.0.1:8545").unwrap()
    }

    fn word(a: &str) -> String {
        format!("0x000000000000000000000000{}", a.trim_start_matches("0x"))
    }

    #[test]
    fn topic_is_the_erc20_transfer_event() {
        assert_eq!(
            format!("{:#x}", transfer_topic()),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
    }

    #[test]
    fn request_body_names_range_address_and_topic() {
        let b: Value =
            serde_json::from_str(&get_logs_body(7, "0xabc", &transfer_topic(), 16, 255)).unwrap();
        assert_eq!(b["method"], "eth_getLogs");
        assert_eq!(b["params"][0]["fromBlock"], "0x10");
        assert_eq!(b["params"][0]["toBlock"], "0xff");
        assert_eq!(b["params"][0]["address"], "0xabc");
        assert_eq!(b["params"][0]["topics"][0].as_str().unwrap().len(), 66);
    }

    #[test]
    fn candidates_take_the_highest_block_and_skip_short_logs() {
        let a = "1111111111111111111111111111111111111111";
        let b = "2222222222222222222222222222222222222222";
        let c = "3333333333333333333333333333333333333333";
        let t = format!("{:#x}", transfer_topic());
        let v = json!([
            {"blockNumber": "0x5", "topics": [t, word(a), word(b)]},
            {"blockNumber": "0x9", "topics": [t, word(b), word(c)]},
            {"blockNumber": "0x7", "topics": [t, word(c), word(a)]},
            {"blockNumber": "0xa", "topics": [t, word(a)]},
            {"blockNumber": "0xb", "topics": [t, word(a), word(b)], "removed": true},
        ]);
        let logs = parse_logs(&ep(), &v).unwrap();
        let got: Vec<(String, u64)> = candidates(&logs)
            .into_iter()
            .map(|(x, n)| (format!("{x:#x}"), n))
            .collect();
        assert_eq!(
            got,
            vec![
                (format!("0x{a}"), 7),
                (format!("0x{b}"), 9),
                (format!("0x{c}"), 9)
            ]
        );
    }

    #[test]
    fn malformed_answers_are_bad_responses() {
        for v in [
            json!({"x": 1}),
            json!([{"blockNumber": "0x1"}]),
            json!([{"blockNumber": "12", "topics": []}]),
            json!([{"blockNumber": "0x1", "topics": ["0x12"]}]),
        ] {
            let e = parse_logs(&ep(), &v).unwrap_err();
            assert!(matches!(e.kind, RpcErrorKind::BadResponse(_)), "{v}");
        }
        assert!(parse_header(&ep(), &Value::Null).is_err());
    }

    #[test]
    fn headers_parse() {
        let h = parse_header(
            &ep(),
            &json!({"number": "0x10", "timestamp": "0x5", "hash": format!("0x{}", "ab".repeat(32))}),
        )
        .unwrap();
        assert_eq!((h.number, h.timestamp), (16, 5));
    }

    #[test]
    fn ranges_and_bisection() {
        assert_eq!(
            plan_ranges(1, 25_000, 9000),
            vec![(1, 9000), (9001, 18_000), (18_001, 25_000)]
        );
        assert_eq!(plan_ranges(5, 4, 10), vec![]);
        assert_eq!(plan_ranges(3, 3, 10), vec![(3, 3)]);
        assert_eq!(bisect(1, 9000), Some(((1, 4500), (4501, 9000))));
        assert_eq!(bisect(7, 8), Some(((7, 7), (8, 8))));
        assert_eq!(bisect(7, 7), None);
    }

    #[test]
    fn ancestor_is_the_newest_agreeing_block() {
        let h = |n: u8| B256::repeat_byte(n);
        let stored = [(30u64, h(30)), (20, h(20)), (10, h(10))];
        let node = |b: u64| -> Result<B256, ()> { Ok(if b >= 25 { h(99) } else { h(b as u8) }) };
        assert_eq!(common_ancestor(&stored, node), Ok(Some(20)));
        let none = |_b: u64| -> Result<B256, ()> { Ok(h(1)) };
        assert_eq!(common_ancestor(&stored, none), Ok(None));
    }

    proptest! {
        #[test]
        fn ranges_cover_exactly(from in 0u64..1000, len in 0u64..50_000, size in 1u64..10_000) {
            let to = from + len;
            let r = plan_ranges(from, to, size);
            prop_assert_eq!(r[0].0, from);
            prop_assert_eq!(r.last().unwrap().1, to);
            for w in r.windows(2) { prop_assert_eq!(w[0].1 + 1, w[1].0); }
            for (a, b) in &r { prop_assert!(b - a < size); }
        }

        #[test]
        fn bisection_terminates_and_covers(from in 0u64..1000, len in 0u64..5000) {
            let to = from + len;
            let mut stack = vec![(from, to)];
            let mut singles = 0u64;
            while let Some((a, b)) = stack.pop() {
                match bisect(a, b) {
                    Some((l, r)) => { prop_assert_eq!(l.1 + 1, r.0); stack.push(r); stack.push(l); }
                    None => singles += 1,
                }
            }
            prop_assert_eq!(singles, len + 1);
        }
    }
}
