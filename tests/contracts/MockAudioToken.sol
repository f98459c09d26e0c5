// SPDX-License-Identifier: Apache-2.0
// Test double for the Audius AUDIO ERC-20 token: only the read the indexer makes,
// `balanceOf(address) returns (uint256)`; setters in MockUintRead.
pragma solidity ^0.8.20;

import "./MockUintRead.sol";

contract MockAudioToken is MockUintRead {
    constructor() MockUintRead("MockAudioToken") {}

    function balanceOf(address who) external view returns (uint256) {
        return _read(who);
    }
}
