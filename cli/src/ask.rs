//! Answering an MCP server's questions on the terminal during `corral call`.
//!
//! When both stdin and stderr are terminals, `corral call` declares the elicitation capability,
//! so a tool that asks the user something (MCP `elicitation/create`, forwarded by corrald as
//! `mcpServer/elicitation/request` to the front-end whose call caused it) is asked here: the
//! server's message, then one prompt per field of its schema (strings, numbers, integers,
//! booleans, single and multiple choices), or, in URL mode, the URL to open. The answer is
//! `accept` with the content, `decline` ("n"), or `cancel` ("c", or end of input). Prompts and
//! echoes go to stderr, so stdout keeps only the tool's result. Sampling is not answered (the
//! SDK refuses it for us). Without a terminal nothing is declared and corrald declines for us,
//! as before: a script is never blocked on a question it cannot see.

use std::io::{IsTerminal as _, Write as _};

use corral_client::protocol::ElicitationRequest;
use corral_client::{DaemonRequests, IncomingRequest};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines, Stdin};

use crate::spinner;

/// Whether a person can be asked: stdin and stderr are both terminals.
pub(crate) fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Answer every question that arrives until the connection ends.
pub(crate) async fn answer_questions(mut requests: DaemonRequests) {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Some(request) = requests.next().await {
        let Some(Ok(params)) = request.params_as::<ElicitationRequest>() else {
            // Not an elicitation (or a malformed one): dropping it answers the daemon with an
            // error, which is what a front-end that cannot answer should say.
            continue;
        };
        spinner::pause();
        let answer = tokio::select! {
            answer = ask(&params.server, &params.request, &mut input) => Some(answer),
            () = request.withdrawn() => None,
        };
        match answer {
            Some(answer) => respond(request, answer),
            None => say(&format!("({} withdrew its question)", params.server)),
        }
        spinner::resume();
    }
}

fn respond(request: IncomingRequest, answer: Value) {
    if request.respond(answer).is_err() {
        say("(the connection to corrald closed before the answer could be sent)");
    }
}

/// One line on stderr.
fn say(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// A prompt without a line break, then the user's line; `None` at the end of input.
async fn prompt(input: &mut Lines<BufReader<Stdin>>, text: &str) -> Option<String> {
    {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{text}");
        let _ = stderr.flush();
    }
    match input.next_line().await {
        Ok(Some(line)) => Some(line.trim().to_owned()),
        Ok(None) | Err(_) => None,
    }
}

/// Ask the question `request` (MCP `elicitation/create` params) and build the `ElicitResult`.
async fn ask(server: &str, request: &Value, input: &mut Lines<BufReader<Stdin>>) -> Value {
    let message = request["message"].as_str().unwrap_or("(no message)");
    say(&format!("\n{server} asks: {message}"));
    if request["mode"] == "url" {
        let url = request["url"].as_str().unwrap_or("(no URL given)");
        say(&format!("  open this URL: {url}"));
        return match prompt(input, "  press Enter when done, or n to decline, c to cancel: ").await {
            None => action("cancel"),
            Some(line) => match line.to_ascii_lowercase().as_str() {
                "n" | "no" => action("decline"),
                "c" | "cancel" => action("cancel"),
                _ => action("accept"),
            },
        };
    }
    match prompt(input, "  answer? [Y]es, [n]o (decline), [c]ancel: ").await {
        None => return action("cancel"),
        Some(line) => match line.to_ascii_lowercase().as_str() {
            "n" | "no" => return action("decline"),
            "c" | "cancel" => return action("cancel"),
            _ => {}
        },
    }
    let schema = &request["requestedSchema"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut content = Map::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, field) in properties {
            let field = Field::new(name, field, required.contains(&name.as_str()));
            match field.ask(input).await {
                Asked::Value(value) => {
                    content.insert(name.clone(), value);
                }
                Asked::Skipped => {}
                Asked::EndOfInput => return action("cancel"),
            }
        }
    }
    json!({ "action": "accept", "content": content })
}

fn action(action: &str) -> Value {
    json!({ "action": action })
}

/// What one field prompt gave.
enum Asked {
    Value(Value),
    Skipped,
    EndOfInput,
}

/// One field of the requested schema, as the prompt needs it.
struct Field<'a> {
    label: String,
    kind: &'a str,
    required: bool,
    default: Option<&'a Value>,
    /// Allowed values with their titles (single choice, or the items of a multiple choice).
    choices: Vec<(Value, String)>,
    multiple: bool,
}

impl<'a> Field<'a> {
    fn new(name: &'a str, schema: &'a Value, required: bool) -> Self {
        let mut label = schema["title"].as_str().unwrap_or(name).to_owned();
        if let Some(description) = schema["description"].as_str() {
            label = format!("{label} ({description})");
        }
        let kind = schema["type"].as_str().unwrap_or("string");
        let multiple = kind == "array";
        let choice_schema = if multiple { &schema["items"] } else { schema };
        Self {
            label,
            kind,
            required,
            default: schema.get("default"),
            choices: choices(choice_schema),
            multiple,
        }
    }

    async fn ask(&self, input: &mut Lines<BufReader<Stdin>>) -> Asked {
        let mut text = format!("  {}", self.label);
        if !self.choices.is_empty() {
            let listed: Vec<String> = self
                .choices
                .iter()
                .enumerate()
                .map(|(index, (_, title))| format!("{}) {title}", index + 1))
                .collect();
            text.push_str(&format!(" [{}]", listed.join(", ")));
            if self.multiple {
                text.push_str(" (numbers or values, comma-separated)");
            }
        } else if self.kind == "boolean" {
            text.push_str(" [y/n]");
        }
        if let Some(default) = self.default {
            text.push_str(&format!(" (default {default})"));
        } else if !self.required {
            text.push_str(" (optional)");
        }
        text.push_str(": ");
        // Bounded by the user's input: every round reads one line, and the end of input stops it.
        loop {
            let Some(line) = prompt(input, &text).await else {
                return Asked::EndOfInput;
            };
            if line.is_empty() {
                if let Some(default) = self.default {
                    return Asked::Value(default.clone());
                }
                if !self.required {
                    return Asked::Skipped;
                }
                say("    required");
                continue;
            }
            match self.parse(&line) {
                Ok(value) => return Asked::Value(value),
                Err(problem) => say(&format!("    {problem}")),
            }
        }
    }

    fn parse(&self, line: &str) -> Result<Value, String> {
        if self.multiple {
            return line
                .split(',')
                .map(|item| self.choose(item.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array);
        }
        if !self.choices.is_empty() {
            return self.choose(line);
        }
        match self.kind {
            "integer" => line
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "a whole number, please".to_owned()),
            "number" => line
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| "a number, please".to_owned()),
            "boolean" => match line.to_ascii_lowercase().as_str() {
                "y" | "yes" | "true" => Ok(Value::Bool(true)),
                "n" | "no" | "false" => Ok(Value::Bool(false)),
                _ => Err("y or n, please".to_owned()),
            },
            _ => Ok(Value::from(line)),
        }
    }

    /// A choice by its number (1-based) or by its value.
    fn choose(&self, item: &str) -> Result<Value, String> {
        if let Ok(number) = item.parse::<usize>()
            && let Some((value, _)) = number.checked_sub(1).and_then(|index| self.choices.get(index))
        {
            return Ok(value.clone());
        }
        self.choices
            .iter()
            .find(|(value, _)| value.as_str() == Some(item))
            .map(|(value, _)| value.clone())
            .ok_or_else(|| format!("one of 1 to {}, please", self.choices.len()))
    }
}

/// The allowed values of `schema` with a title each: `enum` (titles from `enumNames`, the
/// legacy form) or `oneOf`/`anyOf` of `{const, title}`.
fn choices(schema: &Value) -> Vec<(Value, String)> {
    if let Some(values) = schema["enum"].as_array() {
        let names = schema["enumNames"].as_array();
        return values
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let title = names
                    .and_then(|names| names.get(index))
                    .and_then(Value::as_str)
                    .map_or_else(|| plain(value), str::to_owned);
                (value.clone(), title)
            })
            .collect();
    }
    let options = schema["oneOf"].as_array().or_else(|| schema["anyOf"].as_array());
    options
        .into_iter()
        .flatten()
        .filter_map(|option| {
            let value = option.get("const")?.clone();
            let title = option["title"].as_str().map_or_else(|| plain(&value), str::to_owned);
            Some((value, title))
        })
        .collect()
}

/// A value as a person reads it: strings without quotes.
fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}
