// SPDX-License-Identifier: Apache-2.0
// Test double for the Audius AUDIO ERC-20 token: the read the indexer makes,
// `balanceOf(address) returns (uint256)`, setters in MockUintRead, and `move`, which moves value
// between two addresses and emits the ERC-20 `Transfer` event the event path follows.
pragma solidity ^0.8.20;

import "./MockUintRead.sol";

contract MockAudioToken is MockUintRead {
    constructor() MockUintRead("MockAudioToken") {}

    event Transfer(address indexed from, address indexed to, uint256 value);

    function balanceOf(address who) external view returns (uint256) {
        return _read(who);
    }

    /// Moves `value` from `from` to `to` (no allowance checks: a test double) and emits Transfer.
    function move(address from, address to, uint256 value) external {
        _move(from, to, value);
        emit Transfer(from, to, value);
    }
}
