//! Property-based fuzzing of the two parsers that read untrusted bytes: the frame decoder (every
//! byte a front-end sends) and the config parser (a file anyone with write access to it edits).
//!
//! Each property runs a bounded number of cases (`CASES`, or `PROPTEST_CASES` from the
//! environment) from a fixed seed (`PROPTEST_RNG_SEED` explores others) on the stable toolchain;
//! a failure is shrunk to a minimal input and printed.
//! The counts of a run are recorded in `docs/benchmarks.md`.

use std::path::Path;

use corral_protocol::config::{self, ConfigError};
use corral_protocol::framing::{self, FrameDecoder, FrameError, Framing};
use proptest::prelude::*;

/// Cases per property unless `PROPTEST_CASES` says otherwise: enough to cover the generators'
/// shapes, small enough that the whole file runs in seconds in a debug build.
const CASES: u32 = 2_000;

/// The seed of a default run.
const DEFAULT_SEED: u64 = 0x00c0_44a1_f022_2026;

/// The header block bound of `Content-Length` framing (the decoder's private constant).
const MAX_HEADER_BYTES: usize = 8 * 1024;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(CASES),
        // No regression files: a failure is printed with its minimal input, which goes into a test.
        failure_persistence: None,
        // The same cases on every CI run (a new failure must come from a change, not from luck);
        // `PROPTEST_RNG_SEED=N` explores others.
        rng_seed: std::env::var("PROPTEST_RNG_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .map_or(
                proptest::test_runner::RngSeed::Fixed(DEFAULT_SEED),
                proptest::test_runner::RngSeed::Fixed,
            ),
        ..ProptestConfig::default()
    }
}

/// Splits `bytes` at the given cut points (taken modulo the length), in order.
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points {
        out.push(&bytes[start..point]);
        start = point;
    }
    out.push(&bytes[start..]);
    out
}

/// Feeds `chunks` one by one, taking every frame after each, until the first error.
fn decode(framing: Framing, max_message: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(framing, max_message);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    // Waiting for more: what is held must stay bounded, whatever was sent.
                    let bound = max_message.max(MAX_HEADER_BYTES);
                    assert!(
                        decoder.buffered() <= bound,
                        "{framing} decoder holds {} bytes while waiting (bound {bound})",
                        decoder.buffered()
                    );
                    break;
                }
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

/// A message body as a front-end would write it: JSON-ish bytes without a line break (JSON escapes
/// them inside strings), sometimes empty or whitespace.
fn line_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>().prop_filter("no line break", |b| *b != b'\n'), 1..200),
        1 => proptest::string::string_regex(r#"\{"jsonrpc":"2\.0","id":[0-9]{1,6},"method":"[a-z/]{1,20}"\}"#)
            .expect("valid regex")
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Lines framing: whatever way the stream is cut into reads, the decoder returns exactly the
    /// non-blank lines that were sent (a trailing `\r` is part of the terminator).
    #[test]
    fn lines_round_trip_under_any_split(
        bodies in proptest::collection::vec(line_body(), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for body in &bodies {
            framing::encode(Framing::Lines, body, &mut stream);
        }
        let (frames, error) = decode(Framing::Lines, 1024, &chunks(&stream, &cuts));
        prop_assert!(error.is_none(), "unexpected error {error:?}");
        let expected: Vec<Vec<u8>> = bodies
            .iter()
            .map(|body| body.strip_suffix(b"\r").unwrap_or(body).to_vec())
            .filter(|body| !body.iter().all(u8::is_ascii_whitespace))
            .collect();
        prop_assert_eq!(frames, expected);
    }

    /// Content-Length framing carries any bytes, line breaks included, under any split.
    #[test]
    fn content_length_round_trip_under_any_split(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for body in &bodies {
            framing::encode(Framing::ContentLength, body, &mut stream);
        }
        let (frames, error) = decode(Framing::ContentLength, 1024, &chunks(&stream, &cuts));
        prop_assert!(error.is_none(), "unexpected error {error:?}");
        prop_assert_eq!(frames, bodies);
    }

    /// Any bytes at all, in either framing: no panic, a bounded buffer while waiting (checked in
    /// `decode`), no frame above the limit, and an error is a typed `FrameError`.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        stream in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        content_length in any::<bool>(),
        max_message in 1usize..2048,
    ) {
        let framing = if content_length { Framing::ContentLength } else { Framing::Lines };
        let (frames, _error) = decode(framing, max_message, &chunks(&stream, &cuts));
        for frame in frames {
            prop_assert!(frame.len() <= max_message, "a frame of {} bytes passed the limit {max_message}", frame.len());
        }
        // Detection looks at the first bytes only and never panics either.
        let _ = framing::detect(&stream);
    }

    /// Header blocks built from plausible pieces (names, separators, numbers, junk): the decoder
    /// either finds the body the header announced or refuses with a `FrameError`, never more.
    #[test]
    fn mutated_header_blocks_are_refused_or_honoured(
        name in prop_oneof![Just("Content-Length"), Just("content-length"), Just("Content-Type"), Just("X"), Just("")],
        separator in prop_oneof![Just(": "), Just(":"), Just(" "), Just("::")],
        value in prop_oneof![
            (0usize..64).prop_map(|n| n.to_string()),
            Just("-1".to_owned()),
            Just("99999999999999999999999".to_owned()),
            Just("12abc".to_owned()),
            Just(String::new()),
        ],
        terminator in prop_oneof![Just("\r\n\r\n"), Just("\n\n"), Just("\r\n"), Just("")],
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut stream = format!("{name}{separator}{value}{terminator}").into_bytes();
        stream.extend_from_slice(&body);
        let (frames, error) = decode(Framing::ContentLength, 1024, &[&stream]);
        if let Some(frame) = frames.first() {
            let announced: usize = value.parse().expect("a frame came out, so the header announced a number");
            prop_assert_eq!(frame.len(), announced);
            // With a complete terminator the body starts right after it. An incomplete one
            // (`\r\n`, nothing) may be completed by the body's own first bytes (`\r\n` + `\n`
            // ends a header block too), so then only the length is known.
            if matches!(terminator, "\r\n\r\n" | "\n\n") {
                prop_assert_eq!(&frame[..], &body[..announced]);
            }
        } else if error.is_none() {
            // Nothing yet and no error: the decoder must be waiting for more bytes.
            prop_assert!(terminator.len() < 4 || body.len() < value.parse::<usize>().unwrap_or(usize::MAX));
        }
    }
}

/// A marker no config message may quote: it stands for a secret in a value.
const SECRET: &str = "s3cr3t-VALUE-42";

/// Every key a server table may have, plus near misses and junk.
const SERVER_KEYS: &[&str] = &[
    "transport",
    "enabled",
    "startup_timeout_sec",
    "tool_timeout_sec",
    "stop_timeout_sec",
    "restart_backoff_initial_sec",
    "restart_backoff_max_sec",
    "crash_loop_limit",
    "enabled_tools",
    "disabled_tools",
    "roots",
    "command",
    "args",
    "env",
    "env_vars",
    "url",
    "bearer_token_env_var",
    "http_headers",
    "env_http_headers",
    "scopes",
    "oauth_resource",
    "oauth_client_id",
    "oauth_client_secret_env_var",
    "oauth_client_metadata_url",
    "oauth_client_secret_file",
    "oauth_grant",
    "oauth_client_auth",
    "oauth_private_key_env_var",
    "oauth_private_key_file",
    "oauth_private_key_algorithm",
    "oauth_assertion_env_var",
    "oauth_assertion_file",
    "oauth_idp_issuer",
    "oauth_idp_token_endpoint",
    "oauth_idp_client_id",
    "oauth_idp_client_secret_env_var",
    "oauth_idp_client_secret_file",
    "oauth_id_token_env_var",
    "oauth_id_token_file",
    "oauth_client_secret",
    "oauth_private_key",
    "oauth_assertion",
    "oauth_id_token",
    "oauth_idp_client_secret",
    "comand",
    "urll",
    "x",
];

/// Keys whose values a message may quote (`cwd` is not a secret and helps the user; names of
/// tools, variables and headers are keys, not values). Everything else holds the marker only
/// where a secret could really sit.
const QUOTABLE: &[&str] = &[
    "transport",
    "enabled_tools",
    "disabled_tools",
    "env_vars",
    "bearer_token_env_var",
    "env_http_headers",
    "oauth_client_secret_env_var",
    "scopes",
    "roots",
    "command",
];

/// A TOML value of any shape; strings carry the secret marker.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(format!("\"{SECRET}\"")),
        Just(format!("\"https://{SECRET}@example.invalid/?token={SECRET}\"")),
        Just("\"\"".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec((prop_oneof![Just("A"), Just("Authorization"), Just("k")], inner), 0..3)
                .prop_map(|pairs| {
                    let fields: Vec<String> = pairs
                        .into_iter()
                        .map(|(key, value)| format!("{key} = {value}"))
                        .collect();
                    format!("{{ {} }}", fields.join(", "))
                }),
        ]
    })
}

/// A config document: global keys, server tables with random fields, sometimes broken syntax.
fn config_text() -> impl Strategy<Value = String> {
    let server = (
        prop_oneof![
            Just("a"),
            Just("b-2"),
            Just("\"spaced name\""),
            Just("\"\""),
            Just("x.y")
        ],
        proptest::collection::vec((proptest::sample::select(SERVER_KEYS), toml_value()), 0..8),
    );
    (
        prop_oneof![
            Just(""),
            Just("credentials_store = \"file\"\n"),
            Just("oauth_callback_port = 70000\n")
        ],
        proptest::collection::vec(server, 0..4),
        prop_oneof![
            Just(""),
            Just("[servers\n"),
            Just("= 1\n"),
            Just("[[servers.a]]\n"),
            Just("servers = 3\n")
        ],
    )
        .prop_map(|(globals, servers, tail)| {
            let mut text = globals.to_owned();
            for (name, fields) in servers {
                text.push_str(&format!("[servers.{name}]\n"));
                for (key, value) in fields {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            text.push_str(tail);
            text
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any text, valid TOML or not: the parser answers (no panic) with a config or with problems
    /// that each carry a message and a position inside the text.
    #[test]
    fn arbitrary_text_parses_or_names_problems(text in ".{0,400}") {
        check_config(&text, false)?;
    }

    /// Structured documents with the secret marker in every kind of value: no problem message
    /// quotes a value of a field that may hold a secret.
    #[test]
    fn config_problems_never_quote_secret_values(text in config_text()) {
        check_config(&text, true)?;
    }

    /// The JSON entry of `mcpServer/add` goes through the same rules: no panic, no echoed secret.
    #[test]
    fn session_server_entries_never_quote_secret_values(
        fields in proptest::collection::vec((proptest::sample::select(SERVER_KEYS), toml_value()), 0..8),
    ) {
        let mut text = String::from("[servers.s]\n");
        for (key, value) in &fields {
            text.push_str(&format!("{key} = {value}\n"));
        }
        // Build the JSON entry from the TOML table when it parses as TOML at all.
        let Ok(document) = text.parse::<toml::Table>() else { return Ok(()) };
        let Some(entry) = document.get("servers").and_then(|servers| servers.get("s")) else { return Ok(()) };
        let entry = serde_json::to_value(entry).expect("TOML values convert to JSON");
        if let Err(problems) = config::parse_server_json("s", &entry) {
            for problem in problems {
                let message = problem.to_string();
                let quotable = problem.field.as_deref().is_some_and(|field| QUOTABLE.contains(&field));
                prop_assert!(quotable || !message.contains(SECRET), "a problem quotes a secret value: {message}");
            }
        }
    }
}

fn check_config(text: &str, secrets: bool) -> Result<(), TestCaseError> {
    let path = Path::new("fuzz.toml");
    match config::parse(text, path) {
        Ok(_) => {}
        Err(ConfigError::Invalid { problems, .. }) => {
            prop_assert!(!problems.is_empty(), "an invalid config must name at least one problem");
            let lines = text.lines().count().max(1) + 1;
            for problem in problems {
                let message = problem.to_string();
                prop_assert!(!problem.message.is_empty(), "a problem without a message");
                if let Some(line) = problem.line {
                    prop_assert!(
                        line >= 1 && line <= lines,
                        "line {line} outside the text ({lines} lines): {message}"
                    );
                }
                let quotable = problem.field.as_deref().is_some_and(|field| QUOTABLE.contains(&field));
                if secrets && !quotable {
                    prop_assert!(!message.contains(SECRET), "a problem quotes a secret value: {message}");
                }
            }
        }
        Err(other) => prop_assert!(false, "parse of text cannot fail with {other}"),
    }
    Ok(())
}
