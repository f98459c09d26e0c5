// SPDX-License-Identifier: Apache-2.0
// Test double for the Audius DelegateManager that emits the real events (eth-contracts
// DelegateManagerV2.sol, and the two V1 events mainnet emitted before the V2 upgrade) with the real
// signatures, indexed arguments included, so their topic0 is mainnet's. The reads the indexer makes:
// `getTotalDelegatorStake(address)` (a delegator's stake over all SPs) and
// `getDelegatorsList(address)` (an SP's current delegators).
//
// Differences from the real contract (a test double): the delegator is passed explicitly instead of
// being msg.sender, undelegation and removal take effect at once (no request / lockup), claimRewards
// shares the rewards pro rata over the SP's total stake with no deployer cut, and nothing is
// access-controlled. Stake moves go through EventStaking, which holds the tokens.
pragma solidity ^0.8.20;

import "./EventStaking.sol";

contract EventDelegateManager {
    // DelegateManagerV2
    event IncreaseDelegatedStake(
        address indexed _delegator, address indexed _serviceProvider, uint256 indexed _increaseAmount);
    event UndelegateStakeRequestEvaluated(
        address indexed _delegator, address indexed _serviceProvider, uint256 indexed _amount);
    event RemoveDelegatorRequestEvaluated(
        address indexed _serviceProvider, address indexed _delegator, uint256 indexed _unstakedAmount);
    event Claim(address indexed _claimer, uint256 indexed _rewards, uint256 indexed _newTotal);
    event Slash(address indexed _target, uint256 indexed _amount, uint256 indexed _newTotal);
    // DelegateManager V1
    event DecreaseDelegatedStake(
        address indexed _delegator, address indexed _serviceProvider, uint256 indexed _decreaseAmount);
    event DelegatorRemoved(
        address indexed _serviceProvider, address indexed _delegator, uint256 indexed _unstakedAmount);

    EventStaking public staking;
    // delegator => SP => stake
    mapping(address => mapping(address => uint256)) private delegated;
    // delegator => stake over all SPs
    mapping(address => uint256) private delegatorTotal;
    // SP => current delegators; position + 1 in that list (0: not in it)
    mapping(address => address[]) private delegators;
    mapping(address => mapping(address => uint256)) private position;

    function setStaking(EventStaking staking_) external {
        staking = staking_;
    }

    function getTotalDelegatorStake(address delegator) external view returns (uint256) {
        return delegatorTotal[delegator];
    }

    function getDelegatorsList(address sp) external view returns (address[] memory) {
        return delegators[sp];
    }

    function getDelegatorStakeForServiceProvider(address delegator, address sp) external view returns (uint256) {
        return delegated[delegator][sp];
    }

    function delegateStake(address delegator, address sp, uint256 amount) public {
        require(amount > 0, "EventDelegateManager: zero amount");
        staking.delegateStakeFor(sp, delegator, amount);
        if (position[sp][delegator] == 0) {
            delegators[sp].push(delegator);
            position[sp][delegator] = delegators[sp].length;
        }
        delegated[delegator][sp] += amount;
        delegatorTotal[delegator] += amount;
        emit IncreaseDelegatedStake(delegator, sp, amount);
    }

    /// Many delegations to one SP in one transaction (one IncreaseDelegatedStake each).
    function delegateStakeMany(address[] calldata delegator, address sp, uint256[] calldata amount) external {
        require(delegator.length == amount.length, "EventDelegateManager: length mismatch");
        for (uint256 i = 0; i < delegator.length; i++) {
            delegateStake(delegator[i], sp, amount[i]);
        }
    }

    function undelegateStake(address delegator, address sp, uint256 amount) external {
        _undelegate(delegator, sp, amount);
        emit UndelegateStakeRequestEvaluated(delegator, sp, amount);
    }

    function undelegateStakeV1(address delegator, address sp, uint256 amount) external {
        _undelegate(delegator, sp, amount);
        emit DecreaseDelegatedStake(delegator, sp, amount);
    }

    function removeDelegator(address sp, address delegator) external {
        uint256 amount = delegated[delegator][sp];
        _undelegate(delegator, sp, amount);
        emit RemoveDelegatorRequestEvaluated(sp, delegator, amount);
    }

    function removeDelegatorV1(address sp, address delegator) external {
        uint256 amount = delegated[delegator][sp];
        _undelegate(delegator, sp, amount);
        emit DelegatorRemoved(sp, delegator, amount);
    }

    /// Rewards for `sp`, shared pro rata over its total stake (own + delegated) before the claim:
    /// each delegator's stake grows by its share, the rest is the SP's own.
    function claimRewards(address sp, uint256 rewards) external {
        uint256 pre = staking.totalStakedFor(sp);
        if (pre > 0) {
            address[] storage list = delegators[sp];
            for (uint256 i = 0; i < list.length; i++) {
                address d = list[i];
                uint256 share = delegated[d][sp] * rewards / pre;
                delegated[d][sp] += share;
                delegatorTotal[d] += share;
            }
        }
        staking.stakeRewards(rewards, sp);
        emit Claim(sp, rewards, staking.totalStakedFor(sp));
    }

    /// Slashes `amount` of the SP's total stake; every delegator's stake shrinks in proportion
    /// (stake * post / pre), as DelegateManagerV2.slash does.
    function slash(uint256 amount, address sp) external {
        uint256 pre = staking.totalStakedFor(sp);
        staking.slash(amount, sp);
        uint256 post = staking.totalStakedFor(sp);
        emit Slash(sp, amount, post);
        address[] storage list = delegators[sp];
        for (uint256 i = 0; i < list.length; i++) {
            address d = list[i];
            uint256 before = delegated[d][sp];
            uint256 kept = before * post / pre;
            delegated[d][sp] = kept;
            delegatorTotal[d] -= before - kept;
        }
    }

    function _undelegate(address delegator, address sp, uint256 amount) internal {
        require(delegated[delegator][sp] >= amount, "EventDelegateManager: undelegate exceeds stake");
        staking.undelegateStakeFor(sp, delegator, amount);
        delegated[delegator][sp] -= amount;
        delegatorTotal[delegator] -= amount;
        if (delegated[delegator][sp] == 0 && position[sp][delegator] != 0) {
            address[] storage list = delegators[sp];
            uint256 i = position[sp][delegator] - 1;
            address last = list[list.length - 1];
            list[i] = last;
            position[sp][last] = i + 1;
            list.pop();
            position[sp][delegator] = 0;
        }
    }
}
