//! A server's skills (MCP's skills extension, `io.modelcontextprotocol/skills`, SEP-2640):
//! listed with `skills/list` when the server declares the extension, and one file of one
//! skill loaded, verified against the skill's entry ([`read`]).
//!
//! Listing reads no file (a host must not fetch a skill's files ahead of need). Each entry is
//! passed on as the server wrote it, with the problem that keeps it from loading when it
//! breaks a rule of the extension (rmcp's `Skill::validate`: the URI ends in `/SKILL.md`, its
//! last segment is the frontmatter's name, the manifest lists `SKILL.md` once and nothing
//! outside the skill, digests are `sha256:` and 64 lowercase hex digits).
//!
//! Loading a file ([`read`]) holds one entry: the front-end's (the entry it loaded the skill
//! from) or the server's current one (its listing, then `skills/get` for a URI the listing does
//! not have: a listing may be partial). The file must be listed in the entry (an unlisted file
//! is a change to the skill); its bytes, read with `resources/read` (text as UTF-8, a blob
//! decoded from base64), must have the entry's size (checked first, without hashing) and
//! SHA-256 digest; a `SKILL.md`'s YAML frontmatter must equal the entry's `frontmatter` field by
//! field (a key missing on one side counts as `null`, as the conformance suite compares). The
//! frontmatter is read without recursion, at most 64 KiB and 64 levels deep, without aliases
//! (a server's file must not exhaust corrald's stack or memory); beyond, it is a mismatch.
//! Any mismatch is a [`SkillError::Verification`] and the content goes nowhere. A skill whose
//! `resources` is `"dynamic"` has no digests: its files are read unverified (and say so), the
//! frontmatter still compared.
//!
//! Digests are no trust anchor (the server supplies both the entry and the bytes): what the
//! check gives a front-end is that what it showed the user from the entry is what it loads.

use base64::Engine as _;
use rmcp::model::{
    ClientRequest, GetSkillRequest, GetSkillRequestParams, ListSkillsRequest, PaginatedRequestParams,
    ReadResourceRequest, ReadResourceRequestParams, SKILL_MD, Skill, SkillResource, SkillResources, sha256_digest,
};
use serde_json::{Map, Value};

use super::forward;
use super::route::{CallTarget, RouteError};

/// Why a skill's file could not be given to a front-end.
#[derive(Debug)]
pub(crate) enum SkillError {
    /// A request to the server failed.
    Route {
        /// The request, in words ("`skills/list`").
        request: String,
        /// How.
        error: RouteError,
    },
    /// The server has no skill by that name or URI.
    NotFound {
        /// What was asked for.
        wanted: String,
        /// The names it lists, for the message.
        listed: Vec<String>,
    },
    /// Two or more skills share the name: the URI must say which.
    Ambiguous {
        /// The name.
        name: String,
        /// Their `SKILL.md` URIs.
        uris: Vec<String>,
    },
    /// The entry breaks a rule of the skills extension: nothing of the skill is loaded.
    InvalidEntry {
        /// The skill as asked for.
        skill: String,
        /// The rule it breaks.
        problem: String,
    },
    /// The file asked for is not one of the skill's.
    NotInSkill {
        /// The skill's `SKILL.md` URI.
        skill: String,
        /// The file as asked for.
        file: String,
    },
    /// What the server served does not match the entry; the content was not used.
    Verification {
        /// The skill's name.
        skill: String,
        /// What differs.
        mismatch: String,
    },
}

impl SkillError {
    fn route(request: impl Into<String>, error: RouteError) -> Self {
        Self::Route {
            request: request.into(),
            error,
        }
    }
}

/// Whether `target`'s server declared the skills extension at `initialize`.
pub(crate) fn offered_by(target: &CallTarget) -> bool {
    target
        .peer()
        .peer_info()
        .is_some_and(|info| info.capabilities.supports_skills())
}

/// Every entry of the server's `skills/list`, as the server wrote them, each with the problem
/// that keeps it from loading (`None`: sound). A repeated cursor, or too many pages, is an
/// error, never a loop ([`forward::all_pages`]).
pub(crate) async fn list(target: &CallTarget) -> Result<Vec<(Value, Option<String>)>, RouteError> {
    let entries = forward::all_pages(|cursor| async move {
        let mut params = PaginatedRequestParams::default();
        params.cursor = cursor;
        let request = ClientRequest::ListSkillsRequest(ListSkillsRequest {
            method: Default::default(),
            params: Some(params),
            extensions: Default::default(),
        });
        let page = forward::request_value(target, request).await?;
        Ok((page_entries(&page)?, forward::next_cursor(&page)))
    })
    .await?;
    let checked = entries
        .into_iter()
        .map(|entry| {
            let problem = entry_problem(&entry).err();
            (entry, problem)
        })
        .collect();
    Ok(checked)
}

/// The entries of one page of `skills/list`.
fn page_entries(page: &Value) -> Result<Vec<Value>, RouteError> {
    match page.get("skills") {
        Some(Value::Array(skills)) => Ok(skills.clone()),
        _ => Err(RouteError::Failed {
            message: "the answer to `skills/list` has no `skills` array".to_owned(),
        }),
    }
}

/// The entry as rmcp's typed `Skill`, if it keeps every rule that can be checked without
/// reading a file; else the rule it breaks, in words.
fn entry_problem(entry: &Value) -> Result<Skill, String> {
    let skill: Skill = serde_json::from_value(entry.clone()).map_err(|error| format!("not a skill entry: {error}"))?;
    skill.validate().map_err(|error| error.to_string())?;
    Ok(skill)
}

/// One file of one skill, verified: what `skills/read` answers.
#[derive(Debug)]
pub(crate) struct SkillFile {
    /// The URI of the skill's `SKILL.md`.
    pub(crate) skill_uri: String,
    /// The URI of the file.
    pub(crate) uri: String,
    /// Its MIME type, as the server gave it.
    pub(crate) mime_type: Option<String>,
    /// A text file's content.
    pub(crate) text: Option<String>,
    /// A binary file's content, base64 as the server sent it.
    pub(crate) blob: Option<String>,
    /// Its length in bytes.
    pub(crate) size: u64,
    /// Its `sha256:` digest.
    pub(crate) digest: String,
    /// Whether it was checked against a digest of the entry (not for a `"dynamic"` skill).
    pub(crate) verified: bool,
    /// The entry it was checked against.
    pub(crate) entry: Value,
}

/// Load `file` (a URI, a path under the skill's root, or `SKILL.md` when `None`) of `skill`
/// (a name or a `SKILL.md` URI) of `target`'s server, verified against `held` (the entry the
/// front-end holds) or the server's current entry. See the module documentation.
pub(crate) async fn read(
    target: &CallTarget,
    skill: &str,
    file: Option<&str>,
    held: Option<Value>,
) -> Result<SkillFile, SkillError> {
    let entry = match held {
        Some(entry) => entry,
        None => current_entry(target, skill).await?,
    };
    let typed = entry_problem(&entry).map_err(|problem| SkillError::InvalidEntry {
        skill: skill.to_owned(),
        problem,
    })?;
    if !skill.contains("://") && typed.name() != skill || skill.contains("://") && typed.uri != skill {
        return Err(SkillError::InvalidEntry {
            skill: skill.to_owned(),
            problem: format!("the entry given is the entry of `{}`, not of `{skill}`", typed.uri),
        });
    }
    let (uri, listed) = file_of(&typed, file)?;
    let request =
        ClientRequest::ReadResourceRequest(ReadResourceRequest::new(ReadResourceRequestParams::new(uri.clone())));
    let what = format!("`resources/read` of `{uri}`");
    let result = forward::request_value(target, request)
        .await
        .map_err(|error| SkillError::route(what.clone(), error))?;
    if let Some(message) = not_contents(&result) {
        return Err(SkillError::route(what, RouteError::Failed { message }));
    }
    let mismatch = |mismatch: String| SkillError::Verification {
        skill: typed.name().to_owned(),
        mismatch,
    };
    let content = Content::of(&result, &uri).map_err(mismatch)?;
    if let Some(listed) = listed {
        listed
            .verify(&content.bytes)
            .map_err(|error| mismatch(error.to_string()))?;
    }
    if uri == typed.uri {
        let text = content
            .text
            .as_deref()
            .ok_or_else(|| mismatch(format!("{uri} is not text, so it has no frontmatter to compare")))?;
        compare_frontmatter(text, &entry).map_err(|difference| mismatch(format!("{uri}: {difference}")))?;
    }
    Ok(SkillFile {
        skill_uri: typed.uri.clone(),
        size: u64::try_from(content.bytes.len()).unwrap_or(u64::MAX),
        digest: sha256_digest(&content.bytes),
        verified: listed.is_some(),
        uri,
        mime_type: content.mime_type,
        text: content.text,
        blob: content.blob,
        entry,
    })
}

/// The server's current entry of `wanted` (a name or a `SKILL.md` URI): from its listing,
/// else, for a URI, from `skills/get` (a listing may be partial).
async fn current_entry(target: &CallTarget, wanted: &str) -> Result<Value, SkillError> {
    let listing = list(target)
        .await
        .map_err(|error| SkillError::route("`skills/list`", error))?;
    let entries: Vec<Value> = listing.into_iter().map(|(entry, _)| entry).collect();
    match find(&entries, wanted) {
        Ok(entry) => Ok(entry.clone()),
        Err(SkillError::NotFound { .. }) if wanted.contains("://") => {
            let request = ClientRequest::GetSkillRequest(GetSkillRequest::new(GetSkillRequestParams::new(wanted)));
            let what = format!("`skills/get` of `{wanted}`");
            let result = forward::request_value(target, request)
                .await
                .map_err(|error| SkillError::route(what.clone(), error))?;
            result.get("skill").cloned().ok_or_else(|| {
                SkillError::route(
                    what,
                    RouteError::Failed {
                        message: "the answer has no `skill`".to_owned(),
                    },
                )
            })
        }
        Err(error) => Err(error),
    }
}

/// The entry of `wanted` among `entries`: the one whose `uri` it is, or the one whose
/// frontmatter names it (two of that name are [`SkillError::Ambiguous`]: names are labels).
fn find<'a>(entries: &'a [Value], wanted: &str) -> Result<&'a Value, SkillError> {
    let uri_of = |entry: &Value| entry.get("uri").and_then(Value::as_str).map(str::to_owned);
    let name_of = |entry: &'a Value| {
        entry
            .get("frontmatter")
            .and_then(|frontmatter| frontmatter.get("name"))
            .and_then(Value::as_str)
    };
    if let Some(entry) = entries.iter().find(|entry| uri_of(entry).as_deref() == Some(wanted)) {
        return Ok(entry);
    }
    let named: Vec<&Value> = entries.iter().filter(|entry| name_of(entry) == Some(wanted)).collect();
    match named.as_slice() {
        [entry] => Ok(entry),
        [] => Err(SkillError::NotFound {
            wanted: wanted.to_owned(),
            listed: entries.iter().filter_map(name_of).map(str::to_owned).collect(),
        }),
        several => Err(SkillError::Ambiguous {
            name: wanted.to_owned(),
            uris: several.iter().filter_map(|entry| uri_of(entry)).collect(),
        }),
    }
}

/// The URI of `file` of `skill` and its manifest entry (`None` for a `"dynamic"` skill, whose
/// files have none). A path resolves against the skill's root (the directory of its
/// `SKILL.md`); the file must be listed (an unlisted file is a change to the skill) or, for a
/// dynamic skill, lie under the root.
fn file_of<'a>(skill: &'a Skill, file: Option<&str>) -> Result<(String, Option<&'a SkillResource>), SkillError> {
    let root = skill.uri.strip_suffix(SKILL_MD).unwrap_or(&skill.uri);
    let uri = match file {
        None => skill.uri.clone(),
        Some(file) if file.contains("://") => file.to_owned(),
        Some(file) => format!("{root}{}", file.trim_start_matches("./")),
    };
    let not_in_skill = || SkillError::NotInSkill {
        skill: skill.uri.clone(),
        file: file.unwrap_or(SKILL_MD).to_owned(),
    };
    match &skill.resources {
        SkillResources::Files(files) => files
            .iter()
            .find(|listed| listed.uri == uri)
            .map(|listed| (uri.clone(), Some(listed)))
            .ok_or_else(not_in_skill),
        SkillResources::Dynamic if uri.starts_with(root) && !uri.split('/').any(|segment| segment == "..") => {
            Ok((uri, None))
        }
        _ => Err(not_in_skill()),
    }
}

/// A file's content as `resources/read` gave it, and its raw bytes.
struct Content {
    bytes: Vec<u8>,
    mime_type: Option<String>,
    text: Option<String>,
    blob: Option<String>,
}

/// Why `result`, the answer to a `resources/read` of a skill file, is no read result at all
/// (MCP 2026-07-28's `resultType`: a question or a task instead of the contents), in words;
/// `None` when it is one. Not a mismatch: the server did not serve other bytes, it asked
/// something first, which corrald does not do while loading a skill.
fn not_contents(result: &Value) -> Option<String> {
    match result.get("resultType").and_then(Value::as_str)? {
        "complete" => None,
        "input_required" => Some(
            "the server asked for input (an `input_required` result) instead of giving the file; corrald answers \
             no questions while loading a skill: report it to the server's authors"
                .to_owned(),
        ),
        "task" => Some(
            "the server answered with a task instead of the file; corrald follows no task while loading a skill"
                .to_owned(),
        ),
        other => Some(format!(
            "the server answered with a result of type `{other}`, not the file's contents"
        )),
    }
}

impl Content {
    /// The content of `uri` in a `ReadResourceResult` (the item of that URI, else the only one).
    fn of(result: &Value, uri: &str) -> Result<Self, String> {
        let contents = result
            .get("contents")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("the answer to `resources/read` of {uri} has no `contents`"))?;
        let item = contents
            .iter()
            .find(|item| item.get("uri").and_then(Value::as_str) == Some(uri))
            .or(match contents.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .ok_or_else(|| format!("the answer to `resources/read` of {uri} has no content for it"))?;
        let mime_type = item.get("mimeType").and_then(Value::as_str).map(str::to_owned);
        if let Some(text) = item.get("text").and_then(Value::as_str) {
            return Ok(Self {
                bytes: text.as_bytes().to_vec(),
                mime_type,
                text: Some(text.to_owned()),
                blob: None,
            });
        }
        let blob = item
            .get("blob")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the content of {uri} has neither `text` nor `blob`"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|_| format!("the `blob` of {uri} is not base64"))?;
        Ok(Self {
            bytes,
            mime_type,
            text: None,
            blob: Some(blob.to_owned()),
        })
    }
}

/// Compare the YAML frontmatter of `text` (a `SKILL.md`) with the `frontmatter` of `entry`,
/// field by field; a key on one side only must be `null` on the other. The difference, in
/// words, naming the fields (their values may be long: not quoted).
fn compare_frontmatter(text: &str, entry: &Value) -> Result<(), String> {
    let listed = entry
        .get("frontmatter")
        .and_then(Value::as_object)
        .ok_or("the entry has no frontmatter object")?;
    let written = frontmatter(text)?;
    let mut keys: Vec<&String> = written.keys().chain(listed.keys()).collect();
    keys.sort();
    keys.dedup();
    let differing: Vec<&str> = keys
        .into_iter()
        .filter(|key| written.get(*key).unwrap_or(&Value::Null) != listed.get(*key).unwrap_or(&Value::Null))
        .map(String::as_str)
        .collect();
    if differing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "its frontmatter differs from the entry's in {}",
            differing
                .iter()
                .map(|key| format!("`{key}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Most bytes of a `SKILL.md`'s YAML frontmatter corrald reads.
const FRONTMATTER_MAX_BYTES: usize = 64 * 1024;

/// Deepest nesting of sequences and mappings in a frontmatter corrald reads.
const FRONTMATTER_MAX_DEPTH: usize = 64;

/// The YAML frontmatter at the start of `text` (after an optional byte-order mark: a `---`
/// line, the YAML, a `---` line), as a JSON object.
fn frontmatter(text: &str) -> Result<Map<String, Value>, String> {
    const MISSING: &str = "it does not begin with YAML frontmatter (a `---` line, the YAML, a `---` line)";
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\r\n")
        .or_else(|| text.strip_prefix("---\n"))
        .ok_or(MISSING)?;
    // The block ends at the first line that is `---` (trailing blanks allowed).
    let mut yaml_end = None;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\n', '\r']).trim_end_matches([' ', '\t']) == "---" {
            yaml_end = Some(offset);
            break;
        }
        offset += line.len();
        if offset > FRONTMATTER_MAX_BYTES {
            break;
        }
    }
    let Some(yaml_end) = yaml_end else {
        return Err(if offset > FRONTMATTER_MAX_BYTES {
            format!("its frontmatter is longer than corrald reads ({FRONTMATTER_MAX_BYTES} bytes)")
        } else {
            MISSING.to_owned()
        });
    };
    match yaml_document(&rest[..yaml_end])? {
        Some(Value::Object(map)) => Ok(map),
        Some(_) | None => Err("its frontmatter is not a YAML mapping".to_owned()),
    }
}

/// The first document of `yaml` as JSON (YAML 1.2's core schema: the JSON types), `None` when
/// empty. Built from the parser's events with an explicit stack (yaml-rust2's loader recurses
/// once per nesting level, so deep input would overflow the stack): nesting deeper than
/// [`FRONTMATTER_MAX_DEPTH`] is refused, and so are aliases (one alias may stand for a large
/// tree, and a few for an exponential one) and duplicate keys.
fn yaml_document(yaml: &str) -> Result<Option<Value>, String> {
    use yaml_rust2::parser::{Event, Parser};

    /// A sequence or mapping whose end has not been read yet.
    enum Open {
        Sequence(Vec<Value>),
        /// The entries so far, and the key waiting for its value.
        Mapping(Map<String, Value>, Option<String>),
    }
    let not_yaml = |error: yaml_rust2::ScanError| format!("its frontmatter is not YAML: {error}");
    let mut parser = Parser::new_from_str(yaml);
    let mut open: Vec<Open> = Vec::new();
    loop {
        let (event, _) = parser.next_token().map_err(not_yaml)?;
        let complete = match event {
            Event::Nothing | Event::StreamStart | Event::DocumentStart => continue,
            Event::StreamEnd | Event::DocumentEnd => return Ok(None),
            Event::Alias(_) => return Err("its frontmatter uses a YAML alias, which corrald does not read".to_owned()),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if matches!(open.last(), Some(Open::Mapping(_, None))) {
                    return Err("its frontmatter has a mapping key that is not a scalar".to_owned());
                }
                if open.len() >= FRONTMATTER_MAX_DEPTH {
                    return Err(format!(
                        "its frontmatter nests deeper than corrald reads ({FRONTMATTER_MAX_DEPTH} levels)"
                    ));
                }
                open.push(if matches!(event, Event::SequenceStart(..)) {
                    Open::Sequence(Vec::new())
                } else {
                    Open::Mapping(Map::new(), None)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(Open::Sequence(items)) => Value::Array(items),
                Some(Open::Mapping(map, _)) => Value::Object(map),
                None => return Err("its frontmatter is not YAML: an end without a start".to_owned()),
            },
            Event::Scalar(text, style, _, tag) => {
                let scalar = yaml_scalar(text, style, tag.as_ref());
                if let Some(Open::Mapping(_, key @ None)) = open.last_mut() {
                    *key = Some(yaml_key(scalar)?);
                    continue;
                }
                scalar_to_json(scalar)?
            }
        };
        match open.last_mut() {
            None => return Ok(Some(complete)),
            Some(Open::Sequence(items)) => items.push(complete),
            Some(Open::Mapping(map, key)) => {
                let key = key
                    .take()
                    .ok_or("its frontmatter has a mapping key that is not a scalar")?;
                if map.contains_key(&key) {
                    return Err(format!("its frontmatter has the key `{key}` twice in one mapping"));
                }
                map.insert(key, complete);
            }
        }
    }
}

/// A scalar as yaml-rust2's loader types it: quoted is a string, a `!!bool`/`!!int`/`!!float`/
/// `!!null` tag types it (a value that does not fit is `BadValue`), else by its form.
fn yaml_scalar(
    text: String,
    style: yaml_rust2::scanner::TScalarStyle,
    tag: Option<&yaml_rust2::parser::Tag>,
) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    use yaml_rust2::scanner::TScalarStyle;
    if style != TScalarStyle::Plain {
        return Yaml::String(text);
    }
    let Some(tag) = tag else {
        return Yaml::from_str(&text);
    };
    if tag.handle != "tag:yaml.org,2002:" {
        return Yaml::String(text);
    }
    match tag.suffix.as_str() {
        "bool" => match text.as_str() {
            "true" | "True" | "TRUE" => Yaml::Boolean(true),
            "false" | "False" | "FALSE" => Yaml::Boolean(false),
            _ => Yaml::BadValue,
        },
        "int" => text.parse::<i64>().map_or(Yaml::BadValue, Yaml::Integer),
        "float" => match Yaml::Real(text.clone()).as_f64() {
            Some(_) => Yaml::Real(text),
            None => Yaml::BadValue,
        },
        "null" => match text.as_str() {
            "~" | "null" => Yaml::Null,
            _ => Yaml::BadValue,
        },
        _ => Yaml::String(text),
    }
}

/// A scalar mapping key as a JSON object key.
fn yaml_key(key: yaml_rust2::Yaml) -> Result<String, String> {
    use yaml_rust2::Yaml;
    Ok(match key {
        Yaml::String(key) | Yaml::Real(key) => key,
        Yaml::Integer(key) => key.to_string(),
        Yaml::Boolean(key) => key.to_string(),
        Yaml::Null => "null".to_owned(),
        _ => return Err("its frontmatter has a mapping key that is not a scalar".to_owned()),
    })
}

/// A scalar YAML value as JSON (YAML 1.2's core schema: the JSON types).
fn scalar_to_json(yaml: yaml_rust2::Yaml) -> Result<Value, String> {
    use yaml_rust2::Yaml;
    let cannot = |why: String| format!("its frontmatter cannot be read: {why}");
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(value) => Value::Bool(value),
        Yaml::Integer(value) => Value::from(value),
        Yaml::Real(text) => {
            let value = Yaml::Real(text.clone())
                .as_f64()
                .ok_or_else(|| cannot(format!("`{text}` is not a number")))?;
            serde_json::Number::from_f64(value)
                .map(Value::Number)
                .ok_or_else(|| cannot("an infinite or NaN number has no JSON form".to_owned()))?
        }
        Yaml::String(value) => Value::String(value),
        Yaml::Array(_) | Yaml::Hash(_) | Yaml::Alias(_) | Yaml::BadValue => {
            return Err(cannot("a tagged value does not fit its tag".to_owned()));
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SKILL_MD: &str =
        "---\nname: pdf-processing\ndescription: Extract, fill, and assemble PDF documents\n---\n\nSkill body.\n";

    fn entry(body: &str) -> Value {
        json!({
            "uri": "skill://pdf-processing/SKILL.md",
            "frontmatter": { "name": "pdf-processing", "description": "Extract, fill, and assemble PDF documents" },
            "resources": [
                { "uri": "skill://pdf-processing/SKILL.md", "digest": sha256_digest(body.as_bytes()), "size": body.len() },
                { "uri": "skill://pdf-processing/references/FORMS.md", "digest": sha256_digest(b"forms"), "size": 5 }
            ]
        })
    }

    #[test]
    fn frontmatter_equal_in_content_passes_whatever_the_yaml_style() {
        let text = "\u{feff}---\r\nname: 'pdf-processing'\r\ndescription: >-\r\n  Extract, fill, and assemble\r\n  PDF documents\r\n---  \r\nbody";
        compare_frontmatter(text, &entry(SKILL_MD)).expect("same content");
        compare_frontmatter(SKILL_MD, &entry(SKILL_MD)).expect("same content");
    }

    #[test]
    fn a_changed_missing_or_extra_field_is_named() {
        let evil = SKILL_MD.replace("Extract, fill, and assemble PDF documents", "Exfiltrate credentials");
        let error = compare_frontmatter(&evil, &entry(SKILL_MD)).expect_err("description differs");
        assert!(error.contains("`description`"), "{error}");
        assert!(!error.contains("Exfiltrate"), "values are not quoted: {error}");

        let extra = SKILL_MD.replace("---\n\n", "allowed-tools: [Bash]\n---\n\n");
        let error = compare_frontmatter(&extra, &entry(SKILL_MD)).expect_err("extra field");
        assert!(error.contains("`allowed-tools`"), "{error}");

        // A field the entry sets to null and the file leaves out is the same.
        let mut with_null = entry(SKILL_MD);
        with_null["frontmatter"]["license"] = Value::Null;
        compare_frontmatter(SKILL_MD, &with_null).expect("null equals missing");

        let nested = "---\nname: pdf-processing\ndescription: Extract, fill, and assemble PDF documents\nmetadata:\n  version: 2.1\n  tags: [a, b]\n  n: 3\n---\n";
        let mut listed = entry(SKILL_MD);
        listed["frontmatter"]["metadata"] = json!({ "version": 2.1, "tags": ["a", "b"], "n": 3 });
        compare_frontmatter(nested, &listed).expect("nested values compare by content");
        listed["frontmatter"]["metadata"]["n"] = json!(4);
        assert!(
            compare_frontmatter(nested, &listed)
                .expect_err("differs")
                .contains("`metadata`")
        );
    }

    #[test]
    fn a_file_without_frontmatter_is_refused() {
        for text in [
            "no frontmatter",
            "---\nname: x\n",
            "---\n- a list\n---\n",
            "---\nname: [\n---\n",
        ] {
            assert!(compare_frontmatter(text, &entry(SKILL_MD)).is_err(), "{text:?}");
        }
    }

    #[test]
    fn deep_or_long_frontmatter_is_refused_without_overflowing_the_stack() {
        // 50,000 levels of block nesting: yaml-rust2's loader recursed once per level and
        // aborted the daemon. Refused by length (100 KB), and, read without the length cap,
        // by depth without recursing.
        let deep = format!("{}a\n", "- ".repeat(50_000));
        let error = compare_frontmatter(&format!("---\n{deep}---\n"), &entry(SKILL_MD)).expect_err("too long");
        assert!(error.contains("longer than corrald reads"), "{error}");
        let error = yaml_document(&deep).expect_err("too deep");
        assert!(error.contains("nests deeper than corrald reads (64 levels)"), "{error}");
        // Within the length cap: 20,000 levels.
        let within = format!("---\nname:\n  {}a\n---\n", "- ".repeat(20_000));
        let error = compare_frontmatter(&within, &entry(SKILL_MD)).expect_err("too deep");
        assert!(error.contains("nests deeper"), "{error}");
        // 64 levels are read.
        let nested = format!("{}a{}", "[".repeat(64), "]".repeat(64));
        let mut expected = json!("a");
        for _ in 0..64 {
            expected = json!([expected]);
        }
        assert_eq!(yaml_document(&nested).expect("64 levels"), Some(expected));
        assert!(yaml_document(&format!("[{nested}]")).is_err(), "65 levels");
    }

    #[test]
    fn frontmatter_reads_as_the_json_types_and_refuses_aliases_and_duplicates() {
        let yaml = "s: 'x'\nn: 3\nf: 2.5\nb: true\nz: ~\nt: !!str 12\ni: !!int 7\n3: [a, {k: v}]\n";
        assert_eq!(
            yaml_document(yaml).expect("read"),
            Some(
                json!({ "s": "x", "n": 3, "f": 2.5, "b": true, "z": null, "t": "12", "i": 7, "3": ["a", { "k": "v" }] })
            )
        );
        for (bad, why) in [
            ("a: &x [1]\nb: *x\n", "alias"),
            ("a: 1\na: 2\n", "twice"),
            ("? [a]\n: b\n", "not a scalar"),
            ("a: !!int x\n", "does not fit its tag"),
            ("a: [\n", "not YAML"),
        ] {
            let error = yaml_document(bad).expect_err(bad);
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert_eq!(yaml_document("").expect("empty"), None);
    }

    #[test]
    fn a_question_or_task_instead_of_the_file_is_named_not_a_mismatch() {
        let contents = json!({ "contents": [{ "uri": "skill://a/SKILL.md", "text": "x" }] });
        assert_eq!(not_contents(&contents), None);
        let mut complete = contents.clone();
        complete["resultType"] = json!("complete");
        assert_eq!(not_contents(&complete), None);
        let asking = json!({ "resultType": "input_required", "inputRequests": {} });
        assert!(not_contents(&asking).is_some_and(|why| why.contains("`input_required`")));
        let task = json!({ "resultType": "task", "taskId": "t", "status": "working" });
        assert!(not_contents(&task).is_some_and(|why| why.contains("a task")));
        let error = SkillError::route(
            "`resources/read` of `skill://a/SKILL.md`",
            RouteError::Failed {
                message: not_contents(&task).expect("a task"),
            },
        );
        assert!(
            matches!(error, SkillError::Route { .. }),
            "not a verification failure: {error:?}"
        );
    }

    #[test]
    fn files_resolve_against_the_skill_root_and_must_be_listed() {
        let skill: Skill = serde_json::from_value(entry(SKILL_MD)).expect("an entry");
        let (uri, listed) = file_of(&skill, None).expect("SKILL.md");
        assert_eq!(uri, "skill://pdf-processing/SKILL.md");
        assert!(listed.is_some());
        let (uri, _) = file_of(&skill, Some("references/FORMS.md")).expect("a listed path");
        assert_eq!(uri, "skill://pdf-processing/references/FORMS.md");
        file_of(&skill, Some("skill://pdf-processing/references/FORMS.md")).expect("a listed URI");
        assert!(matches!(
            file_of(&skill, Some("scripts/evil.sh")),
            Err(SkillError::NotInSkill { .. })
        ));

        let mut dynamic = entry(SKILL_MD);
        dynamic["resources"] = json!("dynamic");
        let skill: Skill = serde_json::from_value(dynamic).expect("a dynamic entry");
        let (uri, listed) = file_of(&skill, Some("templates/a.md")).expect("under the root");
        assert_eq!(uri, "skill://pdf-processing/templates/a.md");
        assert!(listed.is_none());
        assert!(file_of(&skill, Some("../other/SKILL.md")).is_err());
        assert!(file_of(&skill, Some("skill://other/SKILL.md")).is_err());
    }

    #[test]
    fn entries_are_found_by_uri_or_by_a_name_only_one_has() {
        let first = entry(SKILL_MD);
        let mut second = entry(SKILL_MD);
        second["uri"] = json!("skill://acme/pdf-processing/SKILL.md");
        let mut other = entry(SKILL_MD);
        other["uri"] = json!("skill://git/SKILL.md");
        other["frontmatter"]["name"] = json!("git");
        let entries = [first, second, other];
        assert_eq!(find(&entries, "git").expect("one git")["uri"], "skill://git/SKILL.md");
        assert_eq!(
            find(&entries, "skill://acme/pdf-processing/SKILL.md").expect("by URI")["uri"],
            "skill://acme/pdf-processing/SKILL.md"
        );
        match find(&entries, "pdf-processing") {
            Err(SkillError::Ambiguous { uris, .. }) => assert_eq!(uris.len(), 2),
            other => panic!("expected ambiguous, got {other:?}"),
        }
        match find(&entries, "nope") {
            Err(SkillError::NotFound { listed, .. }) => assert_eq!(listed.len(), 3),
            other => panic!("expected not found, got {other:?}"),
        }
    }

    #[test]
    fn entries_that_break_a_rule_say_which() {
        assert!(entry_problem(&entry(SKILL_MD)).is_ok());
        let mut no_resources = entry(SKILL_MD);
        no_resources.as_object_mut().expect("object").remove("resources");
        assert!(
            entry_problem(&no_resources)
                .expect_err("no resources")
                .contains("resources")
        );
        let mut wrong_name = entry(SKILL_MD);
        wrong_name["frontmatter"]["name"] = json!("pdf");
        assert!(entry_problem(&wrong_name).is_err());
        let mut bad_digest = entry(SKILL_MD);
        bad_digest["resources"][0]["digest"] = json!("md5:00");
        assert!(entry_problem(&bad_digest).expect_err("digest").contains("digest"));
    }

    #[test]
    fn content_is_the_text_bytes_or_the_decoded_blob() {
        let text =
            json!({ "contents": [{ "uri": "skill://a/SKILL.md", "mimeType": "text/markdown", "text": "héllo" }] });
        let content = Content::of(&text, "skill://a/SKILL.md").expect("text");
        assert_eq!(content.bytes, "héllo".as_bytes());
        let blob = json!({ "contents": [{ "uri": "skill://a/x.bin", "blob": "AAEC" }] });
        let content = Content::of(&blob, "skill://a/x.bin").expect("blob");
        assert_eq!(content.bytes, [0, 1, 2]);
        assert!(Content::of(&json!({ "contents": [] }), "skill://a/x").is_err());
        assert!(Content::of(&json!({ "contents": [{ "uri": "x", "blob": "%%" }] }), "x").is_err());
    }
}
