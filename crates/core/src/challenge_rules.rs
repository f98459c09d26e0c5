//! The Go challenge job's incremental user_events processors (m, r, rv, rd), in the database.
//!
//! Each processor re-derives `user_challenges` rows from the `user_events` rows that moved past
//! its checkpoint (`indexing_checkpoints`, key `challenges:<id>:last_blocknumber`), as the Go job
//! `jobs/challenges/user_event_challenges.go` did. Two deliberate improvements:
//!
//! - **No skipped rows.** The Go job resumes from a block number alone, so a block holding more
//!   rows than one batch loses the rest (its high-water rule jumps past the block). We resume from
//!   a `(blocknumber, id)` position stored next to the checkpoint; `indexing_checkpoints` gets the
//!   same values as the Go job's rule whenever it would not skip.
//! - **The referrer-verification gap closed.** `r`/`rv` depend on the referrer's current
//!   `users.is_verified`; a second dirty scan over `users` rows past their own position re-derives
//!   every pair those referrers referred.
//!
//! The pure part (no pgrx): processor definitions, specifiers, amounts, the high-water rule,
//! the resume decision, and the settled rule that keeps the position behind rows a transaction
//! still in progress may precede (`settled_bound`, `scan_advance`). The SPI glue is `src/challenges/run.rs` of the extension crate.

/// The four user_events processors, in the order they run.
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

/// Steps of every user_events challenge as the Go job passes them (`current = step = 1`).
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

/// The Go job's `SpecifierFromUserID`: lowercase hex, no `0x`, no padding (Go `%x` of an int, so a
/// negative id keeps its sign: `-1f`).
pub fn specifier_from_user_id(id: i32) -> String {
    if id < 0 {
        format!("-{:x}", -(id as i64))
    } else {
        format!("{id:x}")
    }
}

/// The Go job's `AmountInt`: `fmt.Sscanf(amount, "%d", &n)`, 0 on error. Leading white space is
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
/// `max_bn`, starting from checkpoint `prev`: the Go job's `highWaterMark` without its skip.
///
/// A full batch may have stopped inside its last block, so only `max_bn - 1` is known complete;
/// where that would not move the checkpoint (one block holds the whole batch) the Go job wrote
/// `max_bn` and skipped the rest of the block. We keep the checkpoint (`None`) and rely on the
/// stored position instead. `None` also when the value would not move forward.
pub fn high_water(prev: i64, max_bn: i64, scanned: usize, batch: usize) -> Option<i64> {
    let candidate = if scanned >= batch { max_bn - 1 } else { max_bn };
    (candidate > prev).then_some(candidate)
}

/// The Go job's own rule, kept for documentation and the tests that show where it skips rows.
#[cfg(test)]
pub fn go_job_high_water(prev: i64, max_bn: i64, scanned: usize, batch: usize) -> Option<i64> {
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

/// `indexing_checkpoints.last_checkpoint` is `integer` in Audius: the value to store, or why it
/// does not fit (the caller raises 22003 numeric_value_out_of_range; a value is never wrapped).
pub fn checkpoint_int4(checkpoint: i64) -> Result<i32, String> {
    i32::try_from(checkpoint).map_err(|_| {
        format!(
            "checkpoint {checkpoint} is out of range for indexing_checkpoints.last_checkpoint (integer)"
        )
    })
}

/// The snapshot of a dirty `user_events` scan (`pg_current_snapshot()` of its own statement),
/// reduced to what the settled rule needs, as 64-bit transaction ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotXids {
    /// `pg_snapshot_xmax`: the latest completed transaction id + 1. Every visible row's
    /// inserter is below it; transactions with ids at or above it may be running (PostgreSQL
    /// does not list them in the snapshot).
    pub xmax: i64,
    /// `min` of `pg_snapshot_xip` (which leaves the caller's own transaction out) and `xmax`:
    /// every transaction id below it had ended, every other transaction in progress has an id
    /// at or above it.
    pub oldest_running: i64,
}

/// A point in time the settled rule can refer to: taken at the start of a run, in a statement
/// that gives the run's transaction its (fresh) transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The transaction id assigned to the run's transaction by that statement: every
    /// transaction that took its id later has a higher one.
    pub marker: i64,
    /// `SnapshotXids::oldest_running` of that statement's snapshot (taken before the marker was
    /// assigned): every transaction id below it had ended by then.
    pub settled_below: i64,
}

/// Rows whose inserting transaction id is below this bound are *settled*: no transaction still
/// in progress at the scan's snapshot can commit a `user_events` row that sorts before them.
///
/// `user_events.id` comes from a sequence at INSERT, not at COMMIT, so a transaction still
/// running can commit a row that sorts before rows already visible (row 500 committing after
/// row 501 of the same block). Comparing a row's `xmin` with the transactions running *now*
/// (`pg_snapshot_xmin`) is not enough: a transaction that took its xid first may draw its ids
/// later than one that started after it (T0 inserts id 1, T1 inserts id 2, T0 inserts id 3 and
/// commits: id 3 has the older xmin, yet T1, still running, precedes it). What is sound is a
/// reference point in time that every transaction running now started after
/// (`marker <= now_oldest_running`): a transaction that had ended by then drew all its ids before
/// any transaction running now drew one, so its rows are settled. The latest such reference
/// gives the highest bound. `None`: no reference qualifies (a transaction running now started
/// before every reference), nothing is settled.
pub fn settled_bound(now_oldest_running: i64, references: &[Reference]) -> Option<i64> {
    references
        .iter()
        .filter(|r| r.marker <= now_oldest_running)
        .map(|r| r.settled_below.min(r.marker))
        .max()
}

/// Whether a row whose raw 32-bit `xmin` is `xmin` is settled under `bound` (`settled_bound`),
/// `now_xmax` being the `xmax` of the snapshot that saw the row.
///
/// `xmin` is widened to 64 bits against `now_xmax` (a visible row's inserter is below it and,
/// unless frozen, less than 2^31 transactions older). The special ids below 3 (bootstrap,
/// frozen) are settled. A frozen row keeps its old raw `xmin`, which may widen into the recent
/// range: it is then judged unsettled until that range moves on (a delay, never a skip).
pub fn xmin_settled(xmin: i64, now_xmax: i64, bound: Option<i64>) -> bool {
    const WRAP: i64 = 1 << 32;
    let xmin = xmin.rem_euclid(WRAP);
    if xmin < 3 {
        return true;
    }
    let Some(bound) = bound else {
        return false;
    };
    let behind = (now_xmax.rem_euclid(WRAP) - xmin).rem_euclid(WRAP);
    if behind == 0 {
        return false; // xmax itself: not assigned at the snapshot (never a visible row's)
    }
    now_xmax - behind < bound
}

/// One row of the dirty `user_events` scan, in `(blocknumber, id)` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedRow {
    pub block: i64,
    pub id: i64,
    /// `xmin_settled` of the row.
    pub settled: bool,
}

/// How far one dirty `user_events` scan moves a processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanAdvance {
    /// The position to store (`None`: there is none, nothing to store).
    pub end: Option<(i64, i64)>,
    /// The new checkpoint, when it moves forward (the high-water rule over the rows passed).
    pub checkpoint: Option<i64>,
    /// Rows the position passed: the leading settled rows.
    pub passed: usize,
}

/// Where a scan of `rows` (at most `batch`, in `(blocknumber, id)` order, starting after
/// `start`) leaves the position and the checkpoint `prev`.
///
/// The position never passes a row that a still-running transaction may precede: it stops at the
/// last row before the first unsettled one (`settled_bound`, `xmin_settled`). Every scanned row is re-derived all
/// the same (the upsert is idempotent); the rows from the first unsettled one on are scanned
/// again by the next run. A scan cut short this way counts as a full batch for the high-water
/// rule (its last block may still get rows). When every row is settled this is exactly the rule
/// without it: the position at the last row, `high_water(prev, max_bn, rows, batch)`.
///
/// Limits (the rule assumes a transaction draws its ids after it took its xid, and a later
/// block gets later rows): ids drawn before the transaction's xid (the moment between
/// `nextval()` and the first write of an INSERT that is its transaction's first write; for a
/// client that fetches ids with `SELECT nextval()` ahead of time, the whole gap), and any row
/// inserted later with a `blocknumber` below the position (Audius re-inserting rows after a
/// block revert) are still never scanned. A transaction that stays open across the references
/// (or a prepared one) holds the position where it is until it ends; the first `batch` rows
/// past it are re-derived every run meanwhile.
pub fn scan_advance(
    prev: i64,
    start: &Position<i64>,
    rows: &[ScannedRow],
    batch: usize,
) -> ScanAdvance {
    let passed = rows.iter().take_while(|r| r.settled).count();
    let cut_short = passed < rows.len();
    let end = match passed {
        0 => start.after.map(|id| (start.block, id)),
        k => Some((rows[k - 1].block, rows[k - 1].id)),
    };
    let checkpoint = end.and_then(|(end_block, _)| {
        let max_bn = rows[..passed]
            .iter()
            .map(|r| r.block)
            .max()
            .unwrap_or(end_block)
            .max(end_block);
        let scanned = if cut_short { batch.max(passed) } else { passed };
        high_water(prev, max_bn, scanned, batch)
    });
    ScanAdvance {
        end,
        checkpoint,
        passed,
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
    fn high_water_keeps_the_go_job_values_except_where_it_skips() {
        // Partial batch: the scan reached the end.
        assert_eq!(high_water(10, 15, 3, 5000), Some(15));
        assert_eq!(go_job_high_water(10, 15, 3, 5000), Some(15));
        // Full batch: the last block may continue.
        assert_eq!(high_water(10, 15, 5000, 5000), Some(14));
        assert_eq!(go_job_high_water(10, 15, 5000, 5000), Some(14));
        // Full batch inside one block: the Go job jumps past it, we stay.
        assert_eq!(high_water(10, 11, 5000, 5000), None);
        assert_eq!(go_job_high_water(10, 11, 5000, 5000), Some(11));
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

    #[test]
    fn checkpoints_are_never_wrapped() {
        assert_eq!(checkpoint_int4(0), Ok(0));
        assert_eq!(checkpoint_int4(i32::MAX as i64), Ok(i32::MAX));
        assert_eq!(
            checkpoint_int4(1 << 31),
            Err("checkpoint 2147483648 is out of range for indexing_checkpoints.last_checkpoint (integer)".into())
        );
        assert!(checkpoint_int4(i64::MIN)
            .unwrap_err()
            .contains(&i64::MIN.to_string()));
    }

    #[test]
    fn settled_rows_are_older_than_a_reference_all_running_transactions_postdate() {
        let r = |marker, settled_below| Reference {
            marker,
            settled_below,
        };
        // no reference: nothing is settled
        assert_eq!(settled_bound(1000, &[]), None);
        // the oldest running transaction (990) took its id before the reference (995): unusable
        assert_eq!(settled_bound(990, &[r(995, 980)]), None);
        // references every running transaction postdates: the latest one gives the bound
        assert_eq!(
            settled_bound(990, &[r(900, 850), r(980, 970), r(995, 960)]),
            Some(970)
        );
        assert_eq!(settled_bound(990, &[r(990, 990)]), Some(990));
        assert_eq!(
            settled_bound(990, &[r(990, 995)]),
            Some(990),
            "never above the marker"
        );

        let b = Some(970);
        assert!(xmin_settled(969, 1000, b));
        assert!(!xmin_settled(970, 1000, b));
        assert!(
            !xmin_settled(995, 1000, b),
            "committed, but not before the reference"
        );
        assert!(!xmin_settled(1000, 1000, b));
        assert!(
            !xmin_settled(500, 1000, None),
            "no reference: nothing settled"
        );
        assert!(xmin_settled(2, 1000, None), "frozen");
        assert!(xmin_settled(1, 1000, b), "bootstrap");
        // epoch 5: raw 32-bit xmins are widened against xmax
        let e = 5i64 << 32;
        assert!(xmin_settled(4, e + 10, Some(e + 5)));
        assert!(!xmin_settled(7, e + 10, Some(e + 5)));
        assert!(
            xmin_settled((1i64 << 32) - 6, e + 10, Some(e + 5)),
            "previous epoch"
        );
        // a bound across the epoch boundary
        assert!(!xmin_settled((1i64 << 32) - 6, e + 10, Some(e - 20)));
        assert!(xmin_settled((1i64 << 32) - 30, e + 10, Some(e - 20)));
    }

    fn row(block: i64, id: i64, settled: bool) -> ScannedRow {
        ScannedRow { block, id, settled }
    }

    #[test]
    fn the_position_stops_before_the_first_unsettled_row() {
        let start = Position {
            block: 99,
            after: Some(7),
        };
        // all settled: as before (position at the last row, checkpoint = max block)
        let a = scan_advance(90, &start, &[row(99, 8, true), row(100, 501, true)], 10);
        assert_eq!(
            a,
            ScanAdvance {
                end: Some((100, 501)),
                checkpoint: Some(100),
                passed: 2
            }
        );
        // 501 committed while 500's transaction is still running: stop before 501, and the
        // block of the last passed row is not known complete
        let a = scan_advance(
            90,
            &start,
            &[row(99, 8, true), row(100, 501, false), row(101, 502, true)],
            10,
        );
        assert_eq!(
            a,
            ScanAdvance {
                end: Some((99, 8)),
                checkpoint: Some(98),
                passed: 1
            }
        );
        // nothing settled: the position stays where it started
        let a = scan_advance(90, &start, &[row(100, 501, false)], 10);
        assert_eq!(
            a,
            ScanAdvance {
                end: Some((99, 7)),
                checkpoint: Some(98),
                passed: 0
            }
        );
        // ... and with no position yet, there is none to store
        let from_cp = Position {
            block: 90,
            after: None,
        };
        let a = scan_advance(90, &from_cp, &[row(100, 501, false)], 10);
        assert_eq!(
            a,
            ScanAdvance {
                end: None,
                checkpoint: None,
                passed: 0
            }
        );
        // a full batch, all settled: the Go job's max_bn - 1
        let a = scan_advance(90, &from_cp, &[row(95, 1, true), row(96, 2, true)], 2);
        assert_eq!(a.checkpoint, Some(95));
        assert_eq!(a.end, Some((96, 2)));
    }

    /// Which rule the model's position follows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Rule {
        /// Every row settled (the position at the last row scanned).
        Off,
        /// Settled: older than every transaction running at the scan (`pg_snapshot_xmin`).
        RunningNow,
        /// `settled_bound` with earlier snapshots as references.
        References,
    }

    /// A model of `user_events` written by concurrent transactions and read by runs of one
    /// processor: ids from a sequence at INSERT (the transaction takes its xid at its first
    /// INSERT, as PostgreSQL does), visibility and `xmin_settled` from the snapshot of each run.
    #[derive(Default)]
    struct Model {
        next_xid: i64,
        next_id: i64,
        block: i64,
        /// xid (None: no write yet), committed
        txs: Vec<(Option<i64>, bool)>,
        /// (block, id, xid)
        rows: Vec<(i64, i64, i64)>,
        checkpoint: i64,
        stored: Option<(i64, i64)>,
        stored_cp: Option<i64>,
        processed: std::collections::BTreeSet<i64>,
        references: Vec<Reference>,
        /// xids of the runs' own transactions (ended)
        ended: Vec<i64>,
    }

    impl Model {
        fn new() -> Model {
            Model {
                next_xid: 100,
                next_id: 1,
                block: 1,
                ..Model::default()
            }
        }

        fn insert(&mut self, t: usize) {
            if self.txs[t].1 {
                return;
            }
            let xid = *self.txs[t].0.get_or_insert_with(|| {
                self.next_xid += 1;
                self.next_xid - 1
            });
            self.rows.push((self.block, self.next_id, xid));
            self.next_id += 1;
        }

        fn committed(&self, xid: i64) -> bool {
            self.txs.iter().any(|&(x, c)| c && x == Some(xid))
        }

        /// PostgreSQL's snapshot: xmax = latest ended xid + 1, xip = the running ids below it
        /// (without the caller's own).
        fn snapshot(&self, own: Option<i64>) -> SnapshotXids {
            let ended = self
                .txs
                .iter()
                .filter(|(x, c)| *c && x.is_some())
                .filter_map(|(x, _)| *x)
                .chain(self.ended.iter().copied());
            let xmax = ended.max().unwrap_or(99) + 1; // xids start at 100
            let oldest_running = self
                .txs
                .iter()
                .filter(|(x, c)| !c && x.is_some())
                .filter_map(|(x, _)| *x)
                .filter(|&x| x < xmax && Some(x) != own)
                .min()
                .unwrap_or(xmax)
                .min(xmax);
            SnapshotXids {
                xmax,
                oldest_running,
            }
        }

        /// One run under `rule`. Rows scanned.
        fn run(&mut self, batch: usize, rule: Rule) -> usize {
            // the run's first statement: a snapshot, then a fresh xid for the run (the marker)
            let at_start = self.snapshot(None);
            let own = self.next_xid;
            self.next_xid += 1;
            self.references.push(Reference {
                marker: own,
                settled_below: at_start.oldest_running,
            });
            let now = self.snapshot(Some(own));
            let bound = match rule {
                Rule::References => settled_bound(now.oldest_running, &self.references),
                Rule::RunningNow => Some(now.oldest_running),
                Rule::Off => Some(now.xmax),
            };
            // the run's transaction ends with the run
            self.ended.push(own);
            let start = resume_from(self.checkpoint, self.stored, self.stored_cp);
            let mut visible: Vec<_> = self
                .rows
                .iter()
                .filter(|r| self.committed(r.2))
                .filter(|r| {
                    r.0 >= start.block
                        && (r.0 > start.block || start.after.is_some_and(|a| r.1 > a))
                })
                .copied()
                .collect();
            visible.sort();
            visible.truncate(batch);
            let scanned: Vec<ScannedRow> = visible
                .iter()
                .map(|&(block, id, xid)| row(block, id, xmin_settled(xid, now.xmax, bound)))
                .collect();
            self.processed.extend(visible.iter().map(|r| r.1));
            let prev = self.checkpoint;
            let a = scan_advance(prev, &start, &scanned, batch);
            if let Some(end) = a.end {
                let cp = a.checkpoint.unwrap_or(prev);
                self.checkpoint = cp;
                if !scanned.is_empty() || cp != prev {
                    self.stored = Some(end);
                    self.stored_cp = Some(cp);
                }
            }
            scanned.len()
        }

        fn skipped(&mut self, batch: usize, rule: Rule) -> Vec<i64> {
            for t in &mut self.txs {
                t.1 = true;
            }
            for _ in 0..1000 {
                let before = (self.stored, self.checkpoint);
                if self.run(batch, rule) == 0 && before == (self.stored, self.checkpoint) {
                    break;
                }
            }
            let all: Vec<i64> = self.rows.iter().map(|r| r.1).collect();
            all.into_iter()
                .filter(|id| !self.processed.contains(id))
                .collect()
        }
    }

    #[test]
    fn row_500_committing_after_row_501_is_not_skipped() {
        for rule in [Rule::Off, Rule::RunningNow, Rule::References] {
            let mut m = Model::new();
            m.block = 100;
            m.txs = vec![(None, false), (None, false)];
            m.insert(0); // row 1 ("500"), transaction 0 stays open
            m.insert(1); // row 2 ("501")
            m.txs[1].1 = true; // 501 commits first
            m.run(10, rule); // a run in between sees (100, 2) only
            let skipped = m.skipped(10, rule);
            if rule == Rule::Off {
                assert_eq!(skipped, vec![1], "without a rule the keyset skips it");
            } else {
                assert_eq!(skipped, Vec::<i64>::new(), "{rule:?}");
            }
        }
    }

    #[test]
    fn an_older_transaction_inserting_later_is_not_mistaken_for_settled() {
        for rule in [Rule::Off, Rule::RunningNow, Rule::References] {
            let mut m = Model::new();
            m.txs = vec![(None, false), (None, false)];
            m.insert(0); // id 1, T0 takes the older xid
            m.insert(1); // id 2, T1 (younger xid) stays open
            m.insert(0); // id 3, drawn after T1 started
            m.txs[0].1 = true;
            m.run(10, rule); // sees ids 1 and 3, both with T0's (older) xmin
            let skipped = m.skipped(10, rule);
            if rule == Rule::References {
                assert_eq!(skipped, Vec::<i64>::new());
            } else {
                // comparing xmin with the transactions running now passes id 3, before id 2
                assert_eq!(skipped, vec![2], "{rule:?}");
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Begin,
        Insert(usize),
        Commit(usize),
        NextBlock,
        Run,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::Begin),
            4 => (0usize..8).prop_map(Op::Insert),
            2 => (0usize..8).prop_map(Op::Commit),
            1 => Just(Op::NextBlock),
            2 => Just(Op::Run),
        ]
    }

    proptest! {
        #[test]
        fn no_row_is_skipped_by_concurrent_commits(ops in proptest::collection::vec(op(), 1..80),
                                                   batch in 1usize..6) {
            let mut m = Model::new();
            for op in ops {
                match op {
                    Op::Begin => m.txs.push((None, false)),
                    Op::Insert(t) if t < m.txs.len() => m.insert(t),
                    Op::Commit(t) if t < m.txs.len() => m.txs[t].1 = true,
                    Op::NextBlock => m.block += 1,
                    Op::Run => { m.run(batch, Rule::References); }
                    _ => {}
                }
            }
            let skipped = m.skipped(batch, Rule::References);
            prop_assert!(skipped.is_empty(), "skipped ids {:?}", skipped);
        }

        #[test]
        fn the_settled_prefix_never_moves_the_checkpoint_past_the_position(
            prev in 0i64..50, settled in proptest::collection::vec(any::<bool>(), 0..10),
            batch in 1usize..12) {
            let rows: Vec<ScannedRow> = settled.iter().enumerate()
                .map(|(i, &s)| row(50 + i as i64 / 3, i as i64 + 1, s)).collect();
            let start = Position { block: 50, after: Some(0) };
            let a = scan_advance(prev, &start, &rows, batch);
            let (end_block, end_id) = a.end.unwrap();
            prop_assert_eq!(a.passed, settled.iter().take_while(|s| **s).count());
            prop_assert!(rows[..a.passed].iter().all(|r| (r.block, r.id) <= (end_block, end_id)));
            prop_assert!(rows[a.passed..].iter().all(|r| (r.block, r.id) > (end_block, end_id)));
            if let Some(cp) = a.checkpoint {
                prop_assert!(cp > prev && cp <= end_block);
                if a.passed < rows.len() { prop_assert!(cp < end_block); }
            }
        }
    }

    proptest! {
        #[test]
        fn high_water_never_moves_back_and_never_passes_max(prev in -5i64..100, max in 0i64..100,
                                                           scanned in 0usize..20, batch in 1usize..10) {
            // The highest block known complete: all of `max` after a partial batch (the scan
            // reached the end), only up to `max - 1` after a full one (its last block may go on).
            let complete = if scanned < batch { max } else { max - 1 };
            let got = high_water(prev, max, scanned, batch);
            // Moves exactly there when that is forward, and is None only when it is not.
            prop_assert_eq!(got, (complete > prev).then_some(complete),
                            "prev {} max {} scanned {} batch {}", prev, max, scanned, batch);
            if let Some(v) = got {
                prop_assert!(v > prev);
                prop_assert!(v <= max);
            }
        }

        #[test]
        fn first_seen_is_distinct_and_ordered(v in proptest::collection::vec(0i32..20, 0..60)) {
            let out = first_seen(v.iter().copied());
            let set: std::collections::HashSet<_> = out.iter().collect();
            prop_assert_eq!(set.len(), out.len());
            // every input value is kept: the output holds exactly the distinct inputs
            let distinct: std::collections::HashSet<_> = v.iter().collect();
            prop_assert_eq!(&set, &distinct);
            for w in out.windows(2) {
                let a = v.iter().position(|x| *x == w[0]).unwrap();
                let b = v.iter().position(|x| *x == w[1]).unwrap();
                prop_assert!(a < b);
            }
        }
    }
}
