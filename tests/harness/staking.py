"""A chain with Audius staking on it: MockAudioToken, EventStaking and EventDelegateManager
(tests/contracts/) and Multicall3 on one anvil, a recording proxy in front of it, and the calls that
make staking events happen (stake, delegate, undelegate, remove a delegator, claim, slash).

The contracts emit the real Audius events (eth-contracts Staking.sol, DelegateManagerV2.sol and the
two V1 events); EVENTS lists their signatures and the construction checks them against the
compiled ABI, so a topic0 computed here is mainnet's.

    s = StakingChain()
    s.fund([d], [10**21]); s.delegate(d, sp, 10**20); s.claim(sp, 10**19)
    s.contracts.independent_total(d)   # the oracle: balanceOf + totalStakedFor + getTotalDelegatorStake
    s.close()

`contracts` and `proxy` have the names harness.follow.point_at() reads.
"""
from __future__ import annotations

from typing import Sequence

from .chain import (Anvil, Contracts, compile_contracts, enc_address, enc_address_array, enc_uint,
                    enc_uint_array, keccak256, load_artifacts, selector, strip0x)
from .rpcproxy import RpcProxy

# name -> (argument types, indexed flags): the real declarations, indexed arguments included
EVENT_DECLS = {
    # AUDIO token (ERC-20)
    "Transfer": (("address", "address", "uint256"), (True, True, False)),
    # Staking.sol
    "Staked": (("address", "uint256", "uint256"), (True, False, False)),
    "Unstaked": (("address", "uint256", "uint256"), (True, False, False)),
    "Slashed": (("address", "uint256", "uint256"), (True, False, False)),
    # DelegateManagerV2.sol
    "IncreaseDelegatedStake": (("address", "address", "uint256"), (True, True, True)),
    "UndelegateStakeRequestEvaluated": (("address", "address", "uint256"), (True, True, True)),
    "RemoveDelegatorRequestEvaluated": (("address", "address", "uint256"), (True, True, True)),
    "Claim": (("address", "uint256", "uint256"), (True, True, True)),
    "Slash": (("address", "uint256", "uint256"), (True, True, True)),
    # DelegateManager V1 (mainnet, before the V2 upgrade)
    "DecreaseDelegatedStake": (("address", "address", "uint256"), (True, True, True)),
    "DelegatorRemoved": (("address", "address", "uint256"), (True, True, True)),
}
EVENTS = {name: f"{name}({','.join(types)})" for name, (types, _ix) in EVENT_DECLS.items()}
TOPICS = {name: "0x" + keccak256(sig.encode()).hex() for name, sig in EVENTS.items()}
# which contract emits which event (the delegate manager's events with the SP / claimer first or second)
EMITTERS = {"Transfer": "MockAudioToken", "Staked": "EventStaking", "Unstaked": "EventStaking",
            "Slashed": "EventStaking"}
EMITTERS.update({n: "EventDelegateManager" for n in EVENTS if n not in EMITTERS})

SEL_GET_DELEGATORS_LIST = selector("getDelegatorsList(address)")
# EventStaking.setQuiet flags (test knobs): no token Transfer / no Staked, Unstaked, Slashed
QUIET_TOKEN, QUIET_EVENTS = 1, 2


def _call(signature: str, args: bytes = b"") -> str:
    return "0x" + selector(signature) + args.hex()


def _words(hexdata: str) -> list[int]:
    raw = bytes.fromhex(strip0x(hexdata))
    return [int.from_bytes(raw[i:i + 32], "big") for i in range(0, len(raw), 32)]


def check_event_abi() -> None:
    """Every event of the two contracts (and the token's Transfer) is declared as EVENT_DECLS says."""
    arts = load_artifacts()
    for name, contract in EMITTERS.items():
        decl = [e for e in arts[contract]["abi"] if e.get("type") == "event" and e.get("name") == name]
        assert len(decl) == 1, f"{contract} declares {name} {len(decl)} times"
        types = tuple(i["type"] for i in decl[0]["inputs"])
        indexed = tuple(bool(i["indexed"]) for i in decl[0]["inputs"])
        assert (types, indexed) == EVENT_DECLS[name], (contract, name, types, indexed)


class StakingChain:
    """anvil + Multicall3 + MockAudioToken + EventStaking + EventDelegateManager + a recording proxy.
    `contracts` (harness.chain.Contracts) points at the token, the staking contract and the delegate
    manager: its independent_total() is the oracle. Every state-changing method returns the receipt
    of its one transaction."""

    def __init__(self, anvil: Anvil | None = None):
        self.anvil = anvil or Anvil()
        self.anvil.start()
        self.proxy: RpcProxy | None = None
        try:
            self.anvil.install_multicall3()
            compile_contracts()
            check_event_abi()
            self.token = self.anvil.deploy("MockAudioToken")
            self.staking = self.anvil.deploy("EventStaking")
            self.delegate_manager = self.anvil.deploy("EventDelegateManager")
            self.anvil.transact(self.staking, _call("setToken(address)", enc_address(self.token)))
            self.anvil.transact(self.delegate_manager, _call("setStaking(address)", enc_address(self.staking)))
            self.contracts = Contracts(self.anvil, self.token, self.staking, self.delegate_manager)
            self.proxy = RpcProxy(self.anvil.url).start()
        except BaseException:
            self.close()
            raise

    @property
    def addresses(self) -> list[str]:
        """[token, staking, delegate manager], lowercase: the follower's eth_getLogs address list."""
        return [self.token, self.staking, self.delegate_manager]

    def close(self) -> None:
        try:
            if self.proxy is not None:
                self.proxy.stop()
        finally:
            self.anvil.destroy()

    # -- token -----------------------------------------------------------------------------
    def fund(self, wallets: Sequence[str], amounts: Sequence[int]) -> None:
        """Sets the token balances (MockAudioToken.setMany: no Transfer event)."""
        self.contracts.set_values(wallets, token=amounts)

    def set_quiet(self, token: bool = False, events: bool = False) -> dict:
        """EventStaking's test knobs: token=True moves balances without a Transfer, events=True emits
        no Staked / Unstaked / Slashed. Both off is the real behaviour."""
        flags = (QUIET_TOKEN if token else 0) | (QUIET_EVENTS if events else 0)
        return self.anvil.transact(self.staking, _call("setQuiet(uint8)", enc_uint(flags)))

    # -- staking ---------------------------------------------------------------------------
    def stake(self, sp: str, amount: int) -> dict:
        """The SP's own stake (Staked(sp))."""
        return self.anvil.transact(self.staking, _call("stakeFor(address,uint256)",
                                                       enc_address(sp) + enc_uint(amount)))

    def unstake(self, sp: str, amount: int) -> dict:
        return self.anvil.transact(self.staking, _call("unstakeFor(address,uint256)",
                                                       enc_address(sp) + enc_uint(amount)))

    def slash_stake(self, sp: str, amount: int) -> dict:
        """Staking.slash alone (Slashed(sp)); the delegate manager's books are not touched."""
        return self.anvil.transact(self.staking, _call("slash(uint256,address)", enc_uint(amount) + enc_address(sp)))

    # -- delegate manager ------------------------------------------------------------------
    def delegate(self, delegator: str, sp: str, amount: int) -> dict:
        """IncreaseDelegatedStake(delegator, sp, amount) (+ Staked(sp) and a Transfer unless quiet)."""
        return self.anvil.transact(self.delegate_manager, _call(
            "delegateStake(address,address,uint256)", enc_address(delegator) + enc_address(sp) + enc_uint(amount)))

    def delegate_many(self, delegators: Sequence[str], sp: str, amounts: Sequence[int], per_tx: int = 50) -> list[dict]:
        """Many delegations to one SP, `per_tx` per transaction (one IncreaseDelegatedStake each)."""
        assert len(delegators) == len(amounts)
        out = []
        for i in range(0, len(delegators), per_tx):
            ds, am = list(delegators[i:i + per_tx]), list(amounts[i:i + per_tx])
            # (address[] delegator, address sp, uint256[] amount): two dynamic arguments
            head = 3 * 32
            args = enc_uint(head) + enc_address(sp) + enc_uint(head + 32 + 32 * len(ds)) + \
                enc_address_array(ds) + enc_uint_array(am)
            out.append(self.anvil.transact(self.delegate_manager, _call(
                "delegateStakeMany(address[],address,uint256[])", args)))
        return out

    def undelegate(self, delegator: str, sp: str, amount: int, v1: bool = False) -> dict:
        """UndelegateStakeRequestEvaluated (V1: DecreaseDelegatedStake)(delegator, sp, amount)."""
        name = "undelegateStakeV1" if v1 else "undelegateStake"
        return self.anvil.transact(self.delegate_manager, _call(
            f"{name}(address,address,uint256)", enc_address(delegator) + enc_address(sp) + enc_uint(amount)))

    def remove(self, sp: str, delegator: str, v1: bool = False) -> dict:
        """RemoveDelegatorRequestEvaluated (V1: DelegatorRemoved)(sp, delegator, all its stake)."""
        name = "removeDelegatorV1" if v1 else "removeDelegator"
        return self.anvil.transact(self.delegate_manager, _call(
            f"{name}(address,address)", enc_address(sp) + enc_address(delegator)))

    def claim(self, sp: str, rewards: int) -> dict:
        """Claim(sp, rewards, newTotal): rewards shared pro rata by the SP and its delegators."""
        return self.anvil.transact(self.delegate_manager, _call(
            "claimRewards(address,uint256)", enc_address(sp) + enc_uint(rewards)))

    def slash(self, sp: str, amount: int) -> dict:
        """Slash(sp, amount, newTotal): the SP's stake and every delegator's shrink in proportion."""
        return self.anvil.transact(self.delegate_manager, _call(
            "slash(uint256,address)", enc_uint(amount) + enc_address(sp)))

    # -- reads -----------------------------------------------------------------------------
    def delegators_of(self, sp: str) -> list[str]:
        """getDelegatorsList(sp), by a plain eth_call."""
        w = _words(self.anvil.call(self.delegate_manager, "0x" + SEL_GET_DELEGATORS_LIST + enc_address(sp).hex()))
        n = w[w[0] // 32]
        base = w[0] // 32 + 1
        return ["0x" + x.to_bytes(32, "big")[12:].hex() for x in w[base:base + n]]

    def delegated(self, delegator: str, sp: str) -> int:
        out = self.anvil.call(self.delegate_manager, _call("getDelegatorStakeForServiceProvider(address,address)",
                                                            enc_address(delegator) + enc_address(sp)))
        return _words(out)[0]
