//! The cheapest MCP server this machine can start many of: `corral-bench --serve-echo-mcp` speaks
//! MCP over stdio (one JSON-RPC message per line), with one tool, `echo`, and nothing else, on
//! blocking std I/O, no async runtime, no thread. The scale measurement (`scale`) puts hundreds
//! of them under one corrald: the fixture (`tests/peers/fixture_server.py`) takes about 1.4 s of
//! CPU and 68 MB to start, so 256 of them would measure the machine, not corrald; this one starts
//! in about a millisecond in a few MiB (most of it the benchmark's own code pages, shared).
//!
//! It answers `initialize` (echoing the client's protocol version), `ping`, `tools/list` and
//! `tools/call` of `echo` (`Echo: <message>`, as server-everything words it); other requests
//! get -32601, notifications nothing. It exits when its stdin closes.

use std::io::{BufRead as _, Write as _};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The one tool, as `tools/list` gives it.
const TOOLS: &str = r#"{"tools":[{"name":"echo","description":"Echoes back the input","inputSchema":{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}}]}"#;

/// One message from the client, read just enough to answer it.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InitializeParams {
    #[serde(rename = "protocolVersion")]
    protocol_version: String,
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

/// Serve stdin/stdout until stdin closes.
pub(crate) fn serve() -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(answer) = answer(&line) {
            stdout.write_all(answer.as_bytes())?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
        }
    }
    Ok(())
}

/// The answer to one line, if it needs one.
fn answer(line: &str) -> Option<String> {
    let Ok(message) = serde_json::from_str::<Message<'_>>(line) else {
        return Some(error("null", -32700, "parse error"));
    };
    let id = message.id?.get();
    let params = message.params.map_or("{}", RawValue::get);
    let result = match message.method.as_deref() {
        Some("initialize") => {
            let version = serde_json::from_str::<InitializeParams>(params)
                .map_or_else(|_| "2025-06-18".to_owned(), |params| params.protocol_version);
            serde_json::json!({
                "protocolVersion": version,
                "capabilities": { "tools": { "listChanged": false } },
                "serverInfo": { "name": "corral-bench-echo", "version": env!("CARGO_PKG_VERSION") },
            })
            .to_string()
        }
        Some("ping") => "{}".to_owned(),
        Some("tools/list") => TOOLS.to_owned(),
        Some("tools/call") => match serde_json::from_str::<CallParams>(params) {
            Ok(call) if call.name == "echo" => {
                let message = call
                    .arguments
                    .get("message")
                    .and_then(|value| value.as_str())
                    .unwrap_or("");
                serde_json::json!({ "content": [{ "type": "text", "text": format!("Echo: {message}") }] }).to_string()
            }
            Ok(call) => return Some(error(id, -32602, &format!("unknown tool: {}", call.name))),
            Err(_) => return Some(error(id, -32602, "invalid params")),
        },
        _ => return Some(error(id, -32601, "method not found")),
    };
    Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#))
}

fn error(id: &str, code: i64, message: &str) -> String {
    serde_json::json!({ "jsonrpc": "2.0", "id": serde_json::from_str::<serde_json::Value>(id).unwrap_or_default(), "error": { "code": code, "message": message } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::answer;

    #[test]
    fn answers_what_corrald_sends() {
        let initialize = answer(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
        )
        .expect("an answer");
        assert!(initialize.contains(r#""protocolVersion":"2025-11-25""#), "{initialize}");
        assert_eq!(
            answer(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        let call = answer(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#,
        )
        .expect("an answer");
        assert!(call.starts_with(r#"{"jsonrpc":"2.0","id":"a","result":"#), "{call}");
        assert!(call.contains("Echo: x"), "{call}");
        let unknown = answer(r#"{"jsonrpc":"2.0","id":7,"method":"resources/list"}"#).expect("an answer");
        assert!(unknown.contains("-32601") && unknown.contains(r#""id":7"#), "{unknown}");
    }
}
