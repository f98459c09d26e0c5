// SPDX-License-Identifier: Apache-2.0
// Shared body of the three test doubles (MockAudioToken, MockStaking, MockDelegateManager): a
// `uint256` per address read by one view function, plus setters the integration tests use to shape
// the answers (values, forced reverts, empty/short return data, bare reverts, custom errors).
pragma solidity ^0.8.20;

abstract contract MockUintRead {
    // How the read answers for one address.
    uint8 public constant MODE_NORMAL = 0;
    uint8 public constant MODE_REVERT = 1;       // revert with Error(string) "<name>: forced revert"
    uint8 public constant MODE_EMPTY = 2;        // succeed with zero bytes of return data
    uint8 public constant MODE_SHORT = 3;        // succeed with 16 bytes of return data
    uint8 public constant MODE_BARE_REVERT = 4;  // revert with no data
    uint8 public constant MODE_CUSTOM_ERROR = 5; // revert with custom error Forced(address)

    error Forced(address who);

    mapping(address => uint256) private values;
    mapping(address => uint8) public modeOf;
    string private name;

    constructor(string memory name_) {
        name = name_;
    }

    function _read(address who) internal view returns (uint256) {
        uint8 m = modeOf[who];
        if (m == MODE_NORMAL) {
            return values[who];
        }
        if (m == MODE_REVERT) {
            revert(string.concat(name, ": forced revert"));
        }
        if (m == MODE_EMPTY) {
            assembly {
                return(0, 0)
            }
        }
        if (m == MODE_SHORT) {
            assembly {
                mstore(0, 0x00000000000000000000000000000000ffffffffffffffffffffffffffffffff)
                return(0, 16)
            }
        }
        if (m == MODE_BARE_REVERT) {
            revert();
        }
        revert Forced(who);
    }

    function _move(address from, address to, uint256 value) internal {
        require(values[from] >= value, string.concat(name, ": insufficient value"));
        values[from] -= value;
        values[to] += value;
    }

    function set(address who, uint256 value) external {
        values[who] = value;
    }

    function setMany(address[] calldata who, uint256[] calldata value) external {
        require(who.length == value.length, string.concat(name, ": length mismatch"));
        for (uint256 i = 0; i < who.length; i++) {
            values[who[i]] = value[i];
        }
    }

    function setRevert(address who, bool flag) external {
        modeOf[who] = flag ? MODE_REVERT : MODE_NORMAL;
    }

    function setRevertMany(address[] calldata who, bool flag) external {
        uint8 m = flag ? MODE_REVERT : MODE_NORMAL;
        for (uint256 i = 0; i < who.length; i++) {
            modeOf[who[i]] = m;
        }
    }

    /// Any MODE_* above (MODE_NORMAL restores the stored value).
    function setMode(address who, uint8 mode) external {
        require(mode <= MODE_CUSTOM_ERROR, string.concat(name, ": bad mode"));
        modeOf[who] = mode;
    }

    function setModeMany(address[] calldata who, uint8 mode) external {
        require(mode <= MODE_CUSTOM_ERROR, string.concat(name, ": bad mode"));
        for (uint256 i = 0; i < who.length; i++) {
            modeOf[who[i]] = mode;
        }
    }
}
