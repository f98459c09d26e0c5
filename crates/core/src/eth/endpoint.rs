//! RPC endpoints: one URL (shown by its host only, never its path, query or userinfo: URLs carry
//! API keys), the `rpc_urls` list and the `rpc_urls_file` file. Egress rules: only `http`/`https`.

use std::fmt;

/// One RPC endpoint. `Display` shows only the host, never the path, query or userinfo.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    host: String,
}

impl Endpoint {
    /// Parses an endpoint URL with the `url` crate (WHATWG rules: host lowercased, IDNA, IPv6).
    /// Refused: schemes other than http/https, no host, whitespace or control characters
    /// anywhere (the parser would silently drop tabs and newlines). Messages never quote the URL.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace".to_string());
        }
        let u = url::Url::parse(text)
            .map_err(|_| "is not a URL (expected http://host[:port]/…)".to_string())?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!(
                "uses scheme {:?}; only http and https are allowed",
                u.scheme()
            ));
        }
        // `http:///x` would parse with host "x": an empty authority is no host.
        let authority_empty = text
            .split_once("://")
            .is_none_or(|(_, rest)| rest.starts_with(['/', '?', '#']));
        let host = match u.host_str() {
            Some(h) if !h.is_empty() && !authority_empty => h,
            _ => return Err("has no host".to_string()),
        };
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Endpoint {
            url: text.to_string(),
            host,
        })
    }

    /// `host[:port]`: what messages and statistics show.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.host)
    }
}

/// Parses the `rpc_urls` list: entries separated by commas, surrounding whitespace ignored, in
/// order. An empty entry (`a,,b`, a trailing comma, `,`) is an error, as is a list with no entry.
/// Messages name the entry's position, never its text (URLs carry API keys).
pub fn parse_endpoint_list(list: &str) -> Result<Vec<Endpoint>, String> {
    if list.trim().is_empty() {
        return Err("no endpoint in the list".to_string());
    }
    list.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, u)| {
            if u.is_empty() {
                Err(format!("entry {} is empty", i + 1))
            } else {
                Endpoint::parse(u).map_err(|e| format!("entry {} {e}", i + 1))
            }
        })
        .collect()
}

/// Parses an endpoints file (`rpc_urls_file`): one URL per line, in failover order; blank lines
/// and lines starting with `#` are ignored. At least one endpoint is required.
pub fn parse_endpoint_file(text: &str) -> Result<Vec<Endpoint>, String> {
    let eps = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, u)| Endpoint::parse(u).map_err(|e| format!("line {n}: {}", file_line_reason(&e))))
        .collect::<Result<Vec<_>, _>>()?;
    if eps.is_empty() {
        return Err("has no endpoint (one URL per line; # starts a comment)".to_string());
    }
    Ok(eps)
}

/// The reason a line of the endpoints file is refused, without any of its text: `Endpoint::parse`
/// quotes the scheme (the text before the first `:`), which in a file may be part of a secret
/// (a key pasted on its own line, `KEY:…`). Only reasons known to be fixed text pass through.
fn file_line_reason(parse_error: &str) -> &'static str {
    const FIXED: [&str; 3] = [
        "contains whitespace",
        "is not a URL (expected http://host[:port]/…)",
        "has no host",
    ];
    match FIXED.iter().find(|f| **f == parse_error) {
        Some(f) => f,
        None if parse_error.starts_with("uses scheme") => "uses a scheme other than http or https",
        None => "is not an http or https URL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::error::{RpcError, RpcErrorKind};

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    #[test]
    fn endpoints_show_only_host() {
        let e = ep("https://user:pw@Mainnet.Example.com:8545/v2/SECRETKEY?apikey=zzz");
        assert_eq!(e.to_string(), "mainnet.example.com:8545");
        assert_eq!(format!("{e:?}"), "Endpoint(mainnet.example.com:8545)");
        let err = RpcError::new(
            &e,
            RpcErrorKind::HttpStatus {
                status: 500,
                retry_after: None,
            },
        );
        assert!(!err.to_string().contains("SECRET") && !err.to_string().contains("zzz"));
        assert!(Endpoint::parse("file:///etc/passwd")
            .unwrap_err()
            .contains("only http and https"));
        assert!(Endpoint::parse("gopher://x").is_err());
        assert!(Endpoint::parse("localhost:8545").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
        assert_eq!(
            parse_endpoint_list(" http://a:1, https://b/k ")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_endpoint_list("http://a, ftp://b")
            .unwrap_err()
            .starts_with("entry 2"));
    }

    #[test]
    fn endpoint_lists_refuse_empty_entries() {
        for bad in [
            ",",
            " , ",
            "http://a,",
            ",http://a",
            "http://a,,http://b",
            "",
            "  ",
        ] {
            let e = parse_endpoint_list(bad).unwrap_err();
            assert!(
                e.contains("empty") || e.contains("no endpoint"),
                "{bad:?}: {e}"
            );
        }
        let e = parse_endpoint_list("http://a/k1 http://b/k2").unwrap_err();
        assert!(e.contains("whitespace") && !e.contains("k1"), "{e}");
        let f = parse_endpoint_file("# primary\nhttps://a/KEY\n\n  http://b:8545/x  \n").unwrap();
        assert_eq!(
            f.iter().map(|e| e.host()).collect::<Vec<_>>(),
            ["a", "b:8545"]
        );
        assert!(parse_endpoint_file("# nothing\n\n").is_err());
        let e = parse_endpoint_file("https://a/KEY\nftp://b/KEY2").unwrap_err();
        assert!(e.starts_with("line 2") && !e.contains("KEY"), "{e}");
    }

    #[test]
    fn endpoint_file_errors_never_quote_the_file() {
        // The text before the first ':' of a bad line (here a pasted key) is never quoted.
        for (text, want) in [
            (
                "https://a/x\nsk-SECRETKEY123:abc",
                "line 2: uses a scheme other than http or https",
            ),
            (
                "SECRET-KEY-only",
                "line 1: is not a URL (expected http://host[:port]/…)",
            ),
            (
                "# c\n\nhttp://\n",
                "line 3: is not a URL (expected http://host[:port]/…)",
            ),
            ("http:///SECRET", "line 1: has no host"),
            ("https://a/SE\u{7}CRET", "line 1: contains whitespace"),
        ] {
            let e = parse_endpoint_file(text).unwrap_err();
            assert_eq!(e, want, "{text:?}");
            assert!(!e.to_lowercase().contains("secret"), "{e}");
        }
        assert_eq!(
            file_line_reason("uses scheme \"KEY\"; only http and https are allowed"),
            "uses a scheme other than http or https"
        );
        assert_eq!(
            file_line_reason("some new message quoting \"KEY\""),
            "is not an http or https URL"
        );
    }
}
