//! Parsing and normalising wallet strings.
//!
//! Accepted: `0x`/`0X` followed by exactly 40 hex digits, in any case. Mixed case is *not* checked
//! against EIP-55, on purpose: the Go eth-indexer (go-ethereum's `HexToAddress`) never checked it and real
//! Audius data does not always pass it — Audius's own config spells the AUDIO token
//! `0x18aAA7115705e8be94bfFEbDE57Af9BFc265B998`, whose checksum is wrong (`…FFEBDE…`). Refusing such
//! values would break the sweep on data the Go eth-indexer handled. Whitespace is never trimmed:
//! `' 0xab…'` is refused, because a DBA passing it has a bug upstream worth seeing.
//! The normal form is lowercase `0x` + 40 hex, which is what `eth_wallet_balances.wallet` stores.

use alloy_primitives::Address;
use std::fmt;

/// Why a wallet string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    MissingPrefix,
    WrongLength(usize),
    NotHex(char),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::MissingPrefix => write!(f, "must start with 0x"),
            AddressError::WrongLength(n) => {
                write!(f, "has {n} hex digits after 0x, expected 40")
            }
            AddressError::NotHex(c) => write!(f, "contains non-hex character {c:?}"),
        }
    }
}

impl std::error::Error for AddressError {}

/// Parses a wallet string into an address (see module docs for what is accepted).
pub fn parse_address(s: &str) -> Result<Address, AddressError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(AddressError::MissingPrefix)?;
    // bytes, not chars: the common case (42 ASCII bytes) has no UTF-8 decoding to do
    if let Some(at) = digits.bytes().position(|b| !b.is_ascii_hexdigit()) {
        let c = digits[at..].chars().next().unwrap_or_default();
        return Err(AddressError::NotHex(c));
    }
    if digits.len() != 40 {
        return Err(AddressError::WrongLength(digits.len()));
    }
    let mut bytes = [0u8; 20];
    for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
        bytes[i] = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
    }
    Ok(Address::from(bytes))
}

/// True when `s` is already the stored form (`normalize`'s output: lowercase `0x` + 40 hex), checked
/// without building that form.
pub fn is_normal_form(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 42
        && b.starts_with(b"0x")
        && b[2..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Lowercase `0x` + 40 hex: the form stored in `eth_wallet_balances.wallet`.
pub fn normalize(addr: &Address) -> String {
    format!("{addr:#x}")
}

/// EIP-55 checksummed form (`0x` + mixed-case hex).
#[cfg(test)]
pub fn to_checksum(addr: &Address) -> String {
    let lower = format!("{addr:x}");
    format!("0x{}", checksum_digits(&lower))
}

#[cfg(test)]
fn checksum_digits(lower40: &str) -> String {
    let hash = alloy_primitives::keccak256(lower40.as_bytes());
    lower40
        .char_indices()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => unreachable!("validated as hex"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // EIP-55 test vectors from the EIP.
    const VECTORS: &[&str] = &[
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn checksummed_vectors_round_trip() {
        for v in VECTORS {
            let a = parse_address(v).unwrap();
            assert_eq!(to_checksum(&a), *v);
            assert_eq!(normalize(&a), v.to_ascii_lowercase());
        }
    }

    #[test]
    fn upper_and_lower_accepted() {
        let v = VECTORS[0];
        let upper = format!("0X{}", &v[2..].to_ascii_uppercase());
        let lower = v.to_ascii_lowercase();
        assert_eq!(
            parse_address(&upper).unwrap(),
            parse_address(&lower).unwrap()
        );
    }

    #[test]
    fn bad_inputs_refused_with_reason() {
        // A wrong EIP-55 checksum is accepted (see module docs): Audius's AUDIO address has one.
        let audio = parse_address("0x18aAA7115705e8be94bfFEbDE57Af9BFc265B998").unwrap();
        assert_ne!(
            to_checksum(&audio),
            "0x18aAA7115705e8be94bfFEbDE57Af9BFc265B998"
        );
        assert_eq!(
            normalize(&audio),
            "0x18aaa7115705e8be94bffebde57af9bfc265b998"
        );
        assert_eq!(
            parse_address("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(AddressError::MissingPrefix)
        );
        assert_eq!(parse_address("0x1234"), Err(AddressError::WrongLength(4)));
        assert_eq!(
            parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed00"),
            Err(AddressError::WrongLength(42))
        );
        assert_eq!(
            parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg"),
            Err(AddressError::NotHex('g'))
        );
        assert_eq!(
            parse_address(" 0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            Err(AddressError::MissingPrefix)
        );
        assert_eq!(
            parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae "),
            Err(AddressError::NotHex(' '))
        );
        assert_eq!(parse_address(""), Err(AddressError::MissingPrefix));
    }

    proptest! {
        #[test]
        fn any_string_never_panics(s in ".{0,64}") {
            let _ = parse_address(&s);
        }

        #[test]
        fn normalised_and_checksummed_forms_parse_back(bytes in proptest::array::uniform20(any::<u8>())) {
            let a = Address::from(bytes);
            prop_assert_eq!(parse_address(&normalize(&a)).unwrap(), a);
            prop_assert_eq!(parse_address(&to_checksum(&a)).unwrap(), a);
        }

        #[test]
        fn is_normal_form_agrees_with_normalize(s in "(0[xX])?[0-9a-fA-FgG ]{38,42}") {
            let expected = parse_address(&s).map(|a| normalize(&a) == s).unwrap_or(false);
            prop_assert_eq!(is_normal_form(&s), expected);
        }

        #[test]
        fn the_normal_form_is_recognised(bytes in proptest::array::uniform20(any::<u8>())) {
            let a = Address::from(bytes);
            prop_assert!(is_normal_form(&normalize(&a)));
            prop_assert_eq!(is_normal_form(&to_checksum(&a)), normalize(&a) == to_checksum(&a));
        }
    }
}
