//! `eth_getLogs`: the request (one per range, every watched contract and event at once), its
//! answer checked against what was asked, block ranges and their bisection, and block headers for
//! reorg checks. Which logs change which wallets is `events`.

use alloy_primitives::{Address, B256};
use serde_json::{json, Value};

use super::endpoint::Endpoint;
use super::error::{RpcError, RpcErrorKind};
use super::untrusted::{self, bad_field, field_block, field_hash, field_quantity, show};

/// The JSON-RPC body of `eth_getLogs` for `q`: an address list and a list of topic0 alternatives,
/// so one request covers every contract and event of a range.
pub fn get_logs_body(id: u64, q: &LogQuery) -> String {
    let addresses: Vec<String> = q.addresses.iter().map(|a| format!("{a:#x}")).collect();
    let topics: Vec<String> = q.topics0.iter().map(|t| format!("{t:#x}")).collect();
    json!({"jsonrpc": "2.0", "id": id, "method": "eth_getLogs", "params": [{
        "address": addresses,
        "topics": [topics],
        "fromBlock": format!("{:#x}", q.from),
        "toBlock": format!("{:#x}", q.to),
    }]})
    .to_string()
}

/// The part of a log the indexer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// The contract that emitted it (one of the query's addresses).
    pub address: Address,
    pub block: u64,
    pub topics: Vec<B256>,
    /// `removed: true` (a log of a block that was reorganised away, as some nodes report it).
    /// Always false from `parse_logs`, which refuses such answers.
    pub removed: bool,
}

fn bad(ep: &Endpoint, d: String) -> RpcError {
    RpcError::new(ep, RpcErrorKind::BadResponse(d))
}

/// What an `eth_getLogs` request asked for: every log of the answer must match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub from: u64,
    pub to: u64,
    /// The emitting contracts asked for (any of them).
    pub addresses: Vec<Address>,
    /// The topic0 values asked for (any of them).
    pub topics0: Vec<B256>,
}

/// A log has at most four topics (LOG0..LOG4).
const MAX_TOPICS: usize = 4;

/// Parses the `result` of `eth_getLogs` asked with `q`. Every log must be an object with
/// - `blockNumber` a strict block number (`untrusted::block_number`) inside `[q.from, q.to]`;
/// - `address` exactly `0x` + 40 hex digits, one of `q.addresses` (any case);
/// - `topics` an array of 1 to 4 hashes (`0x` + 64 hex digits each), `topics[0]` one of `q.topics0`;
/// - `removed` absent, or `false`.
///
/// `removed: true` is refused: `eth_getLogs` over a block range returns the logs of the canonical
/// chain only (removed logs belong to filter and subscription updates), so such an answer comes
/// from a node in the middle of a reorg or a broken one. Refusing it (rather than ignoring the
/// log) makes it a failure of that endpoint: the next endpoint is tried, and the step is redone on
/// the next tick otherwise — nothing is written from that answer.
///
/// Anything else is a `BadResponse` naming the host and the field (`log[i].blockNumber`, …).
pub fn parse_logs(ep: &Endpoint, v: &Value, q: &LogQuery) -> Result<Vec<Log>, RpcError> {
    let items = v.as_array().ok_or_else(|| {
        bad_field(
            ep,
            "eth_getLogs result",
            format!("is not an array: {}", show(v)),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_log(ep, i, item, q))
        .collect()
}

fn parse_log(ep: &Endpoint, i: usize, item: &Value, q: &LogQuery) -> Result<Log, RpcError> {
    let field = |name: &str| format!("eth_getLogs log[{i}].{name}");
    if !item.is_object() {
        return Err(bad_field(
            ep,
            &format!("eth_getLogs log[{i}]"),
            format!("is not an object: {}", show(item)),
        ));
    }
    match item.get("removed") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(bad_field(
                ep,
                &field("removed"),
                "is true: eth_getLogs over a block range must not return removed logs (a node mid-reorg?): refused",
            ))
        }
        Some(other) => {
            return Err(bad_field(
                ep,
                &field("removed"),
                format!("is not a boolean: {}", show(other)),
            ))
        }
    }
    let block = field_block(ep, item.get("blockNumber"), &field("blockNumber"))?;
    if block < q.from || block > q.to {
        return Err(bad_field(
            ep,
            &field("blockNumber"),
            format!("{block} is outside the asked range [{}, {}]", q.from, q.to),
        ));
    }
    let address = untrusted::address(item.get("address").unwrap_or(&Value::Null))
        .map_err(|e| bad_field(ep, &field("address"), e))?;
    if !q.addresses.contains(&address) {
        return Err(bad_field(
            ep,
            &field("address"),
            format!("{address:#x} is not an asked address"),
        ));
    }
    let raw_topics = item
        .get("topics")
        .and_then(Value::as_array)
        .filter(|t| (1..=MAX_TOPICS).contains(&t.len()))
        .ok_or_else(|| {
            bad_field(
                ep,
                &field("topics"),
                format!(
                    "is not an array of 1 to {MAX_TOPICS} topics: {}",
                    show(item.get("topics").unwrap_or(&Value::Null))
                ),
            )
        })?;
    let topics = raw_topics
        .iter()
        .enumerate()
        .map(|(j, t)| field_hash(ep, Some(t), &field(&format!("topics[{j}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    if !q.topics0.contains(&topics[0]) {
        return Err(bad_field(
            ep,
            &field("topics[0]"),
            format!("{:#x} is not an asked topic", topics[0]),
        ));
    }
    Ok(Log {
        address,
        block,
        topics,
        removed: false,
    })
}

/// `eth_getLogs` ranges one follow step plans at most. A step covers at most this many ranges of
/// `log_range_blocks` (its refused ranges bisected within it); the next step continues from the
/// checkpoint the last one committed. Bounds the work (and the time without a new head) of a step
/// however far behind the checkpoint is.
pub const MAX_RANGES_PER_STEP: u64 = 10_000;

/// `[from, to]` cut into consecutive ranges of at most `size` blocks (the Go eth-indexer's backfill chunks),
/// planned lazily: nothing is allocated, however wide `[from, to]` is.
pub fn plan_ranges(from: u64, to: u64, size: u64) -> Ranges {
    Ranges {
        next: (from <= to).then_some(from),
        to,
        size: size.max(1),
    }
}

/// The ranges of `plan_ranges`, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    next: Option<u64>,
    to: u64,
    size: u64,
}

impl Iterator for Ranges {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let a = self.next?;
        let b = a.saturating_add(self.size - 1).min(self.to);
        self.next = (b < self.to).then(|| b + 1);
        Some((a, b))
    }
}

/// The last block one follow step covers from `from` towards `to`: at most
/// `MAX_RANGES_PER_STEP` ranges of `size` blocks. `from > to` gives `to` (nothing to do).
pub fn step_end(from: u64, to: u64, size: u64) -> u64 {
    if from > to {
        return to;
    }
    let span = size.max(1).saturating_mul(MAX_RANGES_PER_STEP);
    from.saturating_add(span - 1).min(to)
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

/// Parses the `result` of `eth_getBlockByNumber(expected)`; `null` (no such block yet) is an
/// error. The header must be the one asked for: `number` a strict block number equal to
/// `expected`, `hash` exactly `0x` + 64 hex digits, `timestamp` a strict quantity. Anything else is
/// a `BadResponse` naming the host and the field.
pub fn parse_header(ep: &Endpoint, v: &Value, expected: u64) -> Result<Header, RpcError> {
    if v.is_null() {
        return Err(bad(
            ep,
            format!("eth_getBlockByNumber({expected}) answered null (no such block)"),
        ));
    }
    if !v.is_object() {
        return Err(bad_field(
            ep,
            "eth_getBlockByNumber result",
            format!("is not an object: {}", show(v)),
        ));
    }
    let number = field_block(ep, v.get("number"), "eth_getBlockByNumber result.number")?;
    if number != expected {
        return Err(bad_field(
            ep,
            "eth_getBlockByNumber result.number",
            format!("{number} is not the asked block {expected}"),
        ));
    }
    Ok(Header {
        number,
        hash: field_hash(ep, v.get("hash"), "eth_getBlockByNumber result.hash")?,
        timestamp: field_quantity(
            ep,
            v.get("timestamp"),
            "eth_getBlockByNumber result.timestamp",
        )?,
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
    use crate::eth::events::transfer_topic;
    use proptest::prelude::*;

    fn ep() -> Endpoint {
        Endpoint::parse("http://127.0.0.1:8545").unwrap()
    }

    fn word(a: &str) -> String {
        format!("0x000000000000000000000000{}", a.trim_start_matches("0x"))
    }

    const TOKEN: &str = "0x18aaa7115705e8be94bffebde57af9bfc265b998";
    const STAKING: &str = "0xe6d97b2099f142513be7a2a068be040656ae4591";

    fn query(from: u64, to: u64) -> LogQuery {
        LogQuery {
            from,
            to,
            addresses: vec![TOKEN.parse().unwrap(), STAKING.parse().unwrap()],
            topics0: vec![transfer_topic(), B256::repeat_byte(7)],
        }
    }

    /// A well-formed Transfer log at `block`.
    fn log_at(block: u64) -> Value {
        json!({"address": TOKEN, "blockNumber": format!("{block:#x}"), "removed": false,
               "topics": [format!("{:#x}", transfer_topic()), word(&"11".repeat(20)), word(&"22".repeat(20))]})
    }

    fn bad_field_of(r: Result<impl std::fmt::Debug, RpcError>) -> String {
        let e = r.unwrap_err();
        assert!(matches!(e.kind, RpcErrorKind::BadResponse(_)), "{e:?}");
        assert_eq!(e.sqlstate(), "08P01");
        let msg = e.to_string();
        assert!(msg.contains("127.0.0.1:8545"), "{msg}");
        msg
    }

    #[test]
    fn topic_is_the_erc20_transfer_event() {
        assert_eq!(
            format!("{:#x}", transfer_topic()),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
    }

    #[test]
    fn one_request_names_every_address_and_topic() {
        let b: Value = serde_json::from_str(&get_logs_body(7, &query(16, 255))).unwrap();
        assert_eq!(b["method"], "eth_getLogs");
        let p = &b["params"][0];
        assert_eq!(p["fromBlock"], "0x10");
        assert_eq!(p["toBlock"], "0xff");
        assert_eq!(p["address"], json!([TOKEN, STAKING]));
        // one topic position (topic0) with its alternatives
        assert_eq!(p["topics"].as_array().unwrap().len(), 1);
        assert_eq!(
            p["topics"][0],
            json!([
                format!("{:#x}", transfer_topic()),
                format!("{:#x}", B256::repeat_byte(7))
            ])
        );
    }

    #[test]
    fn logs_of_any_asked_address_and_topic_parse_with_their_emitter() {
        let mut other = log_at(20);
        other["address"] = json!(STAKING.to_ascii_uppercase().replace("0X", "0x"));
        other["topics"][0] = json!(format!("{:#x}", B256::repeat_byte(7)));
        let logs = parse_logs(&ep(), &json!([log_at(16), other]), &query(16, 32)).unwrap();
        assert_eq!(logs[0].address, TOKEN.parse::<Address>().unwrap());
        assert_eq!(logs[1].address, STAKING.parse::<Address>().unwrap());
        assert_eq!(logs[1].topics[0], B256::repeat_byte(7));
        assert_eq!((logs[0].block, logs[1].block), (16, 20));
    }

    #[test]
    fn malformed_answers_are_bad_responses() {
        for v in [
            json!({"x": 1}),
            json!(null),
            json!([{"blockNumber": "0x1"}]),
            json!([{"blockNumber": "12", "topics": []}]),
            json!([{"blockNumber": "0x1", "topics": ["0x12"]}]),
            json!([5]),
        ] {
            let e = parse_logs(&ep(), &v, &query(0, 100)).unwrap_err();
            assert!(matches!(e.kind, RpcErrorKind::BadResponse(_)), "{v}");
        }
        assert!(parse_header(&ep(), &Value::Null, 1).is_err());
    }

    #[test]
    fn logs_must_match_what_was_asked() {
        let q = query(16, 32);
        assert_eq!(
            parse_logs(&ep(), &json!([log_at(16), log_at(32)]), &q)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_logs(&ep(), &json!([]), &q).unwrap(), vec![]);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut l = log_at(20);
            f(&mut l);
            parse_logs(&ep(), &json!([log_at(16), l]), &q)
        };
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "log[1].blockNumber 15 is outside the asked range [16, 32]",
                Box::new(|l| l["blockNumber"] = json!("0xf")),
            ),
            (
                "log[1].blockNumber 33 is outside the asked range [16, 32]",
                Box::new(|l| l["blockNumber"] = json!("0x21")),
            ),
            (
                "log[1].blockNumber",
                Box::new(|l| l["blockNumber"] = json!(20)),
            ),
            (
                "log[1].blockNumber",
                Box::new(|l| l["blockNumber"] = json!("0x7fffffffffffffff")),
            ),
            (
                "log[1].blockNumber",
                Box::new(|l| l["blockNumber"] = json!("0xffffffffffffffff")),
            ),
            (
                "log[1].blockNumber",
                Box::new(|l| l["blockNumber"] = json!(format!("0x{}", "f".repeat(64)))),
            ),
            (
                "log[1].blockNumber",
                Box::new(|l| l["blockNumber"] = json!("-0x14")),
            ),
            (
                "log[1].blockNumber",
                Box::new(|l| {
                    l.as_object_mut().unwrap().remove("blockNumber");
                }),
            ),
            (
                "log[1].address",
                Box::new(|l| l["address"] = json!("0x0000000000000000000000000000000000000001")),
            ),
            (
                "log[1].address",
                Box::new(|l| l["address"] = json!(&TOKEN[2..])),
            ),
            (
                "log[1].address",
                Box::new(|l| {
                    l.as_object_mut().unwrap().remove("address");
                }),
            ),
            (
                "log[1].topics[0]",
                Box::new(|l| l["topics"][0] = json!(format!("0x{}", "00".repeat(32)))),
            ),
            (
                "log[1].topics[0]",
                Box::new(|l| l["topics"][0] = json!(format!("{:x}", transfer_topic()))),
            ),
            (
                "log[1].topics[2]",
                Box::new(|l| l["topics"][2] = json!("0x12")),
            ),
            ("log[1].topics", Box::new(|l| l["topics"] = json!([]))),
            (
                "log[1].topics",
                Box::new(|l| l["topics"] = json!(vec![format!("{:#x}", transfer_topic()); 5])),
            ),
            (
                "log[1].removed is true",
                Box::new(|l| l["removed"] = json!(true)),
            ),
            (
                "log[1].removed is not a boolean",
                Box::new(|l| l["removed"] = json!("yes")),
            ),
        ];
        for (want, f) in cases {
            let msg = bad_field_of(with(&*f));
            assert!(msg.contains(want), "want {want:?} in {msg}");
        }
    }

    #[test]
    fn headers_parse() {
        let v =
            json!({"number": "0x10", "timestamp": "0x5", "hash": format!("0x{}", "ab".repeat(32))});
        let h = parse_header(&ep(), &v, 16).unwrap();
        assert_eq!((h.number, h.timestamp), (16, 5));
        assert_eq!(h.hash, B256::repeat_byte(0xab));
    }

    #[test]
    fn headers_must_be_the_block_asked_for() {
        let hash = format!("0x{}", "ab".repeat(32));
        let h =
            |n: Value, hash: Value, ts: Value| json!({"number": n, "hash": hash, "timestamp": ts});
        let ok = h(json!("0x10"), json!(hash), json!("0x5"));
        let msg = bad_field_of(parse_header(&ep(), &ok, 17));
        assert!(
            msg.contains("result.number 16 is not the asked block 17"),
            "{msg}"
        );
        for (v, field) in [
            (
                h(json!("0x7fffffffffffffff"), json!(hash), json!("0x5")),
                "result.number",
            ),
            (h(json!(16), json!(hash), json!("0x5")), "result.number"),
            (
                h(json!("0x10"), json!("ab".repeat(32)), json!("0x5")),
                "result.hash",
            ),
            (
                h(
                    json!("0x10"),
                    json!(format!("0x{}", "ab".repeat(31))),
                    json!("0x5"),
                ),
                "result.hash",
            ),
            (
                h(
                    json!("0x10"),
                    json!(format!("0x{}", "ab".repeat(33))),
                    json!("0x5"),
                ),
                "result.hash",
            ),
            (h(json!("0x10"), json!(null), json!("0x5")), "result.hash"),
            (h(json!("0x10"), json!(hash), json!(5)), "result.timestamp"),
            (
                h(json!("0x10"), json!(hash), json!("0xffffffffffffffff")),
                "result.timestamp",
            ),
            (
                h(json!("0x10"), json!(hash), json!("5")),
                "result.timestamp",
            ),
            (json!([1]), "eth_getBlockByNumber result"),
        ] {
            let msg = bad_field_of(parse_header(&ep(), &v, 16));
            assert!(msg.contains(field), "want {field:?} in {msg}");
        }
    }

    #[test]
    fn ranges_and_bisection() {
        let plan = |a, b, s| plan_ranges(a, b, s).collect::<Vec<_>>();
        assert_eq!(
            plan(1, 25_000, 9000),
            vec![(1, 9000), (9001, 18_000), (18_001, 25_000)]
        );
        assert_eq!(plan(5, 4, 10), vec![]);
        assert_eq!(plan(3, 3, 10), vec![(3, 3)]);
        assert_eq!(plan(3, 5, 0), vec![(3, 3), (4, 4), (5, 5)]);
        assert_eq!(
            plan(u64::MAX - 2, u64::MAX, 2),
            vec![(u64::MAX - 2, u64::MAX - 1), (u64::MAX, u64::MAX)]
        );
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

    #[test]
    fn planning_is_lazy_and_a_step_is_bounded() {
        // the whole u64 range (what a saturated head used to plan up front): nothing is built
        let mut r = plan_ranges(0, u64::MAX, 1);
        assert_eq!(r.next(), Some((0, 0)));
        assert_eq!(r.nth(9), Some((10, 10)));
        assert_eq!(plan_ranges(0, u64::MAX, 1000).size_hint().0, 0);
        // one step: at most MAX_RANGES_PER_STEP ranges
        let end = step_end(1, u64::MAX, 1000);
        assert_eq!(end, 1000 * MAX_RANGES_PER_STEP);
        assert_eq!(
            plan_ranges(1, end, 1000).count() as u64,
            MAX_RANGES_PER_STEP
        );
        assert_eq!(step_end(1, 50, 1000), 50);
        assert_eq!(step_end(7, 3, 10), 3);
        assert_eq!(step_end(5, u64::MAX, u64::MAX), u64::MAX);
        let far = untrusted::MAX_PLAUSIBLE_BLOCK;
        assert_eq!(step_end(far - 5, far, 1), far);
    }

    proptest! {
        #[test]
        fn a_step_covers_at_most_the_bound_and_resumes_exactly(from in 0u64..1 << 41, len in 0u64..1 << 41, size in 1u64..100_000) {
            let to = from + len;
            let end = step_end(from, to, size);
            prop_assert!(end >= from && end <= to);
            prop_assert!((end - from) / size < MAX_RANGES_PER_STEP);
            let n = plan_ranges(from, end, size).take(MAX_RANGES_PER_STEP as usize + 1).count() as u64;
            prop_assert!(n <= MAX_RANGES_PER_STEP);
            if end < to {
                prop_assert_eq!(n, MAX_RANGES_PER_STEP);
                // the next step starts right after: nothing skipped, nothing twice
                prop_assert_eq!(plan_ranges(end + 1, to, size).next().unwrap().0, end + 1);
            }
        }

        #[test]
        fn logs_inside_the_query_parse_and_outside_are_refused(from in 0u64..1000, len in 0u64..1000, block in 0u64..3000) {
            let q = query(from, from + len);
            let r = parse_logs(&ep(), &json!([log_at(block)]), &q);
            prop_assert_eq!(r.is_ok(), block >= from && block <= from + len);
        }

        #[test]
        fn arbitrary_log_answers_never_panic(s in "[\\[\\]{}\":,0-9a-fx trueflsn]{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = parse_logs(&ep(), &v, &query(0, 10));
                let _ = parse_header(&ep(), &v, 3);
            }
        }

        #[test]
        fn ranges_cover_exactly(from in 0u64..1000, len in 0u64..50_000, size in 1u64..10_000) {
            let to = from + len;
            let r: Vec<_> = plan_ranges(from, to, size).collect();
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
