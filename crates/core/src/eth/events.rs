//! The on-chain changes to a wallet's total (`balanceOf + totalStakedFor + getTotalDelegatorStake`)
//! that the event path follows, and which wallets each one changes.
//!
//! The Go eth-indexer follows AUDIO `Transfer` only. Staking, delegation, reward claims and
//! slashes change totals without a `Transfer` that names the wallet, so they are followed here
//! too, in the same `eth_getLogs` (one request per range: an address list and a topic0 list). The
//! signatures are those of Audius's eth-contracts (`AudiusProject/audius-protocol`,
//! `eth-contracts/contracts/Staking.sol`, `DelegateManagerV2.sol`, and `DelegateManager.sol`, the
//! implementation behind the same proxy before the V2 upgrade). Events come from the configured
//! addresses, which are the proxies on mainnet.
//!
//! | contract | event | wallets re-read |
//! |---|---|---|
//! | token | `Transfer(from, to, value)` | from, to |
//! | Staking | `Staked` / `Unstaked` / `Slashed(user, amount, total)` | user (the SP) |
//! | DelegateManager | `IncreaseDelegatedStake` / `UndelegateStakeRequestEvaluated(delegator, sp, amount)` | delegator, SP |
//! | DelegateManager | `RemoveDelegatorRequestEvaluated(sp, delegator, amount)` | SP, delegator |
//! | DelegateManager (V1) | `DecreaseDelegatedStake(delegator, sp, amount)`, `DelegatorRemoved(sp, delegator, amount)` | both |
//! | DelegateManager | `Claim(claimer, rewards, newTotal)`, `Slash(target, amount, newTotal)` | the SP **and every delegator of the SP** |
//!
//! A claim or a slash changes every delegator's `getTotalDelegatorStake`, and no event names them:
//! their list comes from `getDelegatorsList(sp)` on the DelegateManager (`abi::encode_delegator_lists`).

use alloy_primitives::{keccak256, Address, B256};
use std::collections::HashMap;

use super::logs::{Log, LogQuery};

/// The three contracts whose logs are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub token: Address,
    pub staking: Address,
    pub delegate_manager: Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emitter {
    Token,
    Staking,
    DelegateManager,
}

/// One followed event: who emits it, its signature (topic0 = keccak256 of it), the topics that
/// hold the wallets it changes, and whether the delegators of the first of them change too.
struct Event {
    emitter: Emitter,
    signature: &'static str,
    wallets: &'static [usize],
    delegators: bool,
}

const fn ev(
    emitter: Emitter,
    signature: &'static str,
    wallets: &'static [usize],
    delegators: bool,
) -> Event {
    Event {
        emitter,
        signature,
        wallets,
        delegators,
    }
}

use Emitter::*;

const EVENTS: [Event; 11] = [
    ev(Token, "Transfer(address,address,uint256)", &[1, 2], false),
    ev(Staking, "Staked(address,uint256,uint256)", &[1], false),
    ev(Staking, "Unstaked(address,uint256,uint256)", &[1], false),
    ev(Staking, "Slashed(address,uint256,uint256)", &[1], false),
    ev(
        DelegateManager,
        "IncreaseDelegatedStake(address,address,uint256)",
        &[1, 2],
        false,
    ),
    ev(
        DelegateManager,
        "UndelegateStakeRequestEvaluated(address,address,uint256)",
        &[1, 2],
        false,
    ),
    ev(
        DelegateManager,
        "RemoveDelegatorRequestEvaluated(address,address,uint256)",
        &[1, 2],
        false,
    ),
    ev(
        DelegateManager,
        "DecreaseDelegatedStake(address,address,uint256)",
        &[1, 2],
        false,
    ),
    ev(
        DelegateManager,
        "DelegatorRemoved(address,address,uint256)",
        &[1, 2],
        false,
    ),
    ev(
        DelegateManager,
        "Claim(address,uint256,uint256)",
        &[1],
        true,
    ),
    ev(
        DelegateManager,
        "Slash(address,uint256,uint256)",
        &[1],
        true,
    ),
];

/// keccak256("Transfer(address,address,uint256)"): the ERC-20 event.
pub fn transfer_topic() -> B256 {
    keccak256(EVENTS[0].signature.as_bytes())
}

/// The signatures of every followed event, in the order of `EVENTS` (docs, tests).
pub fn signatures() -> impl Iterator<Item = &'static str> {
    EVENTS.iter().map(|e| e.signature)
}

impl Watched {
    fn address(&self, e: Emitter) -> Address {
        match e {
            Token => self.token,
            Staking => self.staking,
            DelegateManager => self.delegate_manager,
        }
    }

    /// The one `eth_getLogs` of `[from, to]`: the three contracts (each once) and every followed
    /// event's topic0.
    pub fn query(&self, from: u64, to: u64) -> LogQuery {
        let mut addresses = Vec::with_capacity(3);
        for a in [self.token, self.staking, self.delegate_manager] {
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
        let mut topics0: Vec<B256> = Vec::with_capacity(EVENTS.len());
        for e in &EVENTS {
            let t = keccak256(e.signature.as_bytes());
            if !topics0.contains(&t) {
                topics0.push(t);
            }
        }
        LogQuery {
            from,
            to,
            addresses,
            topics0,
        }
    }
}

/// What the logs of a range change: wallets to read (first-seen order, each with the highest
/// block it changed in) and the SPs whose delegators must be read too (claims and slashes; each
/// with its highest block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    pub wallets: Vec<(Address, u64)>,
    pub delegators_of: Vec<(Address, u64)>,
}

/// First-seen order with the highest block per address.
#[derive(Default)]
struct Highest {
    order: Vec<Address>,
    best: HashMap<Address, u64>,
}

impl Highest {
    fn see(&mut self, a: Address, block: u64) {
        match self.best.get_mut(&a) {
            Some(b) => *b = (*b).max(block),
            None => {
                self.best.insert(a, block);
                self.order.push(a);
            }
        }
    }

    fn into_vec(self) -> Vec<(Address, u64)> {
        let best = self.best;
        self.order.into_iter().map(|a| (a, best[&a])).collect()
    }
}

/// The wallets the logs change (see the module table). A log counts when its emitter and topic0
/// are those of a followed event; one without the topics its event names is skipped, as the Go
/// eth-indexer skips a `Transfer` with fewer than three topics. Removed logs are ignored.
pub fn affected(logs: &[Log], w: &Watched) -> Affected {
    let topics: Vec<B256> = EVENTS
        .iter()
        .map(|e| keccak256(e.signature.as_bytes()))
        .collect();
    let mut wallets = Highest::default();
    let mut sps = Highest::default();
    for log in logs.iter().filter(|l| !l.removed) {
        for (e, topic) in EVENTS.iter().zip(&topics) {
            if log.topics.first() != Some(topic) || log.address != w.address(e.emitter) {
                continue;
            }
            let needed = e.wallets.iter().copied().max().unwrap_or(0);
            if log.topics.len() <= needed {
                continue;
            }
            for &i in e.wallets {
                wallets.see(Address::from_word(log.topics[i]), log.block);
            }
            if e.delegators {
                sps.see(Address::from_word(log.topics[e.wallets[0]]), log.block);
            }
        }
    }
    Affected {
        wallets: wallets.into_vec(),
        delegators_of: sps.into_vec(),
    }
}

/// The wallets to read for a range: `affected.wallets`, then each listed delegator of an SP in
/// `affected.delegators_of` at the block of that SP's claim or slash (a wallet named twice keeps
/// its highest block). `lists[i]` are the delegators of `affected.delegators_of[i]`.
pub fn with_delegators(affected: &Affected, lists: &[Vec<Address>]) -> Vec<(Address, u64)> {
    let mut all = Highest::default();
    for &(a, b) in &affected.wallets {
        all.see(a, b);
    }
    for (&(_, block), list) in affected.delegators_of.iter().zip(lists) {
        for &d in list {
            all.see(d, block);
        }
    }
    all.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    fn watched() -> Watched {
        Watched {
            token: a(0xa0),
            staking: a(0xb0),
            delegate_manager: a(0xc0),
        }
    }

    fn topic(sig: &str) -> B256 {
        keccak256(sig.as_bytes())
    }

    fn log(emitter: Address, sig: &str, block: u64, named: &[Address]) -> Log {
        let mut topics = vec![topic(sig)];
        topics.extend(named.iter().map(|x| x.into_word()));
        Log {
            address: emitter,
            block,
            topics,
            removed: false,
        }
    }

    #[test]
    fn topics_are_the_real_ones() {
        // topic0 of the ERC-20 Transfer and of Audius's IncreaseDelegatedStake as published in
        // the Go bindings of eth-contracts (FilterIncreaseDelegatedStake).
        assert_eq!(
            format!("{:#x}", transfer_topic()),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
        assert_eq!(
            format!(
                "{:#x}",
                topic("IncreaseDelegatedStake(address,address,uint256)")
            ),
            "0x82d701855f3ac4a098fc0249261c5e06d1050d23c8aa351fae8abefc2a464fda"
        );
    }

    #[test]
    fn one_query_names_the_three_contracts_and_every_event() {
        let q = watched().query(5, 9);
        assert_eq!((q.from, q.to), (5, 9));
        assert_eq!(q.addresses, vec![a(0xa0), a(0xb0), a(0xc0)]);
        assert_eq!(q.topics0.len(), EVENTS.len());
        assert_eq!(q.topics0[0], transfer_topic());
        // one contract configured twice is asked once
        let mut w = watched();
        w.delegate_manager = w.staking;
        assert_eq!(w.query(1, 1).addresses, vec![a(0xa0), a(0xb0)]);
    }

    #[test]
    fn each_event_names_its_wallets() {
        let w = watched();
        let (sp, del, other) = (a(1), a(2), a(3));
        let cases: Vec<(Log, Vec<Address>, Vec<Address>)> = vec![
            (
                log(
                    w.token,
                    "Transfer(address,address,uint256)",
                    7,
                    &[del, other],
                ),
                vec![del, other],
                vec![],
            ),
            (
                log(w.staking, "Staked(address,uint256,uint256)", 7, &[sp]),
                vec![sp],
                vec![],
            ),
            (
                log(w.staking, "Unstaked(address,uint256,uint256)", 7, &[sp]),
                vec![sp],
                vec![],
            ),
            (
                log(w.staking, "Slashed(address,uint256,uint256)", 7, &[sp]),
                vec![sp],
                vec![],
            ),
            (
                log(
                    w.delegate_manager,
                    "IncreaseDelegatedStake(address,address,uint256)",
                    7,
                    &[del, sp],
                ),
                vec![del, sp],
                vec![],
            ),
            (
                log(
                    w.delegate_manager,
                    "UndelegateStakeRequestEvaluated(address,address,uint256)",
                    7,
                    &[del, sp],
                ),
                vec![del, sp],
                vec![],
            ),
            (
                log(
                    w.delegate_manager,
                    "RemoveDelegatorRequestEvaluated(address,address,uint256)",
                    7,
                    &[sp, del],
                ),
                vec![sp, del],
                vec![],
            ),
            (
                log(
                    w.delegate_manager,
                    "DecreaseDelegatedStake(address,address,uint256)",
                    7,
                    &[del, sp],
                ),
                vec![del, sp],
                vec![],
            ),
            (
                log(
                    w.delegate_manager,
                    "DelegatorRemoved(address,address,uint256)",
                    7,
                    &[sp, del],
                ),
                vec![sp, del],
                vec![],
            ),
            (
                log(
                    w.delegate_manager,
                    "Claim(address,uint256,uint256)",
                    7,
                    &[sp],
                ),
                vec![sp],
                vec![sp],
            ),
            (
                log(
                    w.delegate_manager,
                    "Slash(address,uint256,uint256)",
                    7,
                    &[sp],
                ),
                vec![sp],
                vec![sp],
            ),
        ];
        assert_eq!(cases.len(), EVENTS.len());
        for (l, wallets, sps) in cases {
            let got = affected(std::slice::from_ref(&l), &w);
            let want_w: Vec<(Address, u64)> = wallets.into_iter().map(|x| (x, 7)).collect();
            let want_s: Vec<(Address, u64)> = sps.into_iter().map(|x| (x, 7)).collect();
            assert_eq!(got.wallets, want_w, "{:?}", l.topics[0]);
            assert_eq!(got.delegators_of, want_s, "{:?}", l.topics[0]);
        }
    }

    #[test]
    fn an_event_from_the_wrong_contract_or_short_of_topics_is_skipped() {
        let w = watched();
        let logs = [
            // a Staked from the token, a Transfer from the DelegateManager: not ours
            log(w.token, "Staked(address,uint256,uint256)", 3, &[a(1)]),
            log(
                w.delegate_manager,
                "Transfer(address,address,uint256)",
                3,
                &[a(1), a(2)],
            ),
            // non-indexed arguments: the wallets are not in the topics
            log(w.token, "Transfer(address,address,uint256)", 3, &[a(1)]),
            log(w.delegate_manager, "Claim(address,uint256,uint256)", 3, &[]),
        ];
        assert_eq!(affected(&logs, &w), Affected::default());
    }

    #[test]
    fn wallets_keep_first_seen_order_and_their_highest_block() {
        let w = watched();
        let t = "Transfer(address,address,uint256)";
        let mut logs = vec![
            log(w.token, t, 5, &[a(1), a(2)]),
            log(w.token, t, 9, &[a(2), a(3)]),
            log(w.token, t, 7, &[a(3), a(1)]),
            log(
                w.delegate_manager,
                "Claim(address,uint256,uint256)",
                6,
                &[a(4)],
            ),
            log(w.staking, "Staked(address,uint256,uint256)", 8, &[a(4)]),
            log(
                w.delegate_manager,
                "Slash(address,uint256,uint256)",
                4,
                &[a(4)],
            ),
        ];
        logs.push(Log {
            removed: true,
            block: 11,
            ..logs[0].clone()
        });
        let got = affected(&logs, &w);
        assert_eq!(
            got.wallets,
            vec![(a(1), 7), (a(2), 9), (a(3), 9), (a(4), 8)]
        );
        assert_eq!(got.delegators_of, vec![(a(4), 6)]);
    }

    #[test]
    fn delegators_are_read_at_their_sps_event_block() {
        let aff = Affected {
            wallets: vec![(a(1), 5), (a(9), 12)],
            delegators_of: vec![(a(1), 5), (a(2), 8)],
        };
        let lists = vec![vec![a(3), a(9)], vec![a(3), a(4)]];
        assert_eq!(
            with_delegators(&aff, &lists),
            vec![(a(1), 5), (a(9), 12), (a(3), 8), (a(4), 8)]
        );
        assert_eq!(with_delegators(&aff, &[]), aff.wallets);
    }

    proptest! {
        /// Every wallet a followed event names is read, at the highest block it was named in, and
        /// nothing else is (the set is exactly the named wallets; none is dropped or invented).
        #[test]
        fn the_read_set_is_exactly_the_named_wallets(
            picks in proptest::collection::vec((0usize..EVENTS.len(), 0u8..6, 0u8..6, 1u64..50), 0..40)
        ) {
            let w = watched();
            let mut logs = Vec::new();
            let mut want: HashMap<Address, u64> = HashMap::new();
            for (e, x, y, block) in picks {
                let ev = &EVENTS[e];
                let named = [a(x + 1), a(y + 1)];
                logs.push(log(w.address(ev.emitter), ev.signature, block, &named[..ev.wallets.len()]));
                for &i in ev.wallets {
                    let b = want.entry(named[i - 1]).or_insert(0);
                    *b = (*b).max(block);
                }
            }
            let got = affected(&logs, &w);
            let got_map: HashMap<Address, u64> = got.wallets.iter().copied().collect();
            prop_assert_eq!(got_map.len(), got.wallets.len());
            prop_assert_eq!(got_map, want);
        }
    }
}
