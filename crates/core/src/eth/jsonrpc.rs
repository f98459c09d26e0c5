//! The JSON-RPC envelope: request bodies (`eth_call` built in one buffer), and one HTTP answer
//! turned into its `result` or a classified error.

use crate::eth::endpoint::Endpoint;
use crate::eth::error::{classify_jsonrpc, parse_retry_after, truncate, RpcError, RpcErrorKind};
use serde_json::{json, Value};

/// Turns one HTTP answer into the `result` string of a JSON-RPC response, or an error.
pub fn parse_http_answer(
    ep: &Endpoint,
    status: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
    body: &[u8],
) -> Result<Value, RpcError> {
    let retry_after = retry_after.and_then(parse_retry_after);
    let err = |kind| Err(RpcError::new(ep, kind));
    match status {
        200 => {}
        429 => {
            return err(RpcErrorKind::RateLimited {
                detail: "HTTP 429".into(),
                retry_after,
            })
        }
        413 => return err(RpcErrorKind::TooLarge("HTTP 413".into())),
        300..=399 => {
            let location_host = location
                .and_then(|l| Endpoint::parse(l).ok())
                .map(|e| e.host().to_string());
            return err(RpcErrorKind::Redirect {
                status,
                location_host,
            });
        }
        _ => {
            return err(RpcErrorKind::HttpStatus {
                status,
                retry_after,
            })
        }
    }
    let mut v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return err(RpcErrorKind::BadResponse(format!(
                "body is not JSON ({e}; {} bytes, starts {:?})",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(40)])
            )))
        }
    };
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        let mut message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(data) = e.get("data").filter(|d| !d.is_null()) {
            let data = data
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| data.to_string());
            message.push_str(&format!(" (data: {})", truncate(&data, 300)));
        }
        return err(classify_jsonrpc(code, truncate(&message, 500)));
    }
    // taken, not cloned: an aggregate3 answer is a string of up to a few MB
    match v.get_mut("result") {
        Some(r) => Ok(r.take()),
        None => err(RpcErrorKind::BadResponse(
            "JSON without result or error".into(),
        )),
    }
}

/// Decodes a `0x…` hex quantity/data string.
pub fn decode_hex_result(ep: &Endpoint, v: &Value) -> Result<Vec<u8>, RpcError> {
    let bad = |d: String| RpcError::new(ep, RpcErrorKind::BadResponse(d));
    let s = v.as_str().ok_or_else(|| {
        bad(format!(
            "result is not a hex string: {}",
            truncate(&v.to_string(), 60)
        ))
    })?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| bad(format!("malformed hex result (no 0x): {}", truncate(s, 60))))?;
    if digits.len() % 2 != 0 {
        return Err(bad(format!(
            "malformed hex result (odd length {})",
            digits.len()
        )));
    }
    alloy_primitives::hex::decode(digits).map_err(|e| bad(format!("malformed hex result: {e}")))
}

/// The JSON-RPC request body of `eth_call(to, data, "latest")`, built in one buffer: the calldata
/// is hex-encoded (vectorised) straight into it. `to` is JSON-escaped like any string.
pub fn eth_call_body(id: u64, to: &str, data: &[u8]) -> String {
    let to = Value::String(to.to_string()).to_string();
    let head = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_call","params":[{{"to":{to},"data":"0x"#
    );
    let tail = r#""},"latest"]}"#;
    let mut buf = Vec::with_capacity(head.len() + 2 * data.len() + tail.len());
    buf.extend_from_slice(head.as_bytes());
    let start = buf.len();
    buf.resize(start + 2 * data.len(), 0);
    alloy_primitives::hex::encode_to_slice(data, &mut buf[start..])
        .expect("the slice is exactly twice the input");
    buf.extend_from_slice(tail.as_bytes());
    String::from_utf8(buf).expect("JSON text and hex digits are UTF-8")
}

/// Generic request body.
pub fn request_body(id: u64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    #[test]
    fn eth_call_body_is_the_json_it_says() {
        let data: Vec<u8> = (0..=255u8).chain([0, 1, 0xab]).collect();
        let body = eth_call_body(7, "0xca11bde05977b3631167028862be2a173976ca11", &data);
        let v: Value = serde_json::from_str(&body).unwrap();
        let want = json!({"jsonrpc": "2.0", "id": 7, "method": "eth_call",
            "params": [{"to": "0xca11bde05977b3631167028862be2a173976ca11",
                        "data": alloy_primitives::hex::encode_prefixed(&data)}, "latest"]});
        assert_eq!(v, want);
        let odd: Value = serde_json::from_str(&eth_call_body(1, "a\"b", &[])).unwrap();
        assert_eq!(odd["params"][0]["to"], "a\"b");
        assert_eq!(odd["params"][0]["data"], "0x");
    }

    #[test]
    fn http_answers_are_classified() {
        // a JSON-RPC error in an HTTP 200 answer, classified
        let answer_error =
            |body: &[u8]| parse_http_answer(&ep("http://h"), 200, None, None, body).unwrap_err();
        let e = ep("http://h:1/key");
        let ok = parse_http_answer(
            &e,
            200,
            None,
            None,
            br#"{"jsonrpc":"2.0","id":1,"result":"0x01"}"#,
        );
        assert_eq!(ok.unwrap(), Value::String("0x01".into()));
        let r429 = parse_http_answer(&e, 429, Some("1"), None, b"").unwrap_err();
        assert!(r429.is_transient());
        assert_eq!(r429.retry_after(), Some(Duration::from_secs(1)));
        assert!(parse_http_answer(&e, 503, None, None, b"")
            .unwrap_err()
            .is_transient());
        let r500 = parse_http_answer(&e, 500, None, None, b"").unwrap_err();
        assert!(!r500.is_transient());
        assert_eq!(r500.sqlstate(), "08P01");
        let redirect =
            parse_http_answer(&e, 302, None, Some("http://evil:9/x?k=1"), b"").unwrap_err();
        assert_eq!(
            redirect.kind,
            RpcErrorKind::Redirect {
                status: 302,
                location_host: Some("evil:9".into())
            }
        );
        let garbage = parse_http_answer(&e, 200, None, None, b"<html>").unwrap_err();
        assert_eq!(garbage.sqlstate(), "08P01");
        let revert = answer_error(br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x08c3"}}"#);
        assert!(!revert.is_transient());
        assert_eq!(revert.sqlstate(), "38000");
        assert!(revert.to_string().contains("execution reverted"));
        let limited = answer_error(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"limit exceeded"}}"#,
        );
        assert!(limited.is_transient());
        let alchemy = answer_error(br#"{"jsonrpc":"2.0","id":1,"error":{"code":429,"message":"Your app has exceeded its compute units per second capacity"}}"#);
        assert!(alchemy.is_transient());
        let oog = answer_error(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"out of gas"}}"#,
        );
        assert!(oog.wants_smaller_chunk() && !oog.is_transient());
        let anvil_oog = answer_error(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"EVM error OutOfGas"}}"#,
        );
        assert!(anvil_oog.wants_smaller_chunk(), "{anvil_oog:?}");
        assert!(parse_http_answer(&e, 413, None, None, b"")
            .unwrap_err()
            .wants_smaller_chunk());
        let invalid = answer_error(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params"}}"#,
        );
        assert!(!invalid.is_transient());
    }

    #[test]
    fn hex_results_are_checked() {
        let e = ep("http://h");
        assert_eq!(
            decode_hex_result(&e, &json!("0x")).unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(
            decode_hex_result(&e, &json!("0x0aFF")).unwrap(),
            vec![0x0a, 0xff]
        );
        for bad in [
            json!("0x123"),
            json!("12"),
            json!("0xzz"),
            json!(5),
            json!(null),
        ] {
            let err = decode_hex_result(&e, &bad).unwrap_err();
            assert_eq!(err.sqlstate(), "08P01", "{bad}");
        }
    }
}
