// SPDX-License-Identifier: Apache-2.0
// Test double for the Audius DelegateManager contract: only the read the indexer makes,
// `getTotalDelegatorStake(address) returns (uint256)`; setters in MockUintRead.
pragma solidity ^0.8.20;

import "./MockUintRead.sol";

contract MockDelegateManager is MockUintRead {
    constructor() MockUintRead("MockDelegateManager") {}

    function getTotalDelegatorStake(address who) external view returns (uint256) {
        return _read(who);
    }
}
