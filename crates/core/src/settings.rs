//! Pure rules behind settings that guard the server process: the memory bound of RPC answers
//! (`rpc_max_response_bytes` × `rpc_concurrency`) and the checks on the `rpc_urls_file` file
//! (type, size, owner, mode), decided from plain values so they are unit-tested here; the
//! extension's `config.rs` opens and `fstat`s the file and applies them.

/// Largest total of RPC answers one backend may be receiving at once: `rpc_concurrency` answers
/// in flight, each up to the effective `rpc_max_response_bytes`. A failed allocation aborts the
/// process (and so restarts the cluster), so the product is bounded whatever the settings say.
pub const MAX_RESPONSE_BYTES_IN_FLIGHT: u64 = 256 * 1024 * 1024;

/// Smallest per-answer limit (the setting's own minimum).
pub const MIN_RESPONSE_BYTES: u64 = 1024;

/// Largest `rpc_concurrency` (the setting's own maximum).
pub const MAX_CONCURRENCY: usize = 32;

/// The chunks in flight actually used: the setting clamped to `1..=MAX_CONCURRENCY`.
pub fn effective_concurrency(setting: i64) -> usize {
    setting.clamp(1, MAX_CONCURRENCY as i64) as usize
}

/// The per-answer limit actually applied: `min(setting, 256 MiB / concurrency)`, never below
/// `MIN_RESPONSE_BYTES`, so that `concurrency × limit ≤ MAX_RESPONSE_BYTES_IN_FLIGHT` for every
/// concurrency up to `MAX_CONCURRENCY` (256 MiB / 32 = 8 MiB ≥ 1 kB).
pub fn effective_max_response_bytes(setting: i64, concurrency: usize) -> u64 {
    let concurrency = concurrency.clamp(1, MAX_CONCURRENCY) as u64;
    let share = MAX_RESPONSE_BYTES_IN_FLIGHT / concurrency;
    (setting.max(0) as u64).clamp(MIN_RESPONSE_BYTES, share.max(MIN_RESPONSE_BYTES))
}

/// Largest `rpc_urls_file` accepted. Reads stop at `MAX_ENDPOINT_FILE_BYTES + 1` bytes, so a
/// file that grows (or a device that never ends) cannot exhaust memory.
pub const MAX_ENDPOINT_FILE_BYTES: u64 = 64 * 1024;

/// What `fstat` says about the opened `rpc_urls_file` (a subset of `struct stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// `S_ISREG(st_mode)`.
    pub regular: bool,
    /// Describes a non-regular file for messages (`"a directory"`, `"a FIFO"`, …); ignored when
    /// `regular`.
    pub kind: &'static str,
    pub size: u64,
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Which rule the `rpc_urls_file` broke. Messages never quote the file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileRefusal {
    /// The path names a symbolic link (refused with `O_NOFOLLOW`, as `ssl_key_file`'s checks
    /// would not follow it either): SQLSTATE 42501.
    Symlink,
    /// Not a regular file (directory, FIFO, device, socket): 22023.
    NotRegular(&'static str),
    /// Larger than `MAX_ENDPOINT_FILE_BYTES` (by `fstat`, or by what a read returned): 22023.
    TooLarge,
    /// Owned by neither the server's OS user nor root: 42501.
    WrongOwner { uid: u32, server_uid: u32 },
    /// Writable by the group or by others (`mode & 0o022 != 0`): 42501.
    Writable { mode: u32 },
}

impl FileRefusal {
    /// The SQLSTATE of this refusal: 42501 (insufficient_privilege) where the file could have
    /// been written by someone other than the server's user or root, or is a link to elsewhere;
    /// 22023 (invalid_parameter_value) where the setting names something that is not a small
    /// regular file.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            FileRefusal::Symlink
            | FileRefusal::WrongOwner { .. }
            | FileRefusal::Writable { .. } => "42501",
            FileRefusal::NotRegular(_) | FileRefusal::TooLarge => "22023",
        }
    }
}

impl std::fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileRefusal::Symlink => f.write_str("it is a symbolic link (links are not followed)"),
            FileRefusal::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            FileRefusal::TooLarge => {
                write!(f, "it is larger than {} bytes", MAX_ENDPOINT_FILE_BYTES)
            }
            FileRefusal::WrongOwner { uid, server_uid } => write!(
                f,
                "it is owned by uid {uid}, not by the server's user (uid {server_uid}) or root"
            ),
            FileRefusal::Writable { mode } => write!(
                f,
                "it is writable by its group or by others (mode {mode:04o}; use 0600 or 0640)"
            ),
        }
    }
}

/// The checks on the opened `rpc_urls_file`, in order: a regular file, at most 64 KiB, owned by
/// the server's user or root, not writable by group or others (read permission for the group is
/// allowed, as PostgreSQL allows 0640 for a root-owned `ssl_key_file`).
pub fn check_endpoint_file(facts: &FileFacts, server_uid: u32) -> Result<(), FileRefusal> {
    if !facts.regular {
        return Err(FileRefusal::NotRegular(facts.kind));
    }
    if facts.size > MAX_ENDPOINT_FILE_BYTES {
        return Err(FileRefusal::TooLarge);
    }
    if facts.uid != server_uid && facts.uid != 0 {
        return Err(FileRefusal::WrongOwner {
            uid: facts.uid,
            server_uid,
        });
    }
    if facts.mode & 0o022 != 0 {
        return Err(FileRefusal::Writable {
            mode: facts.mode & 0o7777,
        });
    }
    Ok(())
}

/// The text of a file read with a limit of `MAX_ENDPOINT_FILE_BYTES + 1` bytes: refused when the
/// read reached past the limit (the file grew after `fstat`) or is not UTF-8 (without quoting it).
pub fn endpoint_file_text(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() as u64 > MAX_ENDPOINT_FILE_BYTES {
        return Err(FileRefusal::TooLarge.to_string());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "it is not valid UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn response_limit_is_capped_by_concurrency() {
        assert_eq!(effective_max_response_bytes(64 * MIB as i64, 4), 64 * MIB);
        assert_eq!(effective_max_response_bytes(64 * MIB as i64, 32), 8 * MIB);
        assert_eq!(effective_max_response_bytes(i32::MAX as i64, 1), 256 * MIB);
        assert_eq!(effective_max_response_bytes(i32::MAX as i64, 32), 8 * MIB);
        assert_eq!(effective_max_response_bytes(1024, 32), 1024);
        assert_eq!(effective_max_response_bytes(0, 1), MIN_RESPONSE_BYTES);
        assert_eq!(effective_max_response_bytes(-5, 0), MIN_RESPONSE_BYTES);
        assert_eq!(effective_concurrency(0), 1);
        assert_eq!(effective_concurrency(4), 4);
        assert_eq!(effective_concurrency(1000), 32);
    }

    proptest! {
        #[test]
        fn in_flight_answers_never_exceed_256_mib(setting in i64::MIN..i64::MAX, c in -100i64..1000) {
            let c = effective_concurrency(c);
            let per = effective_max_response_bytes(setting, c);
            prop_assert!(per >= MIN_RESPONSE_BYTES);
            prop_assert!(per * c as u64 <= MAX_RESPONSE_BYTES_IN_FLIGHT);
            prop_assert!(setting < MIN_RESPONSE_BYTES as i64 || per <= setting as u64);
        }
    }

    fn file(mode: u32, uid: u32, size: u64) -> FileFacts {
        FileFacts {
            regular: true,
            kind: "a regular file",
            size,
            uid,
            mode,
        }
    }

    #[test]
    fn endpoint_file_rules() {
        let me = 1000;
        assert_eq!(check_endpoint_file(&file(0o600, me, 100), me), Ok(()));
        assert_eq!(check_endpoint_file(&file(0o640, 0, 100), me), Ok(()));
        assert_eq!(check_endpoint_file(&file(0o400, me, 0), me), Ok(()));
        assert_eq!(check_endpoint_file(&file(0o644, me, 100), me), Ok(()));
        assert_eq!(
            check_endpoint_file(&file(0o600, me, MAX_ENDPOINT_FILE_BYTES), me),
            Ok(())
        );
        let fifo = FileFacts {
            regular: false,
            kind: "a FIFO",
            ..file(0o600, me, 0)
        };
        assert_eq!(
            check_endpoint_file(&fifo, me),
            Err(FileRefusal::NotRegular("a FIFO"))
        );
        assert_eq!(
            check_endpoint_file(&file(0o600, me, MAX_ENDPOINT_FILE_BYTES + 1), me),
            Err(FileRefusal::TooLarge)
        );
        assert_eq!(
            check_endpoint_file(&file(0o600, 1001, 10), me),
            Err(FileRefusal::WrongOwner {
                uid: 1001,
                server_uid: me
            })
        );
        for mode in [0o620, 0o602, 0o666, 0o777, 0o4622] {
            assert_eq!(
                check_endpoint_file(&file(mode, me, 10), me),
                Err(FileRefusal::Writable { mode }),
                "{mode:o}"
            );
        }
        // Messages and SQLSTATEs: the rule, never content.
        assert_eq!(FileRefusal::Symlink.sqlstate(), "42501");
        assert_eq!(FileRefusal::Writable { mode: 0o666 }.sqlstate(), "42501");
        assert_eq!(
            FileRefusal::WrongOwner {
                uid: 1,
                server_uid: 2
            }
            .sqlstate(),
            "42501"
        );
        assert_eq!(FileRefusal::TooLarge.sqlstate(), "22023");
        assert_eq!(FileRefusal::NotRegular("a directory").sqlstate(), "22023");
        assert_eq!(
            FileRefusal::Writable { mode: 0o666 }.to_string(),
            "it is writable by its group or by others (mode 0666; use 0600 or 0640)"
        );
        assert_eq!(
            FileRefusal::TooLarge.to_string(),
            "it is larger than 65536 bytes"
        );
    }

    #[test]
    fn endpoint_file_text_is_bounded_and_never_quoted() {
        assert_eq!(
            endpoint_file_text(b"https://a/KEY\n".to_vec()).unwrap(),
            "https://a/KEY\n"
        );
        let big = vec![b'a'; MAX_ENDPOINT_FILE_BYTES as usize + 1];
        assert_eq!(
            endpoint_file_text(big).unwrap_err(),
            "it is larger than 65536 bytes"
        );
        let exact = vec![b'a'; MAX_ENDPOINT_FILE_BYTES as usize];
        assert!(endpoint_file_text(exact).is_ok());
        let e = endpoint_file_text(b"SECRET\xff".to_vec()).unwrap_err();
        assert_eq!(e, "it is not valid UTF-8 (at byte 6)");
        assert!(!e.contains("SECRET"));
    }
}
