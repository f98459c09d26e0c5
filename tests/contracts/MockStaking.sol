// SPDX-License-Identifier: Apache-2.0
// Test double for the Audius Staking contract: only the read the indexer makes,
// `totalStakedFor(address) returns (uint256)`; setters in MockUintRead.
pragma solidity ^0.8.20;

import "./MockUintRead.sol";

contract MockStaking is MockUintRead {
    constructor() MockUintRead("MockStaking") {}

    function totalStakedFor(address who) external view returns (uint256) {
        return _read(who);
    }
}
