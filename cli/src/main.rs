//! `corral`: the command-line front-end of `corrald` (status, servers, events),
//! the daemon-free config tools (`corral config check|schema|import`), the
//! service files (`corral service install|uninstall|status`), `corral mcp`
//! (the daemon as an MCP server on stdio, for MCP clients) and the entry that
//! runs it in other MCP clients' configs (`corral mcp install|uninstall`), and
//! `corral doctor`.
//!
//! Exit codes: 0 success; 1 failure (an error from the daemon, an invalid
//! config, a lost connection); 2 bad command line (clap, or a `corral mcp
//! --config` file that cannot be used); 3 the daemon is not
//! running; 130 interrupted by Ctrl-C (a call is cancelled on the server).
//! Errors are one line on stderr.
//!
//! Output goes through `writeln!` on a locked stdout rather than `println!`
//! (so `clippy::print_stdout` has nothing to allow): a closed pipe, as in
//! `corral events | head -3`, then ends the command quietly instead of
//! panicking.

mod ask;
mod doctor;
mod import;
mod install;
mod pipe;
mod render;
mod service;
mod spinner;
mod table;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use corral_client::protocol::{config, paths};
use corral_client::{Client, ClientError, ClientNotification, ConnectOptions, NotificationsEnd};
use serde::Serialize;

const EXIT_FAILURE: u8 = 1;
/// What clap exits with for a bad command line; also `corral mcp`'s for an unusable `--config`.
const EXIT_USAGE: u8 = 2;
const EXIT_DAEMON_NOT_RUNNING: u8 = 3;
/// 128 + SIGINT, as shells report a command ended by Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

/// Talk to corrald, the daemon that supervises your MCP servers.
#[derive(Debug, Parser)]
#[command(name = "corral", version)]
struct Cli {
    /// Socket of the daemon [default: $XDG_RUNTIME_DIR/corral/corral.sock or a per-user temp dir]
    #[arg(long, global = true, value_name = "PATH", env = paths::SOCKET_ENV)]
    socket: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's version, pid, uptime, socket, config file and server counts
    Status,
    /// List every MCP server with its status
    List,
    /// Show everything about one MCP server
    Get {
        /// Server name as in the config file
        name: String,
    },
    /// Start a server that is not running (it is restarted after crashes again)
    Start {
        /// Server name as in the config file
        name: String,
    },
    /// Stop a server and every process it started; it stays stopped until started
    Stop {
        /// Server name as in the config file
        name: String,
    },
    /// Stop a server (if running) and start it again
    Restart {
        /// Server name as in the config file
        name: String,
    },
    /// List the tools of every ready server, or of one
    Tools {
        /// Only this server's tools
        server: Option<String>,
    },
    /// Call a tool: `corral call SERVER TOOL '{"arg": "value"}'` (arguments may also come on stdin)
    Call {
        /// Server name
        server: String,
        /// Tool name, as `corral tools` lists it
        tool: String,
        /// Arguments as a JSON object; read from stdin when omitted and stdin is not a terminal
        arguments: Option<String>,
    },
    /// List the resources (or, with --templates, resource templates) of every ready server, or of one
    Resources {
        /// Only this server's
        server: Option<String>,
        /// List resource templates instead of resources
        #[arg(long)]
        templates: bool,
    },
    /// Read a resource: `corral read SERVER URI`
    Read {
        /// Server name
        server: String,
        /// The resource's URI, as `corral resources` lists it
        uri: String,
    },
    /// List the prompts of every ready server, or of one
    Prompts {
        /// Only this server's
        server: Option<String>,
    },
    /// List the skills (MCP's skills extension) of every ready server that offers them, or of
    /// one (no skill file is read); `corral skills read SERVER SKILL` reads one, verified
    Skills(SkillsArgs),
    /// Log in to a streamable-HTTP server with OAuth: prints the authorization URL (also opened in
    /// the browser by corrald), waits for the login to finish, and the server restarts with it
    Login {
        /// Server name as in the config file
        name: String,
        /// Scopes to request instead of the configured or discovered ones: `--scopes read,write`
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
    },
    /// Delete a server's stored OAuth credentials
    Logout {
        /// Server name as in the config file
        name: String,
    },
    /// Follow server status changes until Ctrl-C
    Events {
        /// First print the notifications after this sequence number that the daemon still remembers
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
    /// Work with the config file (`check` and `schema` need no daemon)
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Install, remove or inspect the systemd user units / launchd agent that run corrald
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Check the whole setup (daemon, config, servers, executables, socket, service) and say how to fix each problem
    Doctor,
    /// Serve MCP on stdin/stdout for an MCP client (`{"command": "corral", "args": ["mcp"]}`): the tools of
    /// every server corrald runs, named `server__tool`; starts corrald in the background when none runs,
    /// and reconnects (telling the client the lists changed) when corrald restarts.
    /// `corral mcp install --client NAME` writes that entry into a client's config
    Mcp(McpArgs),
}

/// `corral mcp`. A group: `install` / `uninstall` (writing the entry into a
/// client's config) come as subcommands; without one it is the bridge itself.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct McpArgs {
    /// Fail (exit 3) instead of starting corrald when none is running; after a restart, wait for
    /// corrald to be started by someone else
    #[arg(long)]
    no_start: bool,
    #[command(flatten)]
    bridge: pipe::options::BridgeArgs,
    #[command(subcommand)]
    command: Option<McpCommand>,
}

/// `corral skills`: a listing, or `read` as a subcommand.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SkillsArgs {
    /// Only this server's skills
    server: Option<String>,
    #[command(subcommand)]
    command: Option<SkillsCommand>,
}

#[derive(Debug, Subcommand)]
enum SkillsCommand {
    /// Print a skill's SKILL.md (or --file) after checking it against the skill's entry (size,
    /// digest, frontmatter); a mismatch prints nothing of it and fails
    Read {
        /// Server name
        server: String,
        /// The skill's name as `corral skills` lists it, or the URI of its SKILL.md
        skill: String,
        /// Another file of the skill: its path under the skill (`references/FORMS.md`) or its URI
        #[arg(long)]
        file: Option<String>,
    },
}

/// Where `corral service` writes, and for which service manager.
#[derive(Debug, clap::Args)]
struct ServiceTargetArgs {
    /// Directory for the files [default: ~/.config/systemd/user, macOS ~/Library/LaunchAgents; env CORRAL_SERVICE_DIR]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Service manager to write files for [default: this platform's]
    #[arg(long, value_enum)]
    manager: Option<service::Manager>,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Write the unit files (or the LaunchAgent) for your user, with this corrald and your PATH; no root needed
    Install {
        #[command(flatten)]
        target: ServiceTargetArgs,
        /// The corrald to run [default: the one next to corral, else the first on PATH]
        #[arg(long, value_name = "PATH")]
        corrald: Option<PathBuf>,
    },
    /// Remove the files `install` wrote
    Uninstall {
        #[command(flatten)]
        target: ServiceTargetArgs,
    },
    /// Show whether the files are installed and what the service manager says
    Status {
        #[command(flatten)]
        target: ServiceTargetArgs,
    },
}

#[derive(Debug, Subcommand)]
enum McpCommand {
    /// Add the `corral` entry (`corral mcp`) to an MCP client's config, with a backup of the file
    Install {
        /// The client to configure
        #[arg(long, value_enum)]
        client: import::Client,
        /// The client's config file [default: the client's user config on this system]
        file: Option<PathBuf>,
        /// Also remove the client's entries for servers Corral runs now (those in Corral's config)
        #[arg(long)]
        replace: bool,
        /// Corral's config file, for --replace [default: $CORRAL_CONFIG or ~/.config/corral/config.toml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Show the change; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the `corral` entry from an MCP client's config (the file as it was, if unchanged since)
    Uninstall {
        /// The client to configure
        #[arg(long, value_enum)]
        client: import::Client,
        /// The client's config file [default: the client's user config on this system]
        file: Option<PathBuf>,
        /// Show the change; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the URL of corrald's loopback HTTP MCP endpoint (`[mcp_endpoint]` in the config) and the
    /// `Authorization` header its requests need, for MCP clients that take a URL (--json: `{url, headers}`)
    Url,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print every problem
    Check {
        /// The file [default: $CORRAL_CONFIG or ~/.config/corral/config.toml]
        path: Option<PathBuf>,
    },
    /// Print the config file's JSON Schema
    Schema,
    /// Have the running daemon read its config file again now (it also does on changes and SIGHUP)
    Reload,
    /// Write another MCP client's servers into Corral's config (secrets become variable names)
    Import {
        /// The client whose servers to import
        #[arg(long = "from", value_enum, value_name = "CLIENT")]
        from: import::Client,
        /// The client's config file [default: the client's user config on this system]
        file: Option<PathBuf>,
        /// Corral's config file [default: $CORRAL_CONFIG or ~/.config/corral/config.toml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Overwrite servers of the same name in Corral's config
        #[arg(long)]
        replace: bool,
        /// Print the resulting config (stdout) and the notes (stderr); write nothing
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { path },
        } => config_check(path.as_deref(), cli.json),
        Command::Config {
            command: ConfigCommand::Schema,
        } => config_schema(),
        Command::Config {
            command: ConfigCommand::Reload,
        } => run_daemon_command(&cli, DaemonCommand::ConfigReload),
        Command::Config {
            command:
                ConfigCommand::Import {
                    from,
                    file,
                    config,
                    replace,
                    dry_run,
                },
        } => config_import(
            &import::ImportOptions {
                client: *from,
                file: file.clone(),
                config: config.clone(),
                replace: *replace,
                dry_run: *dry_run,
            },
            cli.json,
        ),
        Command::Service { command } => service_command(command, cli.json),
        Command::Doctor => run_doctor(&cli),
        Command::Mcp(McpArgs {
            command: Some(McpCommand::Url),
            ..
        }) => run_daemon_command(&cli, DaemonCommand::McpUrl),
        Command::Mcp(McpArgs {
            command: Some(command), ..
        }) => mcp_install_command(command, cli.json),
        Command::Mcp(McpArgs {
            no_start,
            bridge,
            command: None,
        }) => pipe::run(cli.socket.as_deref(), *no_start, bridge),
        Command::Status => run_daemon_command(&cli, DaemonCommand::Status),
        Command::List => run_daemon_command(&cli, DaemonCommand::List),
        Command::Get { name } => run_daemon_command(&cli, DaemonCommand::Get(name)),
        Command::Tools { server } => run_daemon_command(&cli, DaemonCommand::Tools(server.as_deref())),
        Command::Call {
            server,
            tool,
            arguments,
        } => match call_arguments(arguments.as_deref()) {
            Ok(arguments) => run_daemon_command(
                &cli,
                DaemonCommand::Call {
                    server,
                    tool,
                    arguments,
                },
            ),
            Err(error) => Err(error),
        },
        Command::Resources { server, templates } => run_daemon_command(
            &cli,
            DaemonCommand::Catalog(
                if *templates {
                    Catalog::ResourceTemplates
                } else {
                    Catalog::Resources
                },
                server.as_deref(),
            ),
        ),
        Command::Prompts { server } => {
            run_daemon_command(&cli, DaemonCommand::Catalog(Catalog::Prompts, server.as_deref()))
        }
        Command::Read { server, uri } => run_daemon_command(&cli, DaemonCommand::Read { server, uri }),
        Command::Skills(SkillsArgs { server, command: None }) => {
            run_daemon_command(&cli, DaemonCommand::Skills(server.as_deref()))
        }
        Command::Skills(SkillsArgs {
            command: Some(SkillsCommand::Read { server, skill, file }),
            ..
        }) => run_daemon_command(
            &cli,
            DaemonCommand::ReadSkill {
                server,
                skill,
                file: file.as_deref(),
            },
        ),
        Command::Start { name } => run_daemon_command(&cli, DaemonCommand::Control(Control::Start, name)),
        Command::Stop { name } => run_daemon_command(&cli, DaemonCommand::Control(Control::Stop, name)),
        Command::Restart { name } => run_daemon_command(&cli, DaemonCommand::Control(Control::Restart, name)),
        Command::Events { since } => run_daemon_command(&cli, DaemonCommand::Events { since: *since }),
        Command::Login { name, scopes } => run_daemon_command(
            &cli,
            DaemonCommand::Login {
                name,
                scopes: scopes.clone(),
            },
        ),
        Command::Logout { name } => run_daemon_command(&cli, DaemonCommand::Logout(name)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// Print `error` as one line and choose the exit code.
fn report(error: &anyhow::Error) -> ExitCode {
    if error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    {
        // The reader of our output went away (`| head`): nothing left to say.
        return ExitCode::SUCCESS;
    }
    if let Some(client_error) = error.downcast_ref::<ClientError>() {
        eprintln!("{}", stderr_safe(&client_error.to_string()));
        return match client_error {
            ClientError::DaemonNotRunning { .. } => ExitCode::from(EXIT_DAEMON_NOT_RUNNING),
            _ => ExitCode::from(EXIT_FAILURE),
        };
    }
    eprintln!("{}", stderr_safe(&format!("{error:#}")));
    ExitCode::from(EXIT_FAILURE)
}

/// `text` for stderr: without control characters when it is a terminal (an error may quote a
/// server's words).
fn stderr_safe(text: &str) -> std::borrow::Cow<'_, str> {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        render::terminal_safe(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Write `text` to stdout and flush it (so `corral events` lines show up at once in a pipe);
/// to a terminal, without the control characters a server could have put in it
/// ([`render::terminal_safe`]).
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let mut stdout = std::io::stdout().lock();
    let text = if stdout.is_terminal() {
        render::terminal_safe(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn emit_line(line: &str) -> anyhow::Result<()> {
    emit(&format!("{line}\n"))
}

fn emit_pretty_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    emit_line(&serde_json::to_string_pretty(value).context("cannot serialize the output as JSON")?)
}

/// The commands that need the daemon.
#[derive(Debug)]
enum DaemonCommand<'a> {
    Status,
    List,
    Get(&'a str),
    Control(Control, &'a str),
    Tools(Option<&'a str>),
    Call {
        server: &'a str,
        tool: &'a str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    },
    Catalog(Catalog, Option<&'a str>),
    Read {
        server: &'a str,
        uri: &'a str,
    },
    Skills(Option<&'a str>),
    ReadSkill {
        server: &'a str,
        skill: &'a str,
        file: Option<&'a str>,
    },
    Events {
        since: Option<u64>,
    },
    ConfigReload,
    Login {
        name: &'a str,
        scopes: Option<Vec<String>>,
    },
    Logout(&'a str),
    McpUrl,
}

/// What `corral resources|prompts` lists.
#[derive(Debug, Clone, Copy)]
enum Catalog {
    Resources,
    ResourceTemplates,
    Prompts,
}

/// Say on stderr which servers a listing left out because they are not ready.
fn warn_not_ready(servers: &[corral_client::protocol::NotReadyServer]) {
    for server in servers {
        let reason = server
            .failure_reason
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        eprintln!("not ready: {} ({}{reason})", server.name, server.status);
    }
}

/// How long `corral call` waits: the daemon enforces the server's
/// `tool_timeout_sec`, so the CLI only needs a backstop above any sane one.
const CALL_BACKSTOP: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Arguments of `corral call`: the given JSON, else stdin when it is not a terminal, else none.
fn call_arguments(given: Option<&str>) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    use std::io::{IsTerminal as _, Read as _};
    let text = match given {
        Some(text) => text.to_owned(),
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the arguments from stdin")?;
            text
        }
        None => return Ok(None),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(&text).context("the arguments are not valid JSON")? {
        serde_json::Value::Object(map) => Ok(Some(map)),
        other => anyhow::bail!("the arguments must be a JSON object like '{{\"message\": \"hi\"}}', got {other}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Start,
    Stop,
    Restart,
}

fn run_daemon_command(cli: &Cli, command: DaemonCommand<'_>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(daemon_command(cli, command))
}

async fn daemon_command(cli: &Cli, command: DaemonCommand<'_>) -> anyhow::Result<ExitCode> {
    let mut options = ConnectOptions::new("corral-cli", env!("CARGO_PKG_VERSION"));
    if let Some(socket) = &cli.socket {
        options = options.with_socket_path(socket);
    }
    // A tool may ask the user something while it runs; on a terminal, `corral call` answers.
    let asks = matches!(command, DaemonCommand::Call { .. }) && ask::interactive();
    if asks {
        let mut capabilities = corral_client::protocol::ClientCapabilities::default();
        capabilities.elicitation = true;
        options = options.with_capabilities(capabilities);
    }
    let mut client = Client::connect(options).await?;
    if let Some(requests) = client.take_requests() {
        tokio::spawn(ask::answer_questions(requests));
    }
    match command {
        DaemonCommand::Status => {
            let status = client.daemon_status().await?;
            if cli.json {
                emit_pretty_json(&status)?;
            } else {
                emit(&render::status(&status))?;
            }
        }
        DaemonCommand::List => {
            let list = client.mcp_server_list().await?;
            if cli.json {
                emit_pretty_json(&list)?;
            } else {
                emit(&render::server_table(&list.servers))?;
            }
        }
        DaemonCommand::Get(name) => {
            let get = client.mcp_server_get(name).await?;
            if cli.json {
                emit_pretty_json(&get)?;
            } else {
                emit(&render::server_details(&get.server))?;
            }
        }
        DaemonCommand::Control(action, name) => {
            let result = match action {
                Control::Start => client.mcp_server_start(name).await?,
                Control::Stop => client.mcp_server_stop(name).await?,
                Control::Restart => client.mcp_server_restart(name).await?,
            };
            if cli.json {
                emit_pretty_json(&result)?;
            } else {
                emit_line(&format!("{}: {}", result.server.name, result.server.status))?;
            }
        }
        DaemonCommand::Tools(server) => {
            let listing = client.tools_list(server).await?;
            if cli.json {
                emit_pretty_json(&listing)?;
            } else {
                emit(&render::tool_table(&listing.tools))?;
                warn_not_ready(&listing.not_ready);
            }
        }
        DaemonCommand::Call {
            server,
            tool,
            arguments,
        } => {
            let label = format!("waiting for `{tool}` of {server}");
            let call = spinner::while_waiting(&label, client.tools_call(server, tool, arguments, CALL_BACKSTOP));
            let result = tokio::select! {
                result = call => result?,
                interrupted = tokio::signal::ctrl_c() => {
                    interrupted.context("cannot listen for Ctrl-C")?;
                    spinner::erase();
                    // Leaving closes the connection; corrald then cancels the
                    // call on the server (`notifications/cancelled`).
                    eprintln!("cancelled: the call was cancelled on `{server}`");
                    return Ok(ExitCode::from(EXIT_INTERRUPTED));
                }
            };
            if cli.json {
                emit_pretty_json(&result)?;
            } else {
                emit(&render::call_result(&result))?;
            }
            if result.get("isError").and_then(serde_json::Value::as_bool) == Some(true) {
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        }
        DaemonCommand::Catalog(catalog, server) => {
            let listing = match catalog {
                Catalog::Resources => client.resources_list(server).await?,
                Catalog::ResourceTemplates => client.resource_templates_list(server).await?,
                Catalog::Prompts => client.prompts_list(server).await?,
            };
            if cli.json {
                emit_pretty_json(&listing)?;
            } else {
                let text = match catalog {
                    Catalog::Resources => render::item_table(&listing.items, "URI", "uri"),
                    Catalog::ResourceTemplates => render::item_table(&listing.items, "URI TEMPLATE", "uriTemplate"),
                    Catalog::Prompts => render::item_table(&listing.items, "PROMPT", "name"),
                };
                emit(&text)?;
                warn_not_ready(&listing.not_ready);
                for error in &listing.errors {
                    eprintln!("error: {}", error.message);
                }
            }
        }
        DaemonCommand::Read { server, uri } => {
            let result = client.resources_read(server, uri).await?;
            if cli.json {
                emit_pretty_json(&result)?;
            } else {
                emit(&render::resource_contents(&result))?;
            }
        }
        DaemonCommand::Skills(server) => {
            let listing = client.skills_list(server).await?;
            if cli.json {
                emit_pretty_json(&listing)?;
            } else {
                emit(&render::skill_table(&listing.skills))?;
                for skill in &listing.skills {
                    if let Some(problem) = &skill.problem {
                        let which = skill.uri.as_deref().or(skill.name.as_deref()).unwrap_or("?");
                        eprintln!("cannot be loaded: {which} of {}: {problem}", skill.server);
                    }
                }
                warn_not_ready(&listing.not_ready);
                for error in &listing.errors {
                    eprintln!("error: {}", error.message);
                }
            }
        }
        DaemonCommand::ReadSkill { server, skill, file } => {
            let params =
                corral_client::protocol::SkillsReadParams::new(server, skill).with_file(file.map(str::to_owned));
            let result = client.skills_read(params).await?;
            if cli.json {
                emit_pretty_json(&result)?;
            } else {
                if !result.verified {
                    eprintln!(
                        "warning: {} is not verified: the skill's entry publishes no digests (its resources are \"dynamic\")",
                        result.uri
                    );
                }
                emit(&render::skill_file(&result))?;
            }
        }
        DaemonCommand::Events { since } => {
            return follow_events(&mut client, since, cli.json).await;
        }
        DaemonCommand::Login { name, scopes } => return login(&mut client, name, scopes).await,
        DaemonCommand::Logout(name) => {
            let result = client.mcp_server_logout(name).await?;
            if cli.json {
                emit_pretty_json(&result)?;
            } else if result.removed {
                emit_line(&format!(
                    "Logged out of {name}: its stored OAuth credentials are deleted."
                ))?;
            } else {
                emit_line(&format!("{name} had no stored OAuth credentials."))?;
            }
        }
        DaemonCommand::McpUrl => {
            let status = client.daemon_status().await?;
            let (url, authorization) = mcp_endpoint_access(&status)?;
            if cli.json {
                emit_pretty_json(&serde_json::json!({"url": url, "headers": {"Authorization": authorization}}))?;
            } else {
                emit_line(&url)?;
                emit_line(&format!("Authorization: {authorization}"))?;
            }
        }
        DaemonCommand::ConfigReload => {
            let result = client.config_reload().await?;
            if cli.json {
                emit_pretty_json(&result)?;
            } else {
                emit(&render::config_reload(&result))?;
            }
            if !result.applied {
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The loopback MCP endpoint's URL and the value of the `Authorization`
/// header its requests need (the token, read from the file the daemon names,
/// with the daemon's own checks: a private file of ours, never through a link).
fn mcp_endpoint_access(status: &corral_client::protocol::DaemonStatus) -> anyhow::Result<(String, String)> {
    let Some(endpoint) = &status.mcp_endpoint else {
        anyhow::bail!(
            "corrald serves no MCP endpoint: add `[mcp_endpoint]` with `enabled = true` to {} and restart corrald \
             (or start corrald with --mcp-endpoint 127.0.0.1:7767)",
            status.config_path
        );
    };
    let (Some(url), Some(token_file)) = (&endpoint.url, &endpoint.token_file) else {
        anyhow::bail!(
            "the MCP endpoint is turned on but not served: {}",
            endpoint.error.as_deref().unwrap_or("corrald does not say why")
        );
    };
    #[cfg(unix)]
    {
        let token = paths::read_private_file(Path::new(token_file), 1024)?
            .with_context(|| format!("the MCP endpoint's token file {token_file} is gone: restart corrald"))?;
        let token = String::from_utf8(token).unwrap_or_default();
        Ok((url.clone(), format!("Bearer {}", token.trim())))
    }
    #[cfg(not(unix))]
    {
        let _ = (url, token_file);
        anyhow::bail!("the MCP endpoint is not available on this platform yet: use `corral mcp`")
    }
}

/// `corral doctor`: exit 1 when any check is an error.
fn run_doctor(cli: &Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(doctor::run(cli.socket.as_deref()));
    if cli.json {
        emit_pretty_json(&report)?;
    } else {
        emit(&report.text())?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// `corral service install|uninstall|status`.
fn service_command(command: &ServiceCommand, json: bool) -> anyhow::Result<ExitCode> {
    let (ServiceCommand::Install { target, .. }
    | ServiceCommand::Uninstall { target }
    | ServiceCommand::Status { target }) = command;
    let target = service::Target::resolve(target.manager, target.dir.as_deref())?;
    match command {
        ServiceCommand::Install { corrald, .. } => {
            let fill = service::Fill {
                corrald: service::find_corrald(corrald.as_deref())?,
                // Only the LaunchAgent names files in the home directory (its logs).
                home: match target.manager {
                    service::Manager::Launchd => service::home_dir()?,
                    service::Manager::Systemd => PathBuf::new(),
                },
                path: service::service_path(std::env::var_os("PATH")),
            };
            let files = service::install(&target, &fill)?;
            let steps = service::next_steps(&target, &files);
            if json {
                emit_pretty_json(&serde_json::json!({
                    "manager": target.manager,
                    "written": files,
                    "corrald": fill.corrald,
                    "path": fill.path,
                    "nextSteps": steps,
                }))?;
            } else {
                for file in &files {
                    emit_line(&format!("wrote {}", file.display()))?;
                }
                emit_line(&format!("  runs {}", fill.corrald.display()))?;
                emit_line(&format!(
                    "  PATH for servers: {} (this shell's; install again after changing it)",
                    fill.path
                ))?;
                emit_line("next:")?;
                for step in &steps {
                    emit_line(&format!("  {step}"))?;
                }
            }
        }
        ServiceCommand::Uninstall { .. } => {
            let removed = service::uninstall(&target)?;
            let first = match target.manager {
                service::Manager::Systemd => {
                    "systemctl --user disable --now corral.socket corral.service && systemctl --user daemon-reload"
                }
                service::Manager::Launchd => "launchctl bootout gui/$(id -u)/dev.corral.corrald",
            };
            if json {
                emit_pretty_json(
                    &serde_json::json!({ "manager": target.manager, "removed": removed, "nextSteps": [first] }),
                )?;
            } else {
                if removed.is_empty() {
                    emit_line(&format!("nothing to remove in {}", target.dir.display()))?;
                }
                for file in &removed {
                    emit_line(&format!("removed {}", file.display()))?;
                }
                emit_line(&format!("if it was running, stop it: {first}"))?;
            }
        }
        ServiceCommand::Status { .. } => {
            let status = service::status(&target);
            if json {
                emit_pretty_json(&status)?;
            } else {
                for file in &status.files {
                    let state = if file.installed { "installed" } else { "not installed" };
                    let mut line = format!("{}: {state}", file.path.display());
                    if let (Some(corrald), Some(exists)) = (&file.corrald, file.corrald_exists) {
                        line.push_str(&format!(", runs {corrald}{}", if exists { "" } else { " (missing!)" }));
                    }
                    emit_line(&line)?;
                }
                for line in &status.service_manager.lines {
                    emit_line(line)?;
                }
                if let Some(error) = &status.service_manager.error {
                    emit_line(error)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `corral login` waits for the outcome: the daemon gives up after 300 s itself.
const LOGIN_BACKSTOP: std::time::Duration = std::time::Duration::from_secs(330);

/// `corral login`: start the login, print the URL, wait for `mcpServer/oauthLogin/completed`.
async fn login(client: &mut Client, name: &str, scopes: Option<Vec<String>>) -> anyhow::Result<ExitCode> {
    use corral_client::protocol::DaemonNotification;
    use std::io::{IsTerminal as _, Write as _};
    // Subscribed before asking, so a login that finishes at once is not missed.
    let mut notifications = client
        .take_notifications()
        .context("the notification stream was already taken")?;
    let started = client.mcp_server_oauth_login(name, scopes).await?;
    emit_line(&format!("Open this URL to log in to {name} (corrald also opened it):"))?;
    emit_line(&format!("  {}", started.authorization_url))?;
    let interactive = std::io::stderr().is_terminal();
    let frames = ['|', '/', '-', '\\'];
    let mut frame = 0usize;
    if !interactive {
        eprintln!("waiting for the login to finish...");
    }
    let deadline = tokio::time::Instant::now() + LOGIN_BACKSTOP;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            _ = tick.tick(), if interactive => {
                eprint!("\r{} waiting for the browser to finish the login (Ctrl-C to stop waiting)", frames[frame % frames.len()]);
                let _ = std::io::stderr().flush();
                frame += 1;
            }
            () = tokio::time::sleep_until(deadline) => break Err(anyhow::anyhow!("no outcome from corrald within {} s", LOGIN_BACKSTOP.as_secs())),
            next = notifications.next() => match next {
                Some(Ok(ClientNotification::Daemon(DaemonNotification::OauthLoginCompleted(done)))) if done.name == name => {
                    break Ok(done);
                }
                Some(_) => {}
                None => break Err(ClientError::Disconnected.into()),
            },
        }
    };
    if interactive {
        eprint!("\r\x1b[2K");
    }
    let done = outcome?;
    match done.error {
        None => {
            emit_line(&format!(
                "Logged in to {name}; corrald is restarting it with the new credentials."
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(error) => {
            eprintln!("Login to {name} failed: {error}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// `corral events`: optional replay, then live notifications until Ctrl-C.
async fn follow_events(client: &mut Client, since: Option<u64>, json: bool) -> anyhow::Result<ExitCode> {
    let mut notifications = client
        .take_notifications()
        .context("the notification stream was already taken")?;
    let print = |notification: &ClientNotification| -> anyhow::Result<()> {
        if json {
            emit_line(&serde_json::to_string(notification).context("cannot serialize a notification")?)
        } else {
            emit_line(&render::notification(notification))
        }
    };

    // Live notifications up to the replay's `lastSeq` are in the replay too.
    let mut printed_up_to = 0;
    if let Some(since) = since {
        let replay = client.events_replay(since).await?;
        if !replay.complete {
            eprintln!(
                "warning: corrald no longer remembers every notification after seq {since}; showing those it has"
            );
        }
        for notification in replay.notifications {
            print(&ClientNotification::from_replayed(notification))?;
        }
        printed_up_to = replay.last_seq;
    }

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            interrupted = &mut ctrl_c => {
                interrupted.context("cannot listen for Ctrl-C")?;
                return Ok(ExitCode::SUCCESS);
            }
            next = notifications.next() => match next {
                Some(Ok(notification)) => {
                    if notification.seq().is_some_and(|seq| seq <= printed_up_to) {
                        continue;
                    }
                    print(&notification)?;
                }
                // One malformed notification is worth a warning, not the end of the stream.
                Some(Err(error)) => eprintln!("warning: {error}"),
                None => {
                    return match notifications.end_reason() {
                        Some(NotificationsEnd::Overflowed) => Err(anyhow::anyhow!(
                            "corral fell behind and its notification buffer filled; \
                             restart `corral events --since SEQ` with the last seq shown"
                        )),
                        _ => Err(ClientError::Disconnected.into()),
                    };
                }
            }
        }
    }
}

/// `corral config check [PATH]`.
fn config_check(explicit: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let path = paths::config_path(explicit);
    let exists = path
        .try_exists()
        .with_context(|| format!("cannot check whether {} exists", path.display()))?;
    if !exists {
        if json {
            emit_pretty_json(&serde_json::json!({"path": path, "exists": false, "ok": true, "servers": 0}))?;
        } else {
            emit_line(&format!(
                "{} does not exist: corrald will run with no servers",
                path.display()
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match config::load(&path) {
        Ok(config) => {
            let count = config.servers.len();
            if json {
                emit_pretty_json(&serde_json::json!({"path": path, "exists": true, "ok": true, "servers": count}))?;
            } else {
                let noun = if count == 1 { "server" } else { "servers" };
                emit_line(&format!("ok: {} ({count} {noun})", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(config::ConfigError::Invalid { problems, .. }) if json => {
            let problems: Vec<serde_json::Value> = problems
                .iter()
                .map(|problem| {
                    serde_json::json!({
                        "line": problem.line,
                        "column": problem.column,
                        "server": problem.server,
                        "field": problem.field,
                        "message": problem.message,
                        "text": problem.display_with_path(&path),
                    })
                })
                .collect();
            emit_pretty_json(&serde_json::json!({"path": path, "exists": true, "ok": false, "problems": problems}))?;
            Ok(ExitCode::from(EXIT_FAILURE))
        }
        Err(error) => {
            // One problem per line, each naming the file, line, server and field.
            eprintln!("{error}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// `corral config import`: with `--dry-run` the resulting file goes to stdout and the notes
/// to stderr, so `--dry-run > file.toml` works; otherwise the notes go to stdout.
fn config_import(options: &import::ImportOptions, json: bool) -> anyhow::Result<ExitCode> {
    let report = import::run(options)?;
    if json {
        emit_pretty_json(&report)?;
    } else if let Some(toml) = &report.toml {
        emit(toml)?;
        for line in report.lines() {
            eprintln!("{line}");
        }
    } else {
        for line in report.lines() {
            emit_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral mcp install|uninstall`.
fn mcp_install_command(command: &McpCommand, json: bool) -> anyhow::Result<ExitCode> {
    let (outcome, installing) = match command {
        McpCommand::Install {
            client,
            file,
            replace,
            config,
            dry_run,
        } => (
            install::install(&install::InstallOptions {
                client: *client,
                file: file.clone(),
                replace: *replace,
                config: config.clone(),
                dry_run: *dry_run,
            })?,
            true,
        ),
        McpCommand::Uninstall { client, file, dry_run } => (
            install::uninstall(&install::UninstallOptions {
                client: *client,
                file: file.clone(),
                dry_run: *dry_run,
            })?,
            false,
        ),
        // A daemon command (`main` sends it there).
        McpCommand::Url => anyhow::bail!("`corral mcp url` needs the daemon"),
    };
    if json {
        emit_pretty_json(&outcome)?;
    } else {
        for line in install::lines(&outcome, installing) {
            emit_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `corral config schema`.
fn config_schema() -> anyhow::Result<ExitCode> {
    emit_pretty_json(&config::json_schema())?;
    Ok(ExitCode::SUCCESS)
}
