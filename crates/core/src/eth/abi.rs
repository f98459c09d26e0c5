//! ABI for the calls we make: Multicall3 `aggregate3` / `getBlockNumber` and the three AUDIO reads.
//!
//! One chunk = one `aggregate3` whose first sub-call is Multicall3's own `getBlockNumber()` (so every
//! value carries the block it was read at, in the same round trip) followed by three sub-calls per
//! holder, all with `allowFailure = true` so one bad sub-call cannot fail the batch.

use alloy_primitives::{Address, U256};
use alloy_sol_types::{sol, SolCall};
use std::fmt;

sol! {
    /// Multicall3 call descriptor.
    #[derive(Debug, PartialEq, Eq)]
    struct Call3 { address target; bool allowFailure; bytes callData; }
    /// Multicall3 per-call result.
    #[derive(Debug, PartialEq, Eq)]
    struct Result3 { bool success; bytes returnData; }

    function aggregate3(Call3[] calls) external payable returns (Result3[] returnData);
    function getBlockNumber() external view returns (uint256 blockNumber);

    function balanceOf(address account) external view returns (uint256);
    function totalStakedFor(address account) external view returns (uint256);
    function getTotalDelegatorStake(address delegator) external view returns (uint256);

    /// Audius DelegateManager (V2): the delegators of a service provider.
    function getDelegatorsList(address sp) external view returns (address[] memory);

    /// Solidity's `revert("reason")` payload.
    function Error(string reason);
}

/// The three reads made per holder, in sub-call order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    BalanceOf,
    TotalStakedFor,
    GetTotalDelegatorStake,
}

impl Read {
    pub const ALL: [Read; 3] = [
        Read::BalanceOf,
        Read::TotalStakedFor,
        Read::GetTotalDelegatorStake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Read::BalanceOf => "balanceOf",
            Read::TotalStakedFor => "totalStakedFor",
            Read::GetTotalDelegatorStake => "getTotalDelegatorStake",
        }
    }

    fn selector(self) -> [u8; 4] {
        match self {
            Read::BalanceOf => balanceOfCall::SELECTOR,
            Read::TotalStakedFor => totalStakedForCall::SELECTOR,
            Read::GetTotalDelegatorStake => getTotalDelegatorStakeCall::SELECTOR,
        }
    }

    #[cfg(test)]
    fn calldata(self, holder: Address) -> Vec<u8> {
        match self {
            Read::BalanceOf => balanceOfCall { account: holder }.abi_encode(),
            Read::TotalStakedFor => totalStakedForCall { account: holder }.abi_encode(),
            Read::GetTotalDelegatorStake => {
                getTotalDelegatorStakeCall { delegator: holder }.abi_encode()
            }
        }
    }
}

/// Where the three reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contracts {
    pub multicall: Address,
    pub token: Address,
    pub staking: Address,
    pub delegate_manager: Address,
}

impl Contracts {
    fn target(&self, read: Read) -> Address {
        match read {
            Read::BalanceOf => self.token,
            Read::TotalStakedFor => self.staking,
            Read::GetTotalDelegatorStake => self.delegate_manager,
        }
    }
}

/// Number of sub-calls in the aggregate3 for `holders` holders.
pub fn subcall_count(holders: usize) -> usize {
    3 * holders + 1
}

/// Calldata of one `aggregate3` for a chunk of holders: `getBlockNumber()` first, then
/// balanceOf/totalStakedFor/getTotalDelegatorStake per holder.
///
/// Every sub-call has a fixed shape, so the ABI layout is written directly into one buffer of the
/// exact size (`chunk_calldata_len`): no per-call allocations, no size pass. The tests hold it
/// byte for byte against alloy's encoder of the same `aggregate3Call`.
pub fn encode_chunk(contracts: &Contracts, holders: &[Address]) -> Vec<u8> {
    let n = subcall_count(holders.len());
    let mut out = Vec::with_capacity(chunk_calldata_len(holders.len()));
    out.extend_from_slice(&aggregate3Call::SELECTOR);
    push_word(&mut out, 0x20); // offset of the Call3[] argument
    push_word(&mut out, n as u64); // its length
                                   // offsets of the tuples, from the start of the offsets area: getBlockNumber's tuple is
                                   // 160 bytes (4 bytes of calldata padded to 32), each holder call's 192 (36 padded to 64)
    let first = 32 * n;
    push_word(&mut out, first as u64);
    for i in 1..n {
        push_word(
            &mut out,
            (first + BLOCK_CALL_LEN + (i - 1) * HOLDER_CALL_LEN) as u64,
        );
    }
    push_call(
        &mut out,
        contracts.multicall,
        &getBlockNumberCall::SELECTOR,
        None,
    );
    for &h in holders {
        for read in Read::ALL {
            push_call(&mut out, contracts.target(read), &read.selector(), Some(h));
        }
    }
    debug_assert_eq!(out.len(), chunk_calldata_len(holders.len()));
    out
}

/// Encoded size of getBlockNumber's Call3 tuple and of a holder's.
const BLOCK_CALL_LEN: usize = 32 * 4 + 32;
const HOLDER_CALL_LEN: usize = 32 * 4 + 64;

/// A big-endian uint256 word.
fn push_word(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&[0u8; 24]);
    out.extend_from_slice(&v.to_be_bytes());
}

fn push_address(out: &mut Vec<u8>, a: Address) {
    out.extend_from_slice(&[0u8; 12]);
    out.extend_from_slice(a.as_slice());
}

/// One `Call3 { target, allowFailure: true, callData: selector [+ arg] }` tuple.
fn push_call(out: &mut Vec<u8>, target: Address, selector: &[u8; 4], arg: Option<Address>) {
    push_address(out, target);
    push_word(out, 1); // allowFailure
    push_word(out, 0x60); // offset of callData within the tuple
    push_word(out, if arg.is_some() { 36 } else { 4 });
    out.extend_from_slice(selector);
    match arg {
        Some(a) => {
            push_address(out, a);
            out.extend_from_slice(&[0u8; 28]); // 36 bytes padded to 64
        }
        None => out.extend_from_slice(&[0u8; 28]), // 4 bytes padded to 32
    }
}

/// Size in bytes of the aggregate3 calldata for `holders` holders (exact: every sub-call has a fixed
/// shape), used to respect a request byte budget without encoding.
pub fn chunk_calldata_len(holders: usize) -> usize {
    // selector + offset + length + n offsets + n × (target, allowFailure, bytes offset, bytes len,
    // 36 bytes of calldata padded to 64); getBlockNumber's calldata is 4 bytes padded to 32.
    let n = subcall_count(holders);
    let per_holder_call = 32 * 4 + 64;
    4 + 32 + 32 + 32 * n + (32 * 4 + 32) + (n - 1) * per_holder_call
}

/// Decoding the outer aggregate3 answer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// `eth_call` returned `0x`: no contract code answers at the Multicall3 address.
    NoCode,
    /// The bytes are not an ABI-encoded `Result3[]`.
    Abi(String),
    /// Multicall3 returned a different number of results than calls were sent.
    CountMismatch { expected: usize, got: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NoCode => {
                write!(f, "eth_call returned 0x (no contract code answers there)")
            }
            DecodeError::Abi(e) => write!(f, "cannot decode aggregate3 result: {e}"),
            DecodeError::CountMismatch { expected, got } => {
                write!(f, "aggregate3 returned {got} results for {expected} calls")
            }
        }
    }
}

/// Decodes an aggregate3 answer and checks it has exactly `expected` results.
///
/// The answer comes from the node, which is not trusted: no allocation is sized by a length word
/// of it beyond the answer's own size. The result count is checked against `expected` before
/// anything is decoded (when the head is canonical), and the decoding is strict (alloy's strict
/// mode: canonical offsets, no overlapping or gapped data areas, zero padding, bools 0 or 1 —
/// trailing bytes are allowed, as Solidity allows them), so N results pointing at one shared
/// `returnData` cannot make N copies of it; alloy's memory budget is set to the answer's size.
/// Every failure is an error for the chunk, never a panic.
pub fn decode_aggregate3(data: &[u8], expected: usize) -> Result<Vec<Result3>, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::NoCode);
    }
    // `abi.encode(Result3[])`: word 0 is the array's offset (0x20), word 1 its length.
    if data.len() >= 64 && data[..31].iter().all(|&b| b == 0) && data[31] == 0x20 {
        let len_word = &data[32..64];
        let got = if len_word[..24].iter().all(|&b| b == 0) {
            usize::try_from(u64::from_be_bytes(
                len_word[24..].try_into().expect("8 bytes"),
            ))
            .unwrap_or(usize::MAX)
        } else {
            usize::MAX
        };
        if got != expected {
            return Err(DecodeError::CountMismatch { expected, got });
        }
    }
    let config = alloy_sol_types::abi::AbiDecoderConfig::new()
        .strict(true)
        .validate_allow_trailing_bytes(true)
        .memory_limit(data.len().saturating_add(4096));
    let results = aggregate3Call::abi_decode_returns_with_config(data, config)
        .map_err(|e| DecodeError::Abi(e.to_string()))?;
    if results.len() != expected {
        return Err(DecodeError::CountMismatch {
            expected,
            got: results.len(),
        });
    }
    Ok(results)
}

/// Why one sub-call produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubcallFailure {
    /// `success = false`; the revert data (may be empty).
    Reverted(Vec<u8>),
    /// `success = true` with empty return data (e.g. no code at the target).
    Empty,
    /// `success = true` with fewer than 32 bytes.
    Short(usize),
    /// Not read: the holder's whole chunk failed (see `HolderBalance::failure`).
    NotRead,
    /// `success = true` with data that is not the ABI encoding of the declared return type.
    Undecodable(String),
}

impl fmt::Display for SubcallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubcallFailure::Reverted(data) if data.is_empty() => write!(f, "reverted without data"),
            SubcallFailure::Reverted(data) => match revert_reason(data) {
                Some(reason) => write!(f, "reverted: {reason:?} (0x{})", hex(data)),
                None => write!(f, "reverted (0x{})", hex(data)),
            },
            SubcallFailure::Empty => write!(f, "returned no data (no code at the target?)"),
            SubcallFailure::Short(n) => write!(f, "returned {n} bytes, expected 32"),
            SubcallFailure::NotRead => write!(f, "was not read (the request failed)"),
            SubcallFailure::Undecodable(e) => write!(f, "returned undecodable data: {e}"),
        }
    }
}

/// The Go eth-indexer's `decodeUint` states (multicall.go) plus short data: success + ≥32 bytes → the first word; success + empty
/// → failure; success + <32 bytes → failure; success = false → failure (with the revert data).
pub fn decode_uint(r: &Result3) -> Result<U256, SubcallFailure> {
    if !r.success {
        return Err(SubcallFailure::Reverted(r.returnData.to_vec()));
    }
    match r.returnData.len() {
        0 => Err(SubcallFailure::Empty),
        n if n < 32 => Err(SubcallFailure::Short(n)),
        _ => Ok(U256::from_be_slice(&r.returnData[..32])),
    }
}

/// Calldata of one `aggregate3` asking the DelegateManager `getDelegatorsList(sp)` for each of
/// `sps` (claims and slashes change every delegator's stake; no event names them).
pub fn encode_delegator_lists(delegate_manager: Address, sps: &[Address]) -> Vec<u8> {
    let calls = sps
        .iter()
        .map(|&sp| Call3 {
            target: delegate_manager,
            allowFailure: true,
            callData: getDelegatorsListCall { sp }.abi_encode().into(),
        })
        .collect();
    aggregate3Call { calls }.abi_encode()
}

/// The delegators of each SP from the answer to `encode_delegator_lists` (`sps` calls): the outer
/// answer as `decode_aggregate3` checks it, each list decoded strictly, with a memory budget of
/// the answer's size (the node is not trusted). A failed sub-call is that SP's `Err`.
pub fn decode_delegator_lists(
    data: &[u8],
    sps: usize,
) -> Result<Vec<Result<Vec<Address>, SubcallFailure>>, DecodeError> {
    let results = decode_aggregate3(data, sps)?;
    Ok(results
        .iter()
        .map(|r| {
            if !r.success {
                return Err(SubcallFailure::Reverted(r.returnData.to_vec()));
            }
            if r.returnData.is_empty() {
                return Err(SubcallFailure::Empty);
            }
            let config = alloy_sol_types::abi::AbiDecoderConfig::new()
                .strict(true)
                .validate_allow_trailing_bytes(true)
                .memory_limit(r.returnData.len().saturating_add(4096));
            getDelegatorsListCall::abi_decode_returns_with_config(&r.returnData, config)
                .map_err(|e| SubcallFailure::Undecodable(e.to_string()))
        })
        .collect())
}

/// The reason string of a Solidity `Error(string)` revert, if that is what `data` is.
pub fn revert_reason(data: &[u8]) -> Option<String> {
    if data.len() < 4 || data[..4] != ErrorCall::SELECTOR {
        return None;
    }
    ErrorCall::abi_decode(data).ok().map(|e| e.reason)
}

/// Lowercase hex without `0x` (alloy's vectorised `hex`, i.e. const-hex).
pub fn hex(data: &[u8]) -> String {
    alloy_primitives::hex::encode(data)
}

/// Addresses and contracts for the unit tests of this crate: `addr(i)` is `i` in the last four bytes.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn addr(i: u32) -> Address {
        let mut b = [0u8; 20];
        b[16..].copy_from_slice(&i.to_be_bytes());
        Address::from(b)
    }

    /// Multicall3 at 1, the token at 2, Staking at 3, DelegateManager at 4.
    pub(crate) fn contracts() -> Contracts {
        Contracts {
            multicall: addr(1),
            token: addr(2),
            staking: addr(3),
            delegate_manager: addr(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Bytes;
    use alloy_sol_types::SolValue;
    use proptest::prelude::*;

    use super::fixtures::{addr, contracts};

    #[test]
    fn selectors_are_pinned() {
        assert_eq!(aggregate3Call::SELECTOR, [0x82, 0xad, 0x56, 0xcb]);
        assert_eq!(balanceOfCall::SELECTOR, [0x70, 0xa0, 0x82, 0x31]);
        assert_eq!(totalStakedForCall::SELECTOR, [0x4b, 0x34, 0x1a, 0xed]);
        assert_eq!(
            getTotalDelegatorStakeCall::SELECTOR,
            [0xb0, 0x30, 0x3b, 0x75]
        );
        assert_eq!(getBlockNumberCall::SELECTOR, [0x42, 0xcb, 0xb1, 0x5c]);
    }

    #[test]
    fn chunk_round_trips_and_has_block_number_first() {
        let holders = [addr(0xaa), addr(0xbb)];
        let data = encode_chunk(&contracts(), &holders);
        assert_eq!(&data[..4], &aggregate3Call::SELECTOR);
        assert_eq!(data.len(), chunk_calldata_len(holders.len()));
        let decoded = aggregate3Call::abi_decode(&data).unwrap();
        assert_eq!(decoded.calls.len(), 7);
        assert_eq!(decoded.calls[0].target, addr(1));
        assert_eq!(
            decoded.calls[0].callData.as_ref(),
            getBlockNumberCall::SELECTOR
        );
        let targets: Vec<_> = decoded.calls[1..].iter().map(|c| c.target).collect();
        assert_eq!(
            targets,
            [addr(2), addr(3), addr(4), addr(2), addr(3), addr(4)]
        );
        assert!(decoded.calls.iter().all(|c| c.allowFailure));
        // holder argument left-padded to 32 bytes after the selector
        let c = &decoded.calls[4].callData;
        assert_eq!(&c[..4], &balanceOfCall::SELECTOR);
        assert_eq!(&c[4..16], &[0u8; 12]);
        assert_eq!(&c[16..36], addr(0xbb).as_slice());
    }

    /// The same calldata through alloy's generic encoder (what encode_chunk used to be).
    fn encode_chunk_alloy(contracts: &Contracts, holders: &[Address]) -> Vec<u8> {
        let mut calls = vec![Call3 {
            target: contracts.multicall,
            allowFailure: true,
            callData: Bytes::from(getBlockNumberCall {}.abi_encode()),
        }];
        for &h in holders {
            for read in Read::ALL {
                calls.push(Call3 {
                    target: contracts.target(read),
                    allowFailure: true,
                    callData: Bytes::from(read.calldata(h)),
                });
            }
        }
        aggregate3Call { calls }.abi_encode()
    }

    #[test]
    fn encoder_matches_alloy_byte_for_byte() {
        for n in [0usize, 1, 2, 7, 200, 1000] {
            let holders: Vec<_> = (0..n)
                .map(|i| Address::from_slice(&alloy_primitives::keccak256(i.to_be_bytes())[..20]))
                .collect();
            assert_eq!(
                encode_chunk(&contracts(), &holders),
                encode_chunk_alloy(&contracts(), &holders),
                "n={n}"
            );
        }
    }

    #[test]
    fn calldata_len_formula_matches_encoder() {
        for n in [0usize, 1, 3, 50, 200] {
            let holders: Vec<_> = (0..n).map(|i| addr(i as u32)).collect();
            assert_eq!(
                encode_chunk(&contracts(), &holders).len(),
                chunk_calldata_len(n),
                "n={n}"
            );
        }
    }

    fn result(success: bool, data: Vec<u8>) -> Result3 {
        Result3 {
            success,
            returnData: Bytes::from(data),
        }
    }

    #[test]
    fn decode_states_match_the_seed() {
        let v123 = U256::from(123).abi_encode();
        assert_eq!(decode_uint(&result(true, v123)), Ok(U256::from(123)));
        assert_eq!(decode_uint(&result(true, vec![0; 32])), Ok(U256::ZERO));
        let failed = decode_uint(&result(false, U256::from(999).abi_encode()));
        assert!(matches!(failed, Err(SubcallFailure::Reverted(_))));
        assert_eq!(
            decode_uint(&result(true, vec![])),
            Err(SubcallFailure::Empty)
        );
        assert_eq!(
            decode_uint(&result(true, vec![1; 31])),
            Err(SubcallFailure::Short(31))
        );
        assert_eq!(decode_uint(&result(true, vec![0xff; 32])), Ok(U256::MAX));
    }

    #[test]
    fn aggregate3_results_round_trip_and_count_is_checked() {
        let results = vec![
            result(true, U256::from(42).abi_encode()),
            result(false, vec![]),
        ];
        let encoded = results.abi_encode();
        let decoded = decode_aggregate3(&encoded, 2).unwrap();
        assert_eq!(decode_uint(&decoded[0]), Ok(U256::from(42)));
        assert!(decode_uint(&decoded[1]).is_err());
        assert_eq!(
            decode_aggregate3(&encoded, 3),
            Err(DecodeError::CountMismatch {
                expected: 3,
                got: 2
            })
        );
        assert_eq!(decode_aggregate3(&[], 3), Err(DecodeError::NoCode));
        assert!(matches!(
            decode_aggregate3(&[1, 2, 3], 3),
            Err(DecodeError::Abi(_))
        ));
    }

    /// `Result3[]` with `n` elements whose offsets all point at one tuple with `len` bytes of data.
    fn aliased(n: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let word = |out: &mut Vec<u8>, v: usize| {
            out.extend_from_slice(&[0u8; 24]);
            out.extend_from_slice(&(v as u64).to_be_bytes());
        };
        word(&mut out, 0x20);
        word(&mut out, n);
        for _ in 0..n {
            word(&mut out, 32 * n);
        }
        word(&mut out, 1); // success
        word(&mut out, 0x40); // returnData offset
        word(&mut out, len);
        out.extend(std::iter::repeat_n(0x11u8, len.div_ceil(32) * 32));
        out
    }

    #[test]
    fn hostile_length_words_never_size_an_allocation() {
        // a huge count or data length: refused before anything is allocated for it
        for (count, len) in [
            (u64::MAX, 32u64),
            (1 << 40, 32),
            (601, u64::MAX),
            (601, 1 << 40),
        ] {
            let mut d = vec![0u8; 64 + 32 * 4];
            d[31] = 0x20;
            d[56..64].copy_from_slice(&count.to_be_bytes());
            d[64 + 31] = 0x20; // first tuple's offset
            d[64 + 32 + 31] = 1;
            d[64 + 64 + 31] = 0x40;
            d[64 + 96 + 24..64 + 128].copy_from_slice(&len.to_be_bytes());
            assert!(decode_aggregate3(&d, 601).is_err(), "{count} {len}");
            assert!(
                decode_aggregate3(&d, count as usize).is_err(),
                "{count} {len}"
            );
        }
        // 600 results sharing one 64 KiB returnData: 37 MiB if decoded leniently; refused
        let n = 600;
        let d = aliased(n, 64 << 10);
        assert!(
            aggregate3Call::abi_decode_returns(&d).is_ok(),
            "lenient alloy copies it {n} times"
        );
        assert!(matches!(decode_aggregate3(&d, n), Err(DecodeError::Abi(_))));
        // a count above the expected one is refused from the head alone
        assert_eq!(
            decode_aggregate3(&aliased(5, 0)[..64], 3),
            Err(DecodeError::CountMismatch {
                expected: 3,
                got: 5
            })
        );
    }

    #[test]
    fn revert_reasons_are_readable() {
        let data = ErrorCall {
            reason: "MockAudioToken: forced revert".into(),
        }
        .abi_encode();
        assert_eq!(
            revert_reason(&data).as_deref(),
            Some("MockAudioToken: forced revert")
        );
        let msg = SubcallFailure::Reverted(data).to_string();
        assert!(
            msg.contains("forced revert") && msg.contains("0x08c379a0"),
            "{msg}"
        );
        assert_eq!(
            SubcallFailure::Reverted(vec![]).to_string(),
            "reverted without data"
        );
        assert_eq!(revert_reason(&[0xde, 0xad]), None);
    }

    #[test]
    fn delegator_lists_round_trip_through_aggregate3() {
        let dm = Address::repeat_byte(0xdd);
        let sps = [
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        ];
        let data = encode_delegator_lists(dm, &sps);
        let calls = aggregate3Call::abi_decode(&data).unwrap().calls;
        assert_eq!(calls.len(), 3);
        for (c, sp) in calls.iter().zip(sps) {
            assert_eq!(c.target, dm);
            assert!(c.allowFailure);
            assert_eq!(&c.callData[..4], &getDelegatorsListCall::SELECTOR);
            assert_eq!(
                getDelegatorsListCall::abi_decode(&c.callData).unwrap().sp,
                sp
            );
        }
        // answers: two delegators, a revert, an empty list
        let two = vec![Address::repeat_byte(7), Address::repeat_byte(8)];
        let answer = vec![
            result(true, getDelegatorsListCall::abi_encode_returns(&two)),
            result(false, vec![]),
            result(
                true,
                getDelegatorsListCall::abi_encode_returns(&Vec::<Address>::new()),
            ),
        ]
        .abi_encode();
        let got = decode_delegator_lists(&answer, 3).unwrap();
        assert_eq!(got[0], Ok(two));
        assert_eq!(got[1], Err(SubcallFailure::Reverted(vec![])));
        assert_eq!(got[2], Ok(vec![]));
        assert_eq!(
            decode_delegator_lists(&answer, 2),
            Err(DecodeError::CountMismatch {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn malformed_delegator_lists_are_failures_not_panics() {
        // a length word far beyond the data, a non-address word, no data, a short word
        let mut huge = vec![0u8; 64];
        huge[31] = 0x20;
        huge[32..64].copy_from_slice(&[0xff; 32]);
        let mut dirty = getDelegatorsListCall::abi_encode_returns(&vec![Address::repeat_byte(7)]);
        dirty[64] = 1; // high bytes of the address word must be zero
        for (data, want_empty) in [
            (huge, false),
            (dirty, false),
            (vec![], true),
            (vec![0u8; 16], false),
        ] {
            let answer = vec![result(true, data)].abi_encode();
            let got = decode_delegator_lists(&answer, 1).unwrap();
            match &got[0] {
                Err(SubcallFailure::Empty) => assert!(want_empty),
                Err(SubcallFailure::Undecodable(_)) => assert!(!want_empty),
                other => panic!("{other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn encoder_matches_alloy_for_any_addresses(
            holders in proptest::collection::vec(any::<[u8; 20]>(), 0..40),
            targets in any::<[[u8; 20]; 4]>(),
        ) {
            let c = Contracts {
                multicall: Address::from(targets[0]),
                token: Address::from(targets[1]),
                staking: Address::from(targets[2]),
                delegate_manager: Address::from(targets[3]),
            };
            let holders: Vec<Address> = holders.into_iter().map(Address::from).collect();
            prop_assert_eq!(encode_chunk(&c, &holders), encode_chunk_alloy(&c, &holders));
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..2048), n in 0usize..700) {
            let _ = decode_aggregate3(&data, n);
            let _ = revert_reason(&data);
            let _ = decode_uint(&Result3 { success: true, returnData: Bytes::from(data.clone()) });
            let _ = SubcallFailure::Reverted(data).to_string();
        }

        #[test]
        fn valid_answers_decode_strictly(values in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..100)), 1..40)) {
            let results: Vec<Result3> = values.iter().map(|(ok, d)| result(*ok, d.clone())).collect();
            let encoded = results.abi_encode();
            prop_assert_eq!(decode_aggregate3(&encoded, results.len()), Ok(results.clone()));
            let mut trailing = encoded.clone();
            trailing.extend_from_slice(&[0xab; 7]);
            prop_assert_eq!(decode_aggregate3(&trailing, results.len()), Ok(results.clone()));
            let wrong = results.len() + 1;
            prop_assert_eq!(
                decode_aggregate3(&encoded, wrong),
                Err(DecodeError::CountMismatch { expected: wrong, got: results.len() })
            );
            // every truncation is an error, never a panic
            for cut in [1usize, 31, 32, 33, encoded.len() / 2] {
                if cut < encoded.len() {
                    prop_assert!(decode_aggregate3(&encoded[..encoded.len() - cut], results.len()).is_err());
                }
            }
        }

        #[test]
        fn mutated_valid_answers_never_panic(values in proptest::collection::vec(any::<[u8; 32]>(), 1..20), flip in any::<(usize, u8)>()) {
            let results: Vec<Result3> = values.iter().map(|v| result(true, v.to_vec())).collect();
            let mut encoded = results.abi_encode();
            let i = flip.0 % encoded.len();
            encoded[i] ^= flip.1;
            let _ = decode_aggregate3(&encoded, values.len());
        }
    }
}
