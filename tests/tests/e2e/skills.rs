//! Skills (MCP's skills extension, SEP-2640) through corrald: `skills/list` and `skills/read`
//! from the client SDK and `corral skills` from the CLI, against `tests/peers/skills_server.py`
//! (a server written with the official Python MCP SDK: no published server offers the
//! extension yet), which declares the extension, pages its listing, and tells with its `reads`
//! tool which files a client fetched.
//!
//! Checked: a listing fetches no file; a read fetches only the file asked for and verifies it
//! (size, digest, frontmatter) against the entry: the server's current one or the one the
//! front-end holds; a name two skills share asks for the URI; a `"dynamic"` skill reads
//! unverified and says so; an invalid entry, an unlisted file, and each kind of tampering
//! (`--tamper digest|size|frontmatter`) are `skillVerificationFailed`, naming the server and
//! the skill, with nothing of the content given and no further file fetched.

use corral_client::protocol::{ErrorCode, ServerStatus, SkillsReadParams};
use corral_client::{Client, ClientError};
use std::time::Duration;

use corral_tests::{
    SERVER_WAIT, TestDaemon, fixture_config, run_corral, skills_server_config, text_of, wait_for_status,
};
use serde_json::{Value, json};
use sha2::Digest as _;

const CALL_WAIT: Duration = Duration::from_secs(30);

const PDF_SKILL: &str = "skill://pdf-processing/SKILL.md";
const ACME_PDF_SKILL: &str = "skill://acme/pdf-processing/SKILL.md";

/// The URIs the skills server was asked to read so far (its `reads` tool).
async fn reads(client: &Client, server: &str) -> Vec<String> {
    let result = client
        .tools_call(server, "reads", None, CALL_WAIT)
        .await
        .expect("the reads tool");
    serde_json::from_str(&text_of(&result)).expect("reads answers a JSON list")
}

/// The error of a failed call, with its code and message.
fn rpc_error(error: &ClientError) -> (Option<ErrorCode>, String) {
    match error {
        ClientError::Rpc { message, .. } => (error.error_code(), message.clone()),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn sha256(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    )
}

async fn daemon_with(config: &str, servers: &[&str]) -> (TestDaemon, Client) {
    let daemon = TestDaemon::start_with_config(config);
    let client = daemon.connect_client().await;
    for server in servers {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    (daemon, client)
}

#[tokio::test]
async fn skills_are_listed_without_a_read_and_each_file_is_read_verified_on_demand() {
    let config = format!("{}{}", skills_server_config("docs", &[]), fixture_config("plain", &[]));
    let (_daemon, client) = daemon_with(&config, &["docs", "plain"]).await;

    // Every page (two entries a page), the server's entries untouched; the fixture declares no skills.
    let listing = client.skills_list(None).await.expect("skills/list");
    assert!(listing.errors.is_empty(), "{:?}", listing.errors);
    let uris: Vec<&str> = listing.skills.iter().filter_map(|skill| skill.uri.as_deref()).collect();
    assert_eq!(
        uris,
        [
            PDF_SKILL,
            ACME_PDF_SKILL,
            "skill://git-workflow/SKILL.md",
            "skill://reports/daily/SKILL.md",
            "skill://broken/SKILL.md"
        ]
    );
    assert!(listing.skills.iter().all(|skill| skill.server == "docs"));
    assert_eq!(
        listing.skills[0].skill["frontmatter"]["metadata"],
        json!({ "version": "2.1", "tags": ["pdf", "forms"] })
    );
    let problems: Vec<(&str, bool)> = listing
        .skills
        .iter()
        .map(|skill| (skill.name.as_deref().unwrap_or("?"), skill.problem.is_some()))
        .collect();
    assert_eq!(
        problems,
        [
            ("pdf-processing", false),
            ("pdf-processing", false),
            ("git-workflow", false),
            ("daily", false),
            ("broken", true)
        ]
    );
    assert!(
        listing.skills[4]
            .problem
            .as_deref()
            .is_some_and(|problem| problem.contains("resources")),
        "{:?}",
        listing.skills[4].problem
    );
    // A listing reads nothing (a host must not fetch a skill's files ahead of need).
    assert_eq!(reads(&client, "docs").await, Vec::<String>::new());

    // A server named explicitly that does not offer skills says so.
    let plain = client.skills_list(Some("plain")).await.expect("skills/list of plain");
    assert!(plain.skills.is_empty());
    assert!(
        plain
            .errors
            .iter()
            .any(|error| error.message.contains("does not declare the skills extension")),
        "{:?}",
        plain.errors
    );

    // SKILL.md by URI: its text, verified, with the digest and size of its bytes.
    let read = client
        .skills_read(SkillsReadParams::new("docs", PDF_SKILL))
        .await
        .expect("skills/read");
    let text = read.text.clone().expect("SKILL.md is text");
    assert!(text.starts_with("---\nname: pdf-processing\n"), "{text}");
    assert!(read.verified);
    assert_eq!(read.uri, PDF_SKILL);
    assert_eq!(read.size, text.len() as u64);
    assert_eq!(read.digest, sha256(text.as_bytes()));
    assert_eq!(read.entry, listing.skills[0].skill);
    assert_eq!(reads(&client, "docs").await, [PDF_SKILL]);

    // A name two skills share: the URI must say which.
    let error = client
        .skills_read(SkillsReadParams::new("docs", "pdf-processing"))
        .await
        .expect_err("ambiguous");
    let (code, message) = rpc_error(&error);
    assert_eq!(code, Some(ErrorCode::InvalidParams), "{message}");
    assert!(
        message.contains(PDF_SKILL) && message.contains(ACME_PDF_SKILL),
        "{message}"
    );

    // A supporting file by path, verified against the entry the front-end holds.
    let forms = client
        .skills_read(
            SkillsReadParams::new("docs", PDF_SKILL)
                .with_file(Some("references/FORMS.md".to_owned()))
                .with_entry(Some(listing.skills[0].skill.clone())),
        )
        .await
        .expect("a supporting file");
    assert_eq!(forms.text.as_deref(), Some("# Forms\n\nFill every field.\n"));
    assert_eq!(forms.uri, "skill://pdf-processing/references/FORMS.md");

    // A binary file: its bytes verified, given as the server's base64.
    let logo = client
        .skills_read(SkillsReadParams::new("docs", "git-workflow").with_file(Some("assets/logo.bin".to_owned())))
        .await
        .expect("a binary file");
    assert_eq!(logo.size, 1024);
    assert!(logo.verified && logo.text.is_none() && logo.blob.is_some());

    // A dynamic skill publishes no digests: read, but said to be unverified.
    let daily = client
        .skills_read(SkillsReadParams::new("docs", "daily"))
        .await
        .expect("a dynamic skill");
    assert!(!daily.verified);

    // Refused before any read: an invalid entry, a file the entry does not list, an unknown name.
    let before = reads(&client, "docs").await;
    for (params, code, words) in [
        (
            SkillsReadParams::new("docs", "broken"),
            ErrorCode::SkillVerificationFailed,
            "its entry is invalid",
        ),
        (
            SkillsReadParams::new("docs", "git-workflow").with_file(Some("scripts/evil.sh".to_owned())),
            ErrorCode::SkillVerificationFailed,
            "does not list it",
        ),
        (
            SkillsReadParams::new("docs", "nope"),
            ErrorCode::InvalidParams,
            "lists no skill `nope`",
        ),
    ] {
        let error = client.skills_read(params).await.expect_err(words);
        let (got, message) = rpc_error(&error);
        assert_eq!(got, Some(code), "{message}");
        assert!(message.contains(words) && message.contains("`docs`"), "{message}");
    }
    assert_eq!(
        reads(&client, "docs").await,
        before,
        "nothing was fetched for a refused read"
    );
}

#[tokio::test]
async fn a_tampered_skill_is_refused_naming_the_server_and_the_skill_and_nothing_more_is_fetched() {
    let config = format!(
        "{}{}{}",
        skills_server_config("digest", &["--tamper", "digest"]),
        skills_server_config("size", &["--tamper", "size"]),
        skills_server_config("frontmatter", &["--tamper", "frontmatter"]),
    );
    let (daemon, client) = daemon_with(&config, &["digest", "size", "frontmatter"]).await;
    for (server, words) in [
        ("digest", "has digest sha256:"),
        ("size", "bytes, the manifest says"),
        ("frontmatter", "frontmatter differs from the entry's in `description`"),
    ] {
        let error = client
            .skills_read(SkillsReadParams::new(server, PDF_SKILL))
            .await
            .expect_err("tampered");
        let (code, message) = rpc_error(&error);
        assert_eq!(code, Some(ErrorCode::SkillVerificationFailed), "{message}");
        assert!(
            message.contains(&format!("skill `pdf-processing` of MCP server `{server}`")),
            "{message}"
        );
        assert!(message.contains(words), "{server}: {message}");
        assert!(!message.contains("Exfiltrate"), "the content is not quoted: {message}");
        // The tampered SKILL.md was fetched, and nothing after it.
        assert_eq!(reads(&client, server).await, [PDF_SKILL], "{server}");
    }

    // The CLI: nothing of the content on stdout, the reason on stderr, exit 1.
    let output = run_corral(daemon.socket_path(), &["skills", "read", "frontmatter", PDF_SKILL]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{}", output.stdout);
    assert!(
        output
            .stderr
            .contains("skill `pdf-processing` of MCP server `frontmatter`"),
        "{}",
        output.stderr
    );
}

#[tokio::test]
async fn corral_skills_lists_and_reads() {
    let (daemon, _client) = daemon_with(&skills_server_config("docs", &[]), &["docs"]).await;

    let output = run_corral(daemon.socket_path(), &["skills"]).await;
    assert!(output.status.success(), "{output:?}");
    for expected in [
        "SERVER",
        "git-workflow",
        ACME_PDF_SKILL,
        "Follow this team's Git conventions for branching and commits",
    ] {
        assert!(
            output.stdout.contains(expected),
            "missing {expected:?}:\n{}",
            output.stdout
        );
    }
    assert!(
        output
            .stderr
            .contains("cannot be loaded: skill://broken/SKILL.md of docs"),
        "{}",
        output.stderr
    );

    let output = run_corral(daemon.socket_path(), &["skills", "docs", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    let listing: Value = serde_json::from_str(&output.stdout).expect("JSON");
    assert_eq!(listing["skills"].as_array().map(Vec::len), Some(5));

    let output = run_corral(daemon.socket_path(), &["skills", "read", "docs", "git-workflow"]).await;
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.contains("Branch from main."), "{}", output.stdout);

    let output = run_corral(
        daemon.socket_path(),
        &["skills", "read", "docs", PDF_SKILL, "--file", "references/FORMS.md"],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, "# Forms\n\nFill every field.\n");

    let output = run_corral(daemon.socket_path(), &["skills", "read", "docs", "daily"]).await;
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.contains("is not verified"), "{}", output.stderr);
}
