//! Reading total AUDIO balances: chunk planning, splitting, and "sum of three or nothing".
//!
//! Holders are read in chunks (one `aggregate3` each). A chunk holds at most `chunk_size` holders
//! and at most as many as fit the request byte budget. When the node says a chunk is too big
//! (out of gas, request/response too large), the chunk is halved and both halves are read, down to
//! a single holder. Any other chunk failure fails the whole read: callers never see a partial set.
//!
//! With isolation on (the refresh paths), a chunk whose failure repeats after the retries and that
//! the caller deems isolatable (an EVM execution timeout, a 5xx, …) is split down to one holder,
//! so one bad wallet or heavy chunk never blocks the others; a single holder that still fails comes
//! back as a failed holder. Before each such split a probe (an aggregate3 with only
//! `getBlockNumber()`) checks the node itself still answers: if it does not, the whole read fails
//! with the original error, and no wallet is blamed for a node that is down (or went down mid-read).
//!
//! A chunk's block (`getBlockNumber()`) must be at most `untrusted::MAX_PLAUSIBLE_BLOCK` (2^40, far
//! inside a `bigint`): a larger answer is a chunk error, never a stamp (a row stamped near 2^63
//! could never be updated again).

use crate::eth::abi::{self, Contracts, Read, Result3, SubcallFailure};
use alloy_primitives::ruint::aliases::U512;
use alloy_primitives::{Address, U256};
use std::fmt;

/// The three values for one holder, as read at `block`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderBalance {
    pub wallet: Address,
    pub token: Result<U256, SubcallFailure>,
    pub staked: Result<U256, SubcallFailure>,
    pub delegated: Result<U256, SubcallFailure>,
    /// The block the chunk was read at (0 ≤ block ≤ i64::MAX; 0 for a holder that was not read).
    pub block: i64,
    /// Set when the holder could not be read at all: its single-holder chunk failed (isolation).
    pub failure: Option<String>,
}

impl HolderBalance {
    fn parts(&self) -> [(Read, &Result<U256, SubcallFailure>); 3] {
        [
            (Read::BalanceOf, &self.token),
            (Read::TotalStakedFor, &self.staked),
            (Read::GetTotalDelegatorStake, &self.delegated),
        ]
    }

    /// balance + staked + delegated, exactly (may exceed 2^256), or None if any read failed.
    pub fn total(&self) -> Option<U512> {
        self.parts().iter().try_fold(U512::ZERO, |acc, (_, r)| {
            r.as_ref().ok().map(|v| acc + U512::from(*v))
        })
    }

    /// Which sub-calls failed and why, e.g. `balanceOf reverted: "…" (0x08c3…)`; None if all passed.
    pub fn error(&self) -> Option<String> {
        if let Some(f) = &self.failure {
            return Some(f.clone());
        }
        let msgs: Vec<String> = self
            .parts()
            .iter()
            .filter_map(|(read, r)| r.as_ref().err().map(|e| format!("{} {e}", read.name())))
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }
}

/// Which chunk failures may be narrowed down to the wallets that cause them (write paths only).
pub type Isolatable<'a, E> = &'a dyn Fn(&ChunkError<E>) -> bool;

/// Why a chunk could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError<E> {
    /// The transport failed (already retried as far as policy allows).
    Fetch(E),
    /// The answer was not a usable aggregate3 result.
    Decode(abi::DecodeError),
    /// Multicall3's own getBlockNumber() failed.
    BlockNumber(SubcallFailure),
    /// Multicall3's getBlockNumber() answered a block above `untrusted::MAX_PLAUSIBLE_BLOCK`.
    BlockOutOfRange(U256),
}

impl<E: fmt::Display> fmt::Display for ChunkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Fetch(e) => write!(f, "{e}"),
            ChunkError::Decode(e) => write!(f, "{e}"),
            ChunkError::BlockNumber(e) => write!(f, "Multicall3 getBlockNumber() {e}"),
            ChunkError::BlockOutOfRange(b) => write!(
                f,
                "Multicall3 getBlockNumber() answered block {b}, which is above the plausible maximum {} (2^40) (refused: no row is stamped with it)",
                crate::eth::untrusted::MAX_PLAUSIBLE_BLOCK
            ),
        }
    }
}

/// Bytes of JSON around the hex calldata in an eth_call request (method, params, to, ids).
const REQUEST_OVERHEAD: usize = 160;

/// Request body size for a chunk of `holders` holders.
pub fn request_bytes(holders: usize) -> usize {
    REQUEST_OVERHEAD + 2 * abi::chunk_calldata_len(holders)
}

/// Holders per chunk: `chunk_size`, reduced until the request fits `max_request_bytes` (0 = no
/// byte budget). Never below 1.
pub fn effective_chunk_size(chunk_size: usize, max_request_bytes: usize) -> usize {
    let mut n = chunk_size.max(1);
    if max_request_bytes > 0 {
        while n > 1 && request_bytes(n) > max_request_bytes {
            // request size is affine in n: jump close, then settle
            let per = request_bytes(2) - request_bytes(1);
            let fit = max_request_bytes.saturating_sub(request_bytes(0)) / per;
            n = if fit >= 1 && fit < n { fit } else { n - 1 };
        }
    }
    n
}

/// Statistics of one read, for tests and status views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub requests: usize,
    pub splits: usize,
    /// Probes sent (aggregate3 with getBlockNumber() only) before isolating a failing chunk.
    pub probes: usize,
    /// Holders that failed on their own (isolation).
    pub isolated: usize,
}

/// Reads all holders. `fetch(calldata, holders)` sends one aggregate3 and returns the raw return
/// data; `wants_split(err)` says whether a fetch error means "chunk too big". `isolate`, when
/// given, says which chunk errors are isolated (split down to one holder, see the module doc)
/// instead of failing the whole read.
#[allow(clippy::too_many_arguments)]
pub fn read_all<E: fmt::Display>(
    contracts: &Contracts,
    holders: &[Address],
    chunk_size: usize,
    max_request_bytes: usize,
    fetch: impl FnMut(&[u8], usize) -> Result<Vec<u8>, E>,
    wants_split: impl Fn(&E) -> bool,
    isolate: Option<Isolatable<'_, E>>,
    stats: &mut ReadStats,
) -> Result<Vec<HolderBalance>, ChunkError<E>> {
    let mut out = Vec::with_capacity(holders.len());
    let size = effective_chunk_size(chunk_size, max_request_bytes);
    read_chunks(
        contracts,
        &plan_chunks(holders, size),
        &mut |_| None,
        fetch,
        wants_split,
        isolate,
        stats,
        &mut |_, mut v| out.append(&mut v),
    )?;
    Ok(out)
}

/// The top-level chunks of a read: `holders` in order, `size` per chunk (the last may be short).
pub fn plan_chunks(holders: &[Address], size: usize) -> Vec<&[Address]> {
    holders.chunks(size.max(1)).collect()
}

/// Reads planned chunks in order and hands each chunk's holders to `emit(index, holders)` as
/// soon as that chunk (with its splits) is done: a caller can write chunk k while chunk k+1 is
/// still on the wire. `first(i)` may supply the answer to chunk `i`'s first request (fetched
/// ahead, e.g. pipelined); None sends it with `fetch`. Splits and probes always use `fetch`.
/// On an error nothing more is emitted.
#[allow(clippy::too_many_arguments)]
pub fn read_chunks<E: fmt::Display>(
    contracts: &Contracts,
    chunks: &[&[Address]],
    first: &mut dyn FnMut(usize) -> Option<Result<Vec<u8>, E>>,
    mut fetch: impl FnMut(&[u8], usize) -> Result<Vec<u8>, E>,
    wants_split: impl Fn(&E) -> bool,
    isolate: Option<Isolatable<'_, E>>,
    stats: &mut ReadStats,
    emit: &mut dyn FnMut(usize, Vec<HolderBalance>),
) -> Result<(), ChunkError<E>> {
    for (index, &top) in chunks.iter().enumerate() {
        let mut out = Vec::with_capacity(top.len());
        // explicit stack of pending slices, processed in order (halves pushed in reverse)
        let mut pending: Vec<&[Address]> = vec![top];
        let mut prefetched = first(index);
        while let Some(chunk) = pending.pop() {
            stats.requests += 1;
            let answer = match prefetched.take() {
                Some(raw) => raw
                    .map_err(ChunkError::Fetch)
                    .and_then(|raw| decode_chunk(chunk, &raw)),
                None => read_chunk(contracts, chunk, &mut fetch),
            };
            let err = match answer {
                Ok(mut v) => {
                    out.append(&mut v);
                    continue;
                }
                Err(e) => e,
            };
            if let ChunkError::Fetch(f) = &err {
                if chunk.len() > 1 && wants_split(f) {
                    stats.splits += 1;
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    pending.push(b);
                    pending.push(a);
                    continue;
                }
            }
            match isolate {
                Some(isolatable) if isolatable(&err) => {
                    // Is it the chunk, or the node? A node that stopped answering is never the
                    // wallets' fault: then the whole read fails.
                    stats.requests += 1;
                    stats.probes += 1;
                    if read_chunk(contracts, &[], &mut fetch).is_err() {
                        return Err(err);
                    }
                    if chunk.len() > 1 {
                        stats.splits += 1;
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        pending.push(b);
                        pending.push(a);
                    } else {
                        stats.isolated += 1;
                        out.push(HolderBalance::not_read(
                            chunk[0],
                            format!("the read of this wallet alone failed: {err}"),
                        ));
                    }
                }
                _ => return Err(err),
            }
        }
        emit(index, out);
    }
    Ok(())
}

impl HolderBalance {
    /// A holder whose read failed as a whole (its single-holder chunk failed).
    pub fn not_read(wallet: Address, why: String) -> HolderBalance {
        HolderBalance {
            wallet,
            token: Err(SubcallFailure::NotRead),
            staked: Err(SubcallFailure::NotRead),
            delegated: Err(SubcallFailure::NotRead),
            block: 0,
            failure: Some(why),
        }
    }
}

fn read_chunk<E>(
    contracts: &Contracts,
    chunk: &[Address],
    fetch: &mut impl FnMut(&[u8], usize) -> Result<Vec<u8>, E>,
) -> Result<Vec<HolderBalance>, ChunkError<E>> {
    let calldata = abi::encode_chunk(contracts, chunk);
    let raw = fetch(&calldata, chunk.len()).map_err(ChunkError::Fetch)?;
    decode_chunk(chunk, &raw)
}

/// The results of an aggregate3 answer for `holders` holders and the block they were read at.
fn decode_results<E>(raw: &[u8], holders: usize) -> Result<(Vec<Result3>, i64), ChunkError<E>> {
    let results =
        abi::decode_aggregate3(raw, abi::subcall_count(holders)).map_err(ChunkError::Decode)?;
    let raw_block = abi::decode_uint(&results[0]).map_err(ChunkError::BlockNumber)?;
    let block = u64::try_from(raw_block)
        .ok()
        .filter(|b| crate::eth::untrusted::check_block(*b).is_ok())
        .and_then(|b| i64::try_from(b).ok())
        .ok_or(ChunkError::BlockOutOfRange(raw_block))?;
    Ok((results, block))
}

/// Checks an aggregate3 answer for `holders` holders as it arrives (in the attempt, so an unusable
/// answer is a failure of the endpoint that sent it and the next endpoint is tried, see
/// `retry::execute`): undecodable, a result count other than the calls sent, or a block above
/// `untrusted::MAX_PLAUSIBLE_BLOCK` is a `BadResponse` of `ep`. `0x` (no code at Multicall3) and a
/// failing `getBlockNumber()` pass: `decode_chunk` reports them (configuration, not the node).
pub fn check_answer(
    ep: &crate::eth::endpoint::Endpoint,
    raw: &[u8],
    holders: usize,
) -> Result<(), crate::eth::error::RpcError> {
    match decode_results::<String>(raw, holders) {
        Ok(_)
        | Err(ChunkError::Decode(abi::DecodeError::NoCode))
        | Err(ChunkError::BlockNumber(_)) => Ok(()),
        Err(e) => Err(crate::eth::error::RpcError::new(
            ep,
            crate::eth::error::RpcErrorKind::BadResponse(format!(
                "eth_call aggregate3 result: {e}"
            )),
        )),
    }
}

/// Decodes one aggregate3 answer for `chunk` (public for tests and fuzzing).
pub fn decode_chunk<E>(chunk: &[Address], raw: &[u8]) -> Result<Vec<HolderBalance>, ChunkError<E>> {
    let (results, block) = decode_results(raw, chunk.len())?;
    let per_holder: &[Result3] = &results[1..];
    Ok(chunk
        .iter()
        .zip(per_holder.chunks_exact(3))
        .map(|(&wallet, r)| HolderBalance {
            wallet,
            token: abi::decode_uint(&r[0]),
            staked: abi::decode_uint(&r[1]),
            delegated: abi::decode_uint(&r[2]),
            block,
            failure: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::abi::{aggregate3Call, Result3};
    use alloy_primitives::Bytes;
    use alloy_sol_types::{SolCall, SolValue};
    use proptest::prelude::*;

    use crate::eth::abi::fixtures::{addr, contracts};

    fn ok(v: U256) -> Result3 {
        Result3 {
            success: true,
            returnData: Bytes::from(v.abi_encode()),
        }
    }

    /// A fake chain: value of holder h on contract c = h*10 + c; holder 0xdead reverts on staking.
    fn fake_node(calldata: &[u8], max_holders: usize) -> Result<Vec<u8>, String> {
        let call = aggregate3Call::abi_decode(calldata).map_err(|e| e.to_string())?;
        if call.calls.len() > 3 * max_holders + 1 {
            return Err("out of gas".into());
        }
        let mut results = vec![ok(U256::from(777u64))];
        for c in &call.calls[1..] {
            let holder = U256::from_be_slice(&c.callData[4..36]).to::<u64>();
            let which = if c.target == addr(2) {
                1
            } else if c.target == addr(3) {
                2
            } else {
                3
            };
            if holder == 0xdead && which == 2 {
                results.push(Result3 {
                    success: false,
                    returnData: Bytes::new(),
                });
            } else {
                results.push(ok(U256::from(holder * 10 + which)));
            }
        }
        Ok(results.abi_encode())
    }

    #[test]
    fn sums_and_failures_per_holder() {
        let holders = [addr(5), addr(0xdead), addr(7)];
        let mut stats = ReadStats::default();
        let out = read_all(
            &contracts(),
            &holders,
            200,
            0,
            |c, _| fake_node(c, 1000),
            |_| false,
            None,
            &mut stats,
        )
        .unwrap();
        assert_eq!(stats.requests, 1);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].total(), Some(U512::from(51 + 52 + 53)));
        assert_eq!(out[0].block, 777);
        assert_eq!(out[1].total(), None);
        assert_eq!(
            out[1].error().unwrap(),
            "totalStakedFor reverted without data"
        );
        assert!(out[1].token.is_ok() && out[1].delegated.is_ok());
        assert_eq!(out[2].wallet, addr(7));
    }

    #[test]
    fn totals_beyond_u256_are_exact() {
        let h = HolderBalance {
            wallet: addr(1),
            token: Ok(U256::MAX),
            staked: Ok(U256::MAX),
            delegated: Ok(U256::from(2)),
            block: 1,
            failure: None,
        };
        assert_eq!(
            h.total().unwrap(),
            U512::from(U256::MAX) * U512::from(2) + U512::from(2)
        );
    }

    #[test]
    fn chunking_and_halving() {
        let holders: Vec<_> = (10..410).map(addr).collect();
        let mut stats = ReadStats::default();
        let out = read_all(
            &contracts(),
            &holders,
            200,
            0,
            |c, _| fake_node(c, 50),
            |e| e.contains("out of gas"),
            None,
            &mut stats,
        )
        .unwrap();
        assert_eq!(
            out.iter().map(|h| h.wallet).collect::<Vec<_>>(),
            holders,
            "order kept"
        );
        assert!(out.iter().all(|h| h.total().is_some()));
        // 2 chunks of 200 → 4 of 100 → 8 of 50: 2 + 4 + 8 requests, 6 splits
        assert_eq!(
            stats,
            ReadStats {
                requests: 14,
                splits: 6,
                ..ReadStats::default()
            }
        );
        let mut stats = ReadStats::default();
        let err = read_all(
            &contracts(),
            &holders[..4],
            200,
            0,
            |c, _| fake_node(c, 0),
            |e| e.contains("out of gas"),
            None,
            &mut stats,
        );
        assert_eq!(
            err,
            Err(ChunkError::Fetch("out of gas".into())),
            "a single holder that still fails is an error"
        );
    }

    #[test]
    fn other_fetch_errors_fail_the_whole_read() {
        let holders: Vec<_> = (0..300).map(addr).collect();
        let mut n = 0;
        let mut stats = ReadStats::default();
        let r = read_all(
            &contracts(),
            &holders,
            100,
            0,
            |c, _| {
                n += 1;
                if n == 2 {
                    Err("boom".to_string())
                } else {
                    fake_node(c, 1000)
                }
            },
            |_| false,
            None,
            &mut stats,
        );
        assert_eq!(r, Err(ChunkError::Fetch("boom".into())));
    }

    #[test]
    fn byte_budget_limits_chunk_size() {
        assert_eq!(effective_chunk_size(200, 0), 200);
        assert_eq!(effective_chunk_size(0, 0), 1);
        let n = effective_chunk_size(200, 100_000);
        assert!(
            request_bytes(n) <= 100_000 && request_bytes(n + 1) > 100_000,
            "n={n}"
        );
        assert_eq!(effective_chunk_size(200, 10), 1);
        // the real encoder agrees with the estimate (hex doubles, plus JSON overhead)
        let holders: Vec<_> = (0..n as u32).map(addr).collect();
        let body = crate::eth::jsonrpc::eth_call_body(
            1,
            "0xca11bde05977b3631167028862be2a173976ca11",
            &abi::encode_chunk(&contracts(), &holders),
        );
        assert!(
            body.len() <= request_bytes(n),
            "{} > {}",
            body.len(),
            request_bytes(n)
        );
    }

    #[test]
    fn bad_answers_are_chunk_errors() {
        let chunk = [addr(1)];
        let short = vec![ok(U256::from(1u8)); 3].abi_encode();
        assert!(matches!(
            decode_chunk::<()>(&chunk, &short),
            Err(ChunkError::Decode(abi::DecodeError::CountMismatch {
                expected: 4,
                got: 3
            }))
        ));
        let mut bad_block = vec![ok(U256::from(1u8)); 4];
        bad_block[0] = Result3 {
            success: false,
            returnData: Bytes::new(),
        };
        assert!(matches!(
            decode_chunk::<()>(&chunk, &bad_block.abi_encode()),
            Err(ChunkError::BlockNumber(_))
        ));
        assert!(matches!(
            decode_chunk::<()>(&chunk, &[]),
            Err(ChunkError::Decode(abi::DecodeError::NoCode))
        ));
    }

    #[test]
    fn block_above_the_plausible_maximum_is_a_chunk_error_never_a_stamp() {
        let chunk = [addr(1)];
        let mut answer = vec![ok(U256::from(1u8)); 4];
        answer[0] = ok(U256::from(1u64 << 63));
        let e = decode_chunk::<String>(&chunk, &answer.abi_encode()).unwrap_err();
        assert!(matches!(e, ChunkError::BlockOutOfRange(b) if b == U256::from(1u64 << 63)));
        assert!(e.to_string().contains("9223372036854775808"), "{e}");
        answer[0] = ok(U256::MAX);
        assert!(matches!(
            decode_chunk::<()>(&chunk, &answer.abi_encode()),
            Err(ChunkError::BlockOutOfRange(_))
        ));
        for refused in [i64::MAX as u64, (1 << 40) + 1] {
            answer[0] = ok(U256::from(refused));
            let e = decode_chunk::<String>(&chunk, &answer.abi_encode()).unwrap_err();
            assert!(matches!(e, ChunkError::BlockOutOfRange(_)), "{refused}");
            assert!(e.to_string().contains(&refused.to_string()), "{e}");
        }
        answer[0] = ok(U256::from(1u64 << 40));
        let v = decode_chunk::<()>(&chunk, &answer.abi_encode()).unwrap();
        assert_eq!(v[0].block, 1 << 40);
    }

    #[test]
    fn answers_are_checked_as_they_arrive() {
        let ep = crate::eth::endpoint::Endpoint::parse("http://10.0.0.1:8545/KEY").unwrap();
        let good = vec![ok(U256::from(9u8)); 7].abi_encode();
        assert_eq!(check_answer(&ep, &good, 2), Ok(()));
        assert_eq!(
            check_answer(&ep, &[], 2),
            Ok(()),
            "no code: reported by decode_chunk"
        );
        let mut reverted = vec![ok(U256::from(9u8)); 7];
        reverted[0] = Result3 {
            success: false,
            returnData: Bytes::new(),
        };
        assert_eq!(check_answer(&ep, &reverted.abi_encode(), 2), Ok(()));
        let mut far = vec![ok(U256::from(9u8)); 7];
        far[0] = ok(U256::from(i64::MAX as u64));
        for (raw, want) in [
            (good.clone(), "returned 7 results for 4 calls"),
            (
                good[..good.len() / 2].to_vec(),
                "cannot decode aggregate3 result",
            ),
            (far.abi_encode(), "9223372036854775807"),
        ] {
            let holders = if want.contains("4 calls") { 1 } else { 2 };
            let e = check_answer(&ep, &raw, holders).unwrap_err();
            assert_eq!(e.sqlstate(), "08P01");
            let msg = e.to_string();
            assert!(
                msg.contains("RPC host 10.0.0.1:8545")
                    && msg.contains("eth_call aggregate3 result")
                    && msg.contains(want),
                "{msg}"
            );
            assert!(!msg.contains("KEY"), "{msg}");
        }
    }

    /// A node that fails (like an EVM execution timeout) every aggregate3 holding one of `bad`.
    fn node_failing_on(
        bad: &[Address],
    ) -> impl FnMut(&[u8], usize) -> Result<Vec<u8>, String> + '_ {
        move |calldata, _| {
            let call = aggregate3Call::abi_decode(calldata).map_err(|e| e.to_string())?;
            let hit = call.calls[1..]
                .iter()
                .any(|c| bad.iter().any(|b| c.callData[16..36] == b[..]));
            if hit {
                Err("execution aborted (timeout = 5s)".into())
            } else {
                fake_node(calldata, 1000)
            }
        }
    }

    /// `read_all` with isolation on (every chunk error isolatable) and no byte budget.
    fn read_isolating(
        holders: &[Address],
        chunk: usize,
        node: impl FnMut(&[u8], usize) -> Result<Vec<u8>, String>,
        stats: &mut ReadStats,
    ) -> Result<Vec<HolderBalance>, ChunkError<String>> {
        let any: &dyn Fn(&ChunkError<String>) -> bool = &|_| true;
        read_all(
            &contracts(),
            holders,
            chunk,
            0,
            node,
            |_| false,
            Some(any),
            stats,
        )
    }

    #[test]
    fn isolation_reads_every_other_holder_and_blames_only_the_bad_one() {
        let holders: Vec<_> = (10..1010).map(addr).collect();
        let bad = [addr(517)];
        let mut stats = ReadStats::default();
        let out = read_isolating(&holders, 200, node_failing_on(&bad), &mut stats).unwrap();
        assert_eq!(
            out.iter().map(|h| h.wallet).collect::<Vec<_>>(),
            holders,
            "order kept"
        );
        for h in &out {
            if h.wallet == bad[0] {
                assert_eq!(h.total(), None);
                assert!(
                    h.error().unwrap().contains("execution aborted"),
                    "{:?}",
                    h.error()
                );
            } else {
                assert!(h.total().is_some() && h.failure.is_none());
            }
        }
        // the failing chunk of 200 halves down to 1 (9 failing levels: 200,100,50,25,13,7,4,2,1),
        // each failure probed once before it is split or blamed
        assert_eq!((stats.probes, stats.isolated), (9, 1));
        assert!(stats.requests <= 5 + 2 * 9 + 9, "{stats:?}");
    }

    #[test]
    fn isolation_probes_the_node_before_blaming() {
        let holders: Vec<_> = (10..20).map(addr).collect();
        let bad = [addr(10)];
        let mut stats = ReadStats::default();
        let out = read_isolating(&holders, 200, node_failing_on(&bad), &mut stats).unwrap();
        // 10 holders, the bad one first: 10 → 5 → 2 → 1 fail, each failing chunk probed
        assert_eq!(stats.probes, 4);
        // every holder in order: the bad one blamed, the 9 others read (h*10 + 1 + 2 + 3)
        assert_eq!(out.iter().map(|h| h.wallet).collect::<Vec<_>>(), holders);
        for (i, h) in out.iter().enumerate() {
            if i == 0 {
                assert!(h.failure.is_some() && h.total().is_none(), "{h:?}");
            } else {
                assert_eq!(h.failure, None);
                assert_eq!(
                    h.total(),
                    Some(U512::from((10 + i as u64) * 30 + 6)),
                    "{h:?}"
                );
            }
        }
    }

    #[test]
    fn isolation_never_blames_wallets_when_the_node_dies_mid_read() {
        let holders: Vec<_> = (10..110).map(addr).collect();
        let mut n = 0;
        let mut stats = ReadStats::default();
        let r = read_isolating(
            &holders,
            25,
            |c: &[u8], _| {
                n += 1;
                if n == 1 {
                    fake_node(c, 1000)
                } else {
                    Err("HTTP 502".to_string())
                }
            },
            &mut stats,
        );
        assert_eq!(
            r,
            Err(ChunkError::Fetch("HTTP 502".into())),
            "chunk 1 read, then the node died"
        );
        assert_eq!((stats.requests, stats.probes, stats.isolated), (3, 1, 0));
    }

    #[test]
    fn isolation_never_blames_wallets_for_a_node_that_fails_everything() {
        let holders: Vec<_> = (10..110).map(addr).collect();
        let mut stats = ReadStats::default();
        let r = read_isolating(
            &holders,
            50,
            |_: &[u8], _| Err::<Vec<u8>, _>("HTTP 504".to_string()),
            &mut stats,
        );
        assert_eq!(r, Err(ChunkError::Fetch("HTTP 504".into())));
        assert_eq!(
            (stats.requests, stats.probes),
            (2, 1),
            "one chunk, one probe, then the whole read fails"
        );
        // and errors the caller does not isolate fail at once, without a probe
        let mut stats = ReadStats::default();
        let none: &dyn Fn(&ChunkError<String>) -> bool = &|_| false;
        let r = read_all(
            &contracts(),
            &holders,
            50,
            0,
            node_failing_on(&[addr(12)]),
            |_| false,
            Some(none),
            &mut stats,
        );
        assert!(r.is_err());
        assert_eq!((stats.requests, stats.probes), (1, 0));
    }

    proptest! {
        #[test]
        fn isolation_keeps_every_good_holder(count in 1u32..150, bad_idx in proptest::collection::vec(0u32..150, 0..6), chunk in 1usize..60) {
            let holders: Vec<_> = (100..100 + count).map(addr).collect();
            let bad: Vec<_> = bad_idx.iter().filter(|i| **i < count).map(|i| addr(100 + i)).collect();
            let mut st = ReadStats::default();
            let r = read_isolating(&holders, chunk, node_failing_on(&bad), &mut st);
            // Every holder, in input order, whether all, some or none of them are bad (nothing
            // readable: the probe still answers, so each holder is blamed on its own).
            let out = r.unwrap();
            prop_assert_eq!(out.iter().map(|h| h.wallet).collect::<Vec<_>>(), holders.clone());
            for h in &out {
                prop_assert_eq!(h.failure.is_some(), bad.contains(&h.wallet));
                prop_assert_eq!(h.total().is_some(), !bad.contains(&h.wallet));
            }
            let mut distinct_bad = bad.clone();
            distinct_bad.sort();
            distinct_bad.dedup();
            prop_assert_eq!(st.isolated, distinct_bad.len());
        }

        #[test]
        fn arbitrary_answers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096), n in 1u32..5) {
            let chunk: Vec<_> = (0..n).map(addr).collect();
            let _ = decode_chunk::<()>(&chunk, &data);
        }

        #[test]
        fn wrong_counts_and_truncated_answers_are_chunk_errors(n in 1u32..40, extra in -3i64..4, cut in 1usize..200) {
            let chunk: Vec<_> = (0..n).map(addr).collect();
            let count = (abi::subcall_count(chunk.len()) as i64 + extra).max(0) as usize;
            let answer = vec![ok(U256::from(5u8)); count].abi_encode();
            let r = decode_chunk::<()>(&chunk, &answer);
            if extra == 0 {
                prop_assert_eq!(r.unwrap().len(), chunk.len());
                let truncated = &answer[..answer.len().saturating_sub(cut)];
                prop_assert!(matches!(decode_chunk::<()>(&chunk, truncated), Err(ChunkError::Decode(_))));
            } else {
                let is_count_mismatch = matches!(r, Err(ChunkError::Decode(abi::DecodeError::CountMismatch { .. })));
                prop_assert!(is_count_mismatch);
            }
        }

        #[test]
        fn split_reads_equal_unsplit_reads(count in 1u32..120, limit in 1usize..40, chunk in 1usize..70) {
            let holders: Vec<_> = (100..100 + count).map(addr).collect();
            let mut s1 = ReadStats::default();
            let mut s2 = ReadStats::default();
            let a = read_all(&contracts(), &holders, chunk, 0, |c, _| fake_node(c, limit), |e| e.contains("out of gas"), None, &mut s1).unwrap();
            let b = read_all(&contracts(), &holders, 1000, 0, |c, _| fake_node(c, 1000), |_| false, None, &mut s2).unwrap();
            prop_assert_eq!(&a, &b);
            // and both are the chain's values: one entry per holder, in order (h*10 + 1 + 2 + 3)
            prop_assert_eq!(a.iter().map(|h| (h.wallet, h.total())).collect::<Vec<_>>(),
                            (100..100 + count).map(|h| (addr(h), Some(U512::from(h as u64 * 30 + 6)))).collect::<Vec<_>>());
        }
    }
}
