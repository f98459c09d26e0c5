// SPDX-License-Identifier: Apache-2.0
// Test double for the Audius Staking contract that emits the real events (eth-contracts
// Staking.sol: Staked / Unstaked / Slashed, `user` indexed, amount and total in the data) and moves
// real MockAudioToken value: staked tokens are held by this contract, as on mainnet. The read the
// indexer makes is `totalStakedFor(address)`: an SP's own stake plus the stake delegated to it.
//
// `quiet` (a test knob, not in the real contract) lets a test take events away to prove which event
// the follower reacts to: QUIET_TOKEN moves token balances with MockAudioToken.set (no Transfer),
// QUIET_EVENTS emits no Staked / Unstaked / Slashed. The state changes are the same either way.
pragma solidity ^0.8.20;

import "./MockAudioToken.sol";

contract EventStaking {
    uint8 public constant QUIET_TOKEN = 1;
    uint8 public constant QUIET_EVENTS = 2;

    event Staked(address indexed user, uint256 amount, uint256 total);
    event Unstaked(address indexed user, uint256 amount, uint256 total);
    event Slashed(address indexed user, uint256 amount, uint256 total);

    MockAudioToken public token;
    uint8 public quiet;
    mapping(address => uint256) private staked;

    function setToken(MockAudioToken token_) external {
        token = token_;
    }

    function setQuiet(uint8 quiet_) external {
        quiet = quiet_;
    }

    function totalStakedFor(address account) external view returns (uint256) {
        return staked[account];
    }

    /// The SP's own stake: `amount` tokens of `account` go to this contract.
    function stakeFor(address account, uint256 amount) external {
        _moveToken(account, address(this), amount);
        staked[account] += amount;
        _staked(account, amount);
    }

    function unstakeFor(address account, uint256 amount) external {
        _unstake(account, amount);
        _moveToken(address(this), account, amount);
    }

    /// Delegated stake: counted in the SP's account, the tokens come from the delegator.
    function delegateStakeFor(address sp, address delegator, uint256 amount) external {
        _moveToken(delegator, address(this), amount);
        staked[sp] += amount;
        _staked(sp, amount);
    }

    function undelegateStakeFor(address sp, address delegator, uint256 amount) external {
        _unstake(sp, amount);
        _moveToken(address(this), delegator, amount);
    }

    /// Rewards: minted into this contract (no Transfer, as the real mint goes to the staking
    /// contract through the ClaimsManager) and counted in the SP's account.
    function stakeRewards(uint256 amount, address sp) external {
        token.set(address(this), token.balanceOf(address(this)) + amount);
        staked[sp] += amount;
        _staked(sp, amount);
    }

    /// Slash: `amount` of the SP's account is burnt (the tokens go to address(0)).
    function slash(uint256 amount, address sp) external {
        require(staked[sp] >= amount, "EventStaking: slash exceeds stake");
        staked[sp] -= amount;
        _moveToken(address(this), address(0), amount);
        if (quiet & QUIET_EVENTS == 0) {
            emit Slashed(sp, amount, staked[sp]);
        }
    }

    function _unstake(address account, uint256 amount) internal {
        require(staked[account] >= amount, "EventStaking: unstake exceeds stake");
        staked[account] -= amount;
        if (quiet & QUIET_EVENTS == 0) {
            emit Unstaked(account, amount, staked[account]);
        }
    }

    function _staked(address account, uint256 amount) internal {
        if (quiet & QUIET_EVENTS == 0) {
            emit Staked(account, amount, staked[account]);
        }
    }

    function _moveToken(address from, address to, uint256 amount) internal {
        if (quiet & QUIET_TOKEN == 0) {
            token.move(from, to, amount);
            return;
        }
        uint256 have = token.balanceOf(from);
        require(have >= amount, "EventStaking: insufficient token value");
        token.set(from, have - amount);
        token.set(to, token.balanceOf(to) + amount);
    }
}
