//! The seed's incremental Phase 3 challenge processors (m, r, rv, rd), in the database.
//!
//! Each processor re-derives `user_challenges` rows from the `user_events` rows that moved past
//! its checkpoint (`indexing_checkpoints`, key `challenges:<id>:last_blocknumber`), as the Go job
//! `jobs/challenges/user_event_challenges.go` did (reference §4). Two deliberate improvements:
//!
//! - **No skipped rows.** The seed resumes from a block number alone, so a block holding more
//!   rows than one batch loses the rest (its high-water rule jumps past the block). We resume from
//!   a `(blocknumber, id)` position stored next to the checkpoint; `indexing_checkpoints` gets the
//!   same values as the seed's rule whenever it would not skip.
//! - **The referrer-verification gap closed.** `r`/`rv` depend on the referrer's current
//!   `users.is_verified`; a second dirty scan over `users` rows past their own position re-derives
//!   every pair those referrers referred.
//!
//! The pure part (no pgrx): processor definitions, specifiers, amounts, the high-water rule and
//! the resume decision. The SPI glue is `src/challenges/run.rs` of the extension crate.

/// The four Phase 3 processors, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processor {
    /// Mobile install: one current `is_mobile_user` row completes `m` for that user.
    MobileInstall,
    /// Referral with an unverified referrer: completes `r` for the referrer.
    Referral,
    /// Referral with a verified referrer: completes `rv` for the referrer.
    VerifiedReferral,
    /// Referred: completes `rd` for the referred user, regardless of verification.
    Referred,
}

pub const ALL: [Processor; 4] = [
    Processor::MobileInstall,
    Processor::Referral,
    Processor::VerifiedReferral,
    Processor::Referred,
];

/// Steps of every Phase 3 challenge as the seed passes them (`current = step = 1`).
pub const STEP: i32 = 1;

impl Processor {
    pub fn id(self) -> &'static str {
        match self {
            Processor::MobileInstall => "m",
            Processor::Referral => "r",
            Processor::VerifiedReferral => "rv",
            Processor::Referred => "rd",
        }
    }

    /// The `indexing_checkpoints.tablename` of this processor.
    pub fn checkpoint_key(self) -> String {
        format!("challenges:{}:last_blocknumber", self.id())
    }

    /// `Some(verified)` for the processors that depend on the referrer's verification.
    pub fn referrer_verified(self) -> Option<bool> {
        match self {
            Processor::Referral => Some(false),
            Processor::VerifiedReferral => Some(true),
            _ => None,
        }
    }

    /// The recipient and specifier of one derived `(referred, referrer)` pair (m: `referrer` unused).
    pub fn completion(self, user: i32, referrer: i32) -> (i32, String) {
        match self {
            Processor::MobileInstall => (user, specifier_from_user_id(user)),
            Processor::Referral | Processor::VerifiedReferral => (
                referrer,
                format!(
                    "{}:{}",
                    specifier_from_user_id(referrer),
                    specifier_from_user_id(user)
                ),
            ),
            Processor::Referred => (
                user,
                format!(
                    "{}:{}",
                    specifier_from_user_id(user),
                    specifier_from_user_id(referrer)
                ),
            ),
        }
    }
}

/// The seed's `SpecifierFromUserID`: lowercase hex, no `0x`, no padding (Go `%x` of an int, so a
/// negative id keeps its sign: `-1f`).
pub fn specifier_from_user_id(id: i32) -> String {
    if id < 0 {
        format!("-{:x}", -(id as i64))
    } else {
        format!("{id:x}")
    }
}

/// The seed's `AmountInt`: `fmt.Sscanf(amount, "%d", &n)`, 0 on error. Leading white space is
/// skipped, an optional sign and decimal digits are read, anything after them is ignored; no
/// digits or an overflow of a 64-bit int is an error.
pub fn amount_int(amount: &str) -> i64 {
    let s = amount.trim_start_matches([' ', '\t', '\r', '\n']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return 0;
    }
    let text = format!("{}{}", if negative { "-" } else { "" }, &digits[..end]);
    text.parse::<i64>().unwrap_or(0)
}

/// `UpsertUserChallenge`'s completion test.
pub fn is_complete(current: i32, step: i32) -> bool {
    step > 0 && current >= step
}

/// The checkpoint value after a scan of `scanned` rows (batch `batch`) whose highest block is
/// `max_bn`, starting from checkpoint `prev`: the seed's `highWaterMark` without its skip.
///
/// A full batch may have stopped inside its last block, so only `max_bn - 1` is known complete;
/// where that would not move the checkpoint (one block holds the whole batch) the seed wrote
/// `max_bn` and skipped the rest of the block. We keep the checkpoint (`None`) and rely on the
/// stored position instead. `None` also when the value would not move forward.
pub fn high_water(prev: i64, max_bn: i64, scanned: usize, batch: usize) -> Option<i64> {
    let candidate = if scanned >= batch { max_bn - 1 } else { max_bn };
    (candidate > prev).then_some(candidate)
}

/// The seed's own rule, kept for documentation and the tests that show where it skips rows.
#[cfg(test)]
pub fn seed_high_water(prev: i64, max_bn: i64, scanned: usize, batch: usize) -> Option<i64> {
    let candidate = if scanned >= batch && max_bn - 1 > prev {
        max_bn - 1
    } else {
        max_bn
    };
    (candidate > prev).then_some(candidate)
}

/// Where a scan starts: every row with `(blocknumber, tiebreak) > (block, after)` is unseen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position<T> {
    pub block: i64,
    /// `None`: the whole of `block` was seen (start at `block + 1`).
    pub after: Option<T>,
}

/// The `user_events` scan start: the stored position when it was written together with the
/// checkpoint that is in `indexing_checkpoints` now; otherwise (no position yet, or someone —
/// `seed_challenge_checkpoints()`, the Go job, a DBA — changed the checkpoint) the checkpoint.
pub fn resume_from(
    checkpoint: i64,
    stored: Option<(i64, i64)>,
    stored_for_checkpoint: Option<i64>,
) -> Position<i64> {
    match (stored, stored_for_checkpoint) {
        (Some((block, id)), Some(cp)) if cp == checkpoint && block >= checkpoint => Position {
            block,
            after: Some(id),
        },
        _ => Position {
            block: checkpoint,
            after: None,
        },
    }
}

/// Distinct values in first-seen order.
pub fn first_seen<T: Copy + Eq + std::hash::Hash>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    values.into_iter().filter(|v| seen.insert(*v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn specifiers_match_go_hex() {
        assert_eq!(specifier_from_user_id(0), "0");
        assert_eq!(specifier_from_user_id(255), "ff");
        assert_eq!(specifier_from_user_id(4096), "1000");
        assert_eq!(specifier_from_user_id(i32::MAX), "7fffffff");
        assert_eq!(specifier_from_user_id(-31), "-1f");
        assert_eq!(specifier_from_user_id(i32::MIN), "-80000000");
    }

    #[test]
    fn completions_name_recipient_and_pair() {
        use Processor::*;
        assert_eq!(MobileInstall.completion(26, 0), (26, "1a".into()));
        assert_eq!(Referral.completion(26, 10), (10, "a:1a".into()));
        assert_eq!(VerifiedReferral.completion(26, 10), (10, "a:1a".into()));
        assert_eq!(Referred.completion(26, 10), (26, "1a:a".into()));
        assert_eq!(
            ALL.map(|p| p.checkpoint_key())[3],
            "challenges:rd:last_blocknumber"
        );
        assert_eq!(Referral.referrer_verified(), Some(false));
        assert_eq!(Referred.referrer_verified(), None);
    }

    #[test]
    fn amounts_follow_sscanf_d() {
        for (text, n) in [
            ("1", 1),
            ("1000", 1000),
            ("  25", 25),
            ("+7", 7),
            ("-3", -3),
            ("12abc", 12),
            ("1.5", 1),
            ("", 0),
            ("abc", 0),
            ("-", 0),
            ("0x10", 0),
            ("99999999999999999999", 0),
        ] {
            assert_eq!(amount_int(text), n, "{text:?}");
        }
    }

    #[test]
    fn completion_rule() {
        assert!(is_complete(1, 1));
        assert!(!is_complete(0, 1));
        assert!(!is_complete(5, 0));
    }

    #[test]
    fn high_water_keeps_the_seed_values_except_where_it_skips() {
        // Partial batch: the scan reached the end.
        assert_eq!(high_water(10, 15, 3, 5000), Some(15));
        assert_eq!(seed_high_water(10, 15, 3, 5000), Some(15));
        // Full batch: the last block may continue.
        assert_eq!(high_water(10, 15, 5000, 5000), Some(14));
        assert_eq!(seed_high_water(10, 15, 5000, 5000), Some(14));
        // Full batch inside one block: the seed jumps past it, we stay.
        assert_eq!(high_water(10, 11, 5000, 5000), None);
        assert_eq!(seed_high_water(10, 11, 5000, 5000), Some(11));
        // Never backwards.
        assert_eq!(high_water(20, 15, 3, 5000), None);
    }

    #[test]
    fn resume_uses_the_position_only_for_its_checkpoint() {
        assert_eq!(
            resume_from(10, Some((11, 77)), Some(10)),
            Position {
                block: 11,
                after: Some(77)
            }
        );
        // Checkpoint changed behind our back (seeded, reset, the Go job): it wins.
        assert_eq!(
            resume_from(0, Some((11, 77)), Some(10)),
            Position {
                block: 0,
                after: None
            }
        );
        assert_eq!(
            resume_from(5, None, None),
            Position {
                block: 5,
                after: None
            }
        );
    }

    proptest! {
        #[test]
        fn high_water_never_moves_back_and_never_passes_max(prev in -5i64..100, max in 0i64..100,
                                                           scanned in 0usize..20, batch in 1usize..10) {
            if let Some(v) = high_water(prev, max, scanned, batch) {
                prop_assert!(v > prev);
                prop_assert!(v <= max);
            }
        }

        #[test]
        fn first_seen_is_distinct_and_ordered(v in proptest::collection::vec(0i32..20, 0..60)) {
            let out = first_seen(v.iter().copied());
            let set: std::collections::HashSet<_> = out.iter().collect();
            prop_assert_eq!(set.len(), out.len());
            for w in out.windows(2) {
                let a = v.iter().position(|x| *x == w[0]).unwrap();
                let b = v.iter().position(|x| *x == w[1]).unwrap();
                prop_assert!(a < b);
            }
        }
    }
}
