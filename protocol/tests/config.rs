//! The config file format at its boundary: text in, `Config` or exact error
//! lines out. The error cases are data: each is a file and every line
//! `corral config check` must print for it, so a changed message is a
//! visible diff here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_protocol::config::{self, Config, ConfigError, ConfigProblem, ServerConfig, TransportConfig};

/// The path error lines are printed with.
const PATH: &str = "config.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    config::parse(text, Path::new(PATH))
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match parse(text) {
        Ok(config) => panic!("expected problems, the config parsed: {config:?}\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

fn error_lines(text: &str) -> Vec<String> {
    problems(text)
        .iter()
        .map(|problem| problem.display_with_path(Path::new(PATH)))
        .collect()
}

fn parse_ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|error| panic!("expected a valid config, got:\n{error}\n--- for:\n{text}"))
}

struct ErrorCase {
    name: &'static str,
    toml: &'static str,
    errors: &'static [&'static str],
}

const ERROR_CASES: &[ErrorCase] = &[
    ErrorCase {
        name: "TOML syntax error",
        toml: "[servers.fs]\ncommand = \"npx\n",
        errors: &["config.toml:2:15: invalid TOML: invalid basic string, expected `\"`"],
    },
    ErrorCase {
        name: "duplicate key is a syntax error naming the key",
        toml: "[servers.fs]\ncommand = \"a\"\ncommand = \"b\"\n",
        errors: &["config.toml:3:1: invalid TOML: duplicate key `command`"],
    },
    ErrorCase {
        name: "unknown transport",
        toml: "[servers.fs]\ntransport = \"sse\"\ncommand = \"npx\"\n",
        errors: &[
            "config.toml:2:13: server `fs`, field `transport`: unknown transport `sse`, expected `stdio` or `streamable_http`",
        ],
    },
    ErrorCase {
        name: "transport of the wrong type",
        toml: "[servers.fs]\ntransport = 1\ncommand = \"npx\"\n",
        errors: &[
            "config.toml:2:13: server `fs`, field `transport`: expected `stdio` or `streamable_http`, found an integer",
        ],
    },
    ErrorCase {
        name: "transport disagrees with url",
        toml: "[servers.fs]\ntransport = \"stdio\"\nurl = \"https://example.com/mcp\"\n",
        errors: &[
            "config.toml:2:13: server `fs`, field `transport`: says `stdio`, but `url` selects the streamable_http transport",
        ],
    },
    ErrorCase {
        name: "command and url mixed",
        toml: "[servers.fs]\ncommand = \"npx\"\nurl = \"https://example.com/mcp\"\n",
        errors: &[
            "config.toml:3:1: server `fs`, field `url`: cannot be combined with `command`, a server has either \
             `command` (stdio transport) or `url` (streamable_http transport)",
        ],
    },
    ErrorCase {
        name: "neither command nor url",
        toml: "[servers.fs]\nargs = [\"x\"]\n",
        errors: &[
            "config.toml:1:10: server `fs`: missing `command` (stdio transport) or `url` (streamable_http transport)",
        ],
    },
    ErrorCase {
        name: "declared transport without its field",
        toml: "[servers.linear]\ntransport = \"streamable_http\"\n",
        errors: &[
            "config.toml:1:10: server `linear`, field `url`: required by the streamable_http transport, but missing",
        ],
    },
    ErrorCase {
        name: "stdio fields on an HTTP server",
        toml: r#"[servers.linear]
url = "https://mcp.linear.app/mcp"
args = ["x"]
env = { A = "b" }
env_vars = ["HOME"]
cwd = "/tmp"
"#,
        errors: &[
            "config.toml:3:1: server `linear`, field `args`: only for stdio servers, but this server uses the streamable_http transport",
            "config.toml:4:1: server `linear`, field `env`: only for stdio servers, but this server uses the streamable_http transport",
            "config.toml:5:1: server `linear`, field `env_vars`: only for stdio servers, but this server uses the streamable_http transport",
            "config.toml:6:1: server `linear`, field `cwd`: only for stdio servers, but this server uses the streamable_http transport",
        ],
    },
    ErrorCase {
        name: "HTTP fields on a stdio server, values not checked again",
        toml: r#"[servers.fs]
command = "npx"
bearer_token_env_var = "TOKEN"
http_headers = { "X-Team" = "core" }
env_http_headers = 5
scopes = ["read"]
oauth_resource = "https://example.com"
"#,
        errors: &[
            "config.toml:3:1: server `fs`, field `bearer_token_env_var`: only for streamable_http servers, but this server uses the stdio transport",
            "config.toml:4:1: server `fs`, field `http_headers`: only for streamable_http servers, but this server uses the stdio transport",
            "config.toml:5:1: server `fs`, field `env_http_headers`: only for streamable_http servers, but this server uses the stdio transport",
            "config.toml:6:1: server `fs`, field `scopes`: only for streamable_http servers, but this server uses the stdio transport",
            "config.toml:7:1: server `fs`, field `oauth_resource`: only for streamable_http servers, but this server uses the stdio transport",
        ],
    },
    ErrorCase {
        name: "inline bearer token",
        toml: "[servers.linear]\nurl = \"https://mcp.linear.app/mcp\"\nbearer_token = \"secret-value-123\"\n",
        errors: &[
            "config.toml:3:1: server `linear`, field `bearer_token`: inline tokens are not allowed, put the token in an \
             environment variable and set `bearer_token_env_var` to its name",
        ],
    },
    ErrorCase {
        name: "inline secrets of the grants for machines",
        toml: "[servers.ci]\nurl = \"https://mcp.example.com/mcp\"\noauth_client_secret = \"s3cret\"\n\
               oauth_private_key = \"-----BEGIN PRIVATE KEY-----\"\noauth_assertion = \"eyJ\"\n\
               oauth_id_token = \"eyJ\"\noauth_idp_client_secret = \"s3cret\"\n",
        errors: &[
            "config.toml:3:1: server `ci`, field `oauth_client_secret`: inline secrets are not allowed, put the secret \
             in a file or an environment variable of corrald and set `oauth_client_secret_env_var` or \
             `oauth_client_secret_file`",
            "config.toml:4:1: server `ci`, field `oauth_private_key`: inline secrets are not allowed, put the secret \
             in a file or an environment variable of corrald and set `oauth_private_key_env_var` or \
             `oauth_private_key_file`",
            "config.toml:5:1: server `ci`, field `oauth_assertion`: inline secrets are not allowed, put the secret in \
             a file or an environment variable of corrald and set `oauth_assertion_env_var` or `oauth_assertion_file`",
            "config.toml:6:1: server `ci`, field `oauth_id_token`: inline secrets are not allowed, put the secret in \
             a file or an environment variable of corrald and set `oauth_id_token_env_var` or `oauth_id_token_file`",
            "config.toml:7:1: server `ci`, field `oauth_idp_client_secret`: inline secrets are not allowed, put the \
             secret in a file or an environment variable of corrald and set `oauth_idp_client_secret_env_var` or \
             `oauth_idp_client_secret_file`",
        ],
    },
    ErrorCase {
        name: "a grant missing what it needs",
        toml: "[servers.ci]\nurl = \"https://mcp.example.com/mcp\"\noauth_grant = \"client_credentials\"\n\n\
               [servers.k8s]\nurl = \"https://mcp.example.com/mcp\"\noauth_grant = \"jwt_bearer\"\n\n\
               [servers.sso]\nurl = \"https://mcp.example.com/mcp\"\noauth_grant = \"enterprise_managed\"\n\
               oauth_client_id = \"corral\"\noauth_idp_issuer = \"https://idp.example.com\"\n",
        errors: &[
            "config.toml:3:15: server `ci`, field `oauth_client_id`: `oauth_grant = \"client_credentials\"` needs \
             `oauth_client_id`",
            "config.toml:3:15: server `ci`, field `oauth_grant`: `oauth_grant = \"client_credentials\"` needs a client \
             secret (`oauth_client_secret_env_var` or `oauth_client_secret_file`) or a private key \
             (`oauth_private_key_env_var` or `oauth_private_key_file`)",
            "config.toml:7:15: server `k8s`, field `oauth_grant`: `oauth_grant = \"jwt_bearer\"` needs the workload's \
             JWT: `oauth_assertion_file` (e.g. a projected service account token) or `oauth_assertion_env_var`",
            "config.toml:11:15: server `sso`, field `oauth_grant`: `oauth_grant = \"enterprise_managed\"` needs \
             `oauth_idp_token_endpoint`",
            "config.toml:11:15: server `sso`, field `oauth_grant`: `oauth_grant = \"enterprise_managed\"` needs \
             `oauth_idp_client_id`",
            "config.toml:11:15: server `sso`, field `oauth_grant`: `oauth_grant = \"enterprise_managed\"` needs the \
             user's ID token: `oauth_id_token_file` or `oauth_id_token_env_var`",
        ],
    },
    ErrorCase {
        name: "grant fields that do not fit together",
        toml: "[servers.ci]\nurl = \"https://mcp.example.com/mcp\"\noauth_grant = \"client_credentials\"\n\
               oauth_client_id = \"corral\"\noauth_client_secret_env_var = \"S\"\noauth_client_secret_file = \"/s\"\n\n\
               [servers.key]\nurl = \"https://mcp.example.com/mcp\"\noauth_grant = \"client_credentials\"\n\
               oauth_client_id = \"corral\"\noauth_client_auth = \"client_secret_post\"\n\
               oauth_private_key_file = \"/key.pem\"\n\n\
               [servers.both]\nurl = \"https://mcp.example.com/mcp\"\noauth_grant = \"client_credentials\"\n\
               oauth_client_id = \"corral\"\nbearer_token_env_var = \"T\"\noauth_client_auth = \"private_key_jwt\"\n\
               oauth_private_key_env_var = \"K\"\noauth_private_key_algorithm = \"HS256\"\n",
        errors: &[
            "config.toml:6:28: server `ci`, field `oauth_client_secret_file`: set only one of \
             `oauth_client_secret_env_var` and `oauth_client_secret_file`",
            "config.toml:12:21: server `key`, field `oauth_client_auth`: `client_secret_post` needs a client secret: \
             `oauth_client_secret_file` or `oauth_client_secret_env_var`",
            "config.toml:17:15: server `both`, field `oauth_grant`: cannot be combined with `bearer_token_env_var`: \
             the grant's tokens would never be used; remove one",
            "config.toml:22:31: server `both`, field `oauth_private_key_algorithm`: unknown value, expected one \
             of `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA`",
        ],
    },
    ErrorCase {
        name: "grant fields without a grant, and an unknown grant",
        toml: "[servers.a]\nurl = \"https://mcp.example.com/mcp\"\noauth_assertion_file = \"/token\"\n\
               oauth_client_auth = \"none\"\n\n[servers.b]\nurl = \"https://mcp.example.com/mcp\"\n\
               oauth_grant = \"password\"\n",
        errors: &[
            "config.toml:3:24: server `a`, field `oauth_assertion_file`: only used with `oauth_grant` \
             (`client_credentials`, `jwt_bearer`, `enterprise_managed`); without it the server logs in interactively \
             (`corral login`)",
            "config.toml:4:21: server `a`, field `oauth_client_auth`: only used with `oauth_grant` \
             (`client_credentials`, `jwt_bearer`, `enterprise_managed`); without it the server logs in interactively \
             (`corral login`)",
            "config.toml:8:15: server `b`, field `oauth_grant`: unknown value, expected one of `client_credentials`, `jwt_bearer`, `enterprise_managed`",
        ],
    },
    ErrorCase {
        name: "misspelt field, with a suggestion",
        toml: "[servers.fs]\ncomand = \"npx\"\n",
        errors: &[
            "config.toml:1:10: server `fs`: missing `command` (stdio transport) or `url` (streamable_http transport)",
            "config.toml:2:1: server `fs`, field `comand`: unknown field, did you mean `command`?",
        ],
    },
    ErrorCase {
        name: "another client's field name, with a suggestion",
        toml: "[servers.linear]\nurl = \"https://mcp.linear.app/mcp\"\nheaders = { \"X-Team\" = \"core\" }\n",
        errors: &["config.toml:3:1: server `linear`, field `headers`: unknown field, did you mean `http_headers`?"],
    },
    ErrorCase {
        name: "unknown field, nothing close",
        toml: "[servers.fs]\ncommand = \"npx\"\ncolour = \"red\"\n",
        errors: &["config.toml:3:1: server `fs`, field `colour`: unknown field"],
    },
    ErrorCase {
        name: "args not an array",
        toml: "[servers.fs]\ncommand = \"npx\"\nargs = \"x\"\n",
        errors: &["config.toml:3:8: server `fs`, field `args`: expected an array of strings, found a string"],
    },
    ErrorCase {
        name: "args with a number in it",
        toml: "[servers.fs]\ncommand = \"npx\"\nargs = [\"-y\", 1]\n",
        errors: &["config.toml:3:15: server `fs`, field `args`: expected an array of strings, item 2 is an integer"],
    },
    ErrorCase {
        name: "enabled not a boolean",
        toml: "[servers.fs]\ncommand = \"npx\"\nenabled = \"yes\"\n",
        errors: &[
            "config.toml:3:11: server `fs`, field `enabled`: expected a boolean (`true` or `false`), found a string",
        ],
    },
    ErrorCase {
        name: "enabled a date",
        toml: "[servers.fs]\ncommand = \"npx\"\nenabled = 1979-05-27\n",
        errors: &[
            "config.toml:3:11: server `fs`, field `enabled`: expected a boolean (`true` or `false`), found a date-time",
        ],
    },
    ErrorCase {
        name: "env value not a string",
        toml: "[servers.fs]\ncommand = \"npx\"\nenv = { A = 1 }\n",
        errors: &["config.toml:3:13: server `fs`, field `env`: expected a table of strings, `A` is an integer"],
    },
    ErrorCase {
        name: "env not a table",
        toml: "[servers.fs]\ncommand = \"npx\"\nenv = [\"A=1\"]\n",
        errors: &["config.toml:3:7: server `fs`, field `env`: expected a table of strings, found an array"],
    },
    ErrorCase {
        name: "negative timeout",
        toml: "[servers.fs]\ncommand = \"npx\"\nstartup_timeout_sec = -1\n",
        errors: &[
            "config.toml:3:23: server `fs`, field `startup_timeout_sec`: expected a number of seconds greater than 0, found -1",
        ],
    },
    ErrorCase {
        name: "crash loop limit zero, fractional or a string",
        toml: "[servers.a]\ncommand = \"npx\"\ncrash_loop_limit = 0\n\n[servers.b]\ncommand = \"npx\"\ncrash_loop_limit = 2.5\n\n[servers.c]\ncommand = \"npx\"\ncrash_loop_limit = \"5\"\n",
        errors: &[
            "config.toml:3:20: server `a`, field `crash_loop_limit`: expected a whole number greater than 0, found 0",
            "config.toml:7:20: server `b`, field `crash_loop_limit`: expected a whole number greater than 0, found a float",
            "config.toml:11:20: server `c`, field `crash_loop_limit`: expected a whole number greater than 0, found a string",
        ],
    },
    ErrorCase {
        name: "relative root, or not a list",
        toml: "[servers.a]\ncommand = \"npx\"\nroots = [\"src\", \"file:///srv\"]\n\n[servers.b]\ncommand = \"npx\"\nroots = \"/srv\"\n",
        errors: &[
            "config.toml:3:10: server `a`, field `roots`: must be an absolute path or a file:// URI, found `src`",
            "config.toml:7:9: server `b`, field `roots`: expected an array of strings, found a string",
        ],
    },
    ErrorCase {
        name: "negative stop timeout",
        toml: "[servers.fs]\ncommand = \"npx\"\nstop_timeout_sec = 0\n",
        errors: &[
            "config.toml:3:20: server `fs`, field `stop_timeout_sec`: expected a number of seconds greater than 0, found 0",
        ],
    },
    ErrorCase {
        name: "zero timeout",
        toml: "[servers.fs]\ncommand = \"npx\"\nstartup_timeout_sec = 0\ntool_timeout_sec = 0.0\n",
        errors: &[
            "config.toml:3:23: server `fs`, field `startup_timeout_sec`: expected a number of seconds greater than 0, found 0",
            "config.toml:4:20: server `fs`, field `tool_timeout_sec`: expected a number of seconds greater than 0, found 0.0",
        ],
    },
    ErrorCase {
        name: "timeout as a string",
        toml: "[servers.fs]\ncommand = \"npx\"\nstartup_timeout_sec = \"30\"\n",
        errors: &[
            "config.toml:3:23: server `fs`, field `startup_timeout_sec`: expected a number of seconds greater than 0, found a string",
        ],
    },
    ErrorCase {
        name: "timeout not a number",
        toml: "[servers.fs]\ncommand = \"npx\"\ntool_timeout_sec = nan\n",
        errors: &[
            "config.toml:3:20: server `fs`, field `tool_timeout_sec`: expected a number of seconds greater than 0, found nan",
        ],
    },
    ErrorCase {
        name: "timeout too large",
        toml: "[servers.fs]\ncommand = \"npx\"\ntool_timeout_sec = 1e300\n",
        errors: &[
            "config.toml:3:20: server `fs`, field `tool_timeout_sec`: too large (at most 31536000 seconds, one year), found 1e300",
        ],
    },
    ErrorCase {
        // Accepted before, and the server task's deadline `Instant::now() + 1e19 s` panicked.
        name: "startup timeout beyond a year",
        toml: "[servers.fs]\ncommand = \"npx\"\nstartup_timeout_sec = 1e19\n",
        errors: &[
            "config.toml:3:23: server `fs`, field `startup_timeout_sec`: too large (at most 31536000 seconds, one year), found 1e19",
        ],
    },
    ErrorCase {
        name: "empty command",
        toml: "[servers.fs]\ncommand = \"\"\n",
        errors: &["config.toml:2:11: server `fs`, field `command`: must not be empty"],
    },
    ErrorCase {
        name: "relative cwd",
        toml: "[servers.fs]\ncommand = \"npx\"\ncwd = \"relative/dir\"\n",
        errors: &["config.toml:3:7: server `fs`, field `cwd`: must be an absolute path, found `relative/dir`"],
    },
    ErrorCase {
        name: "url without a scheme",
        toml: "[servers.linear]\nurl = \"mcp.linear.app/mcp\"\n",
        errors: &[
            "config.toml:2:7: server `linear`, field `url`: expected a URL starting with `http://` or `https://`",
        ],
    },
    ErrorCase {
        name: "url with another scheme",
        toml: "[servers.linear]\nurl = \"ftp://mcp.linear.app/mcp\"\n",
        errors: &[
            "config.toml:2:7: server `linear`, field `url`: unsupported URL scheme `ftp`, expected `http` or `https`",
        ],
    },
    ErrorCase {
        name: "url without a host",
        toml: "[servers.linear]\nurl = \"https:///mcp\"\n",
        errors: &["config.toml:2:7: server `linear`, field `url`: the URL has no host"],
    },
    ErrorCase {
        name: "oauth_resource not a URL",
        toml: "[servers.linear]\nurl = \"https://mcp.linear.app/mcp\"\noauth_resource = \"mcp.linear.app\"\n",
        errors: &[
            "config.toml:3:18: server `linear`, field `oauth_resource`: expected a URL starting with `http://` or `https://`",
        ],
    },
    ErrorCase {
        name: "invalid server name",
        toml: "[servers.\"my server\"]\ncommand = \"npx\"\n",
        errors: &[
            "config.toml:1:10: server `my server`: invalid server name, use only ASCII letters, digits, `_` and `-`",
        ],
    },
    ErrorCase {
        name: "invalid environment variable names",
        toml: r#"[servers.fs]
command = "npx"
env = { "A=B" = "x" }
env_vars = ["OK", "C=D", "", "E\u0000F"]
"#,
        errors: &[
            "config.toml:3:9: server `fs`, field `env`: invalid environment variable name `A=B`, it must not contain `=` or NUL",
            "config.toml:4:19: server `fs`, field `env_vars`: invalid environment variable name `C=D`, it must not contain `=` or NUL",
            "config.toml:4:26: server `fs`, field `env_vars`: environment variable name must not be empty",
            "config.toml:4:30: server `fs`, field `env_vars`: invalid environment variable name `E\\0F`, it must not contain `=` or NUL",
        ],
    },
    ErrorCase {
        name: "invalid environment variable names for HTTP",
        toml: r#"[servers.linear]
url = "https://mcp.linear.app/mcp"
bearer_token_env_var = ""
env_http_headers = { "X-Api-Key" = "BAD=NAME" }
"#,
        errors: &[
            "config.toml:3:24: server `linear`, field `bearer_token_env_var`: environment variable name must not be empty",
            "config.toml:4:36: server `linear`, field `env_http_headers`: invalid environment variable name `BAD=NAME`, it must not contain `=` or NUL",
        ],
    },
    ErrorCase {
        name: "invalid HTTP header names",
        toml: r#"[servers.linear]
url = "https://mcp.linear.app/mcp"
http_headers = { "X Team" = "core" }
env_http_headers = { "X:Key" = "KEY" }
"#,
        errors: &[
            "config.toml:3:18: server `linear`, field `http_headers`: invalid HTTP header name `X Team`, use only ASCII letters, digits and !#$%&'*+-.^_`|~",
            "config.toml:4:22: server `linear`, field `env_http_headers`: invalid HTTP header name `X:Key`, use only ASCII letters, digits and !#$%&'*+-.^_`|~",
        ],
    },
    ErrorCase {
        name: "header value with a line break",
        toml: "[servers.linear]\nurl = \"https://mcp.linear.app/mcp\"\nhttp_headers = { \"X-Team\" = \"a\\r\\nInjected: 1\" }\n",
        errors: &[
            "config.toml:3:29: server `linear`, field `http_headers`: value of header `X-Team` must not contain line breaks or other control characters",
        ],
    },
    ErrorCase {
        name: "empty tool names and bad scopes",
        toml: r#"[servers.linear]
url = "https://mcp.linear.app/mcp"
enabled_tools = [""]
scopes = ["read write"]
"#,
        errors: &[
            "config.toml:3:18: server `linear`, field `enabled_tools`: tool name must not be empty",
            "config.toml:4:11: server `linear`, field `scopes`: a scope must be non-empty and contain no whitespace",
        ],
    },
    ErrorCase {
        name: "servers not a table",
        toml: "servers = 5\n",
        errors: &["config.toml:1:11: field `servers`: expected a table of servers, found an integer"],
    },
    ErrorCase {
        name: "servers as an array of tables",
        toml: "[[servers]]\ncommand = \"npx\"\n",
        errors: &["config.toml:1:1: field `servers`: expected a table of servers, found an array"],
    },
    ErrorCase {
        name: "server entry not a table",
        toml: "[servers]\nfs = \"npx\"\n",
        errors: &["config.toml:2:6: server `fs`: expected a table, found a string"],
    },
    ErrorCase {
        name: "unknown top-level keys",
        toml: "title = \"mine\"\n\n[server.fs]\ncommand = \"npx\"\n",
        errors: &[
            "config.toml:1:1: field `title`: unknown top-level key, the known ones are `servers`, \
             `credentials_store`, `oauth_callback_port`, `oauth_callback_url`, `oauth_opener`, `mcp_endpoint`",
            "config.toml:3:2: field `server`: unknown top-level key, did you mean `servers`?",
        ],
    },
    ErrorCase {
        name: "daemon-wide OAuth and credential settings",
        toml: "credentials_store = \"vault\"\noauth_callback_port = 0\noauth_callback_url = \"ftp://x\"\n\
               oauth_opener = []\ncredential_store = \"file\"\n",
        errors: &[
            "config.toml:1:21: field `credentials_store`: unknown credentials store `vault`, expected one of \
             `auto`, `keyring`, `file`, `encrypted-file`",
            "config.toml:2:23: field `oauth_callback_port`: expected a port number from 1 to 65535",
            "config.toml:3:22: field `oauth_callback_url`: unsupported URL scheme `ftp`, expected `http` or `https`",
            "config.toml:4:16: field `oauth_opener`: expected the program to run and its arguments, found no program",
            "config.toml:5:1: field `credential_store`: unknown top-level key, did you mean `credentials_store`?",
        ],
    },
    ErrorCase {
        name: "the MCP endpoint's table",
        toml: "[mcp_endpoint]\nenabled = \"yes\"\nlisten = \"localhost:7767\"\nallow_non_loopbak = true\n\
               allowed_origins = [\"http://localhost:6274/path\", 5, \"ftp://x\"]\nallow_session_servers = 1\n",
        errors: &[
            "config.toml:2:11: field `mcp_endpoint.enabled`: expected a boolean (`true` or `false`), found a string",
            "config.toml:3:10: field `mcp_endpoint.listen`: expected an IP address and a port such as \
             `127.0.0.1:7767` or `[::1]:7767`, found `localhost:7767`",
            "config.toml:4:1: field `mcp_endpoint.allow_non_loopbak`: unknown key, did you mean `allow_non_loopback`?",
            "config.toml:5:20: field `mcp_endpoint.allowed_origins`: not an origin: write only the scheme, host and \
             port, such as `http://localhost:6274`",
            "config.toml:5:50: field `mcp_endpoint.allowed_origins`: expected an array of strings, found an integer",
            "config.toml:5:53: field `mcp_endpoint.allowed_origins`: unsupported URL scheme `ftp`, expected `http` or \
             `https`",
            "config.toml:6:25: field `mcp_endpoint.allow_session_servers`: expected a boolean (`true` or `false`), \
             found an integer",
        ],
    },
    ErrorCase {
        name: "an MCP endpoint on every interface needs allow_non_loopback",
        toml: "mcp_endpoint = { enabled = true, listen = \"0.0.0.0:7767\" }\n",
        errors: &[
            "config.toml:1:43: field `mcp_endpoint.listen`: `0.0.0.0:7767` is not a loopback address: the endpoint \
             would be reachable from other machines; listen on 127.0.0.1 or [::1], or set \
             `allow_non_loopback = true` in [mcp_endpoint] if that is what you want",
        ],
    },
    ErrorCase {
        name: "the MCP endpoint is a table",
        toml: "mcp_endpoint = true\n",
        errors: &["config.toml:1:16: field `mcp_endpoint`: expected a table, found a boolean"],
    },
    ErrorCase {
        name: "two broken servers are both reported, in file order",
        toml: r#"[servers.zeta]
command = ""

[servers.alpha]
url = "ftp://example.com"
enabled = "no"
"#,
        errors: &[
            "config.toml:2:11: server `zeta`, field `command`: must not be empty",
            "config.toml:5:7: server `alpha`, field `url`: unsupported URL scheme `ftp`, expected `http` or `https`",
            "config.toml:6:11: server `alpha`, field `enabled`: expected a boolean (`true` or `false`), found a string",
        ],
    },
];

#[test]
fn every_error_case_prints_exactly_its_lines() {
    let mut failures = Vec::new();
    for case in ERROR_CASES {
        let actual = match parse(case.toml) {
            Ok(_) => vec!["<parsed without error>".to_owned()],
            Err(ConfigError::Invalid { problems, .. }) => problems
                .iter()
                .map(|problem| problem.display_with_path(Path::new(PATH)))
                .collect(),
            Err(other) => vec![format!("<unexpected error {other:?}>")],
        };
        if actual != case.errors {
            failures.push(format!(
                "case `{}`\n  expected:\n    {}\n  actual:\n    {}",
                case.name,
                case.errors.join("\n    "),
                actual.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn problems_carry_position_server_and_field() {
    let problems = problems("[servers.fs]\ncommand = \"npx\"\nenabled = \"yes\"\n");
    assert_eq!(problems.len(), 1);
    let problem = &problems[0];
    assert_eq!((problem.line, problem.column), (Some(3), Some(11)));
    assert_eq!(problem.server.as_deref(), Some("fs"));
    assert_eq!(problem.field.as_deref(), Some("enabled"));
    assert!(!problem.message.ends_with('.'), "{}", problem.message);
}

#[test]
fn the_error_displays_one_line_per_problem() {
    let error = parse("[servers.a]\ncommand = \"\"\n[servers.b]\nurl = \"x\"\n").expect_err("two problems");
    assert_eq!(
        error.to_string(),
        "config.toml:2:11: server `a`, field `command`: must not be empty\n\
         config.toml:4:7: server `b`, field `url`: expected a URL starting with `http://` or `https://`"
    );
}

#[test]
fn secret_values_never_appear_in_errors() {
    const SECRET: &str = "secret-value-123";
    let text = format!(
        r#"[servers.linear]
url = "https://user:{SECRET}@mcp.linear.app/mcp?token={SECRET} "
bearer_token = "{SECRET}"
http_headers = {{ "Bad Header" = "{SECRET}", "X-Ok" = "{SECRET}\n" }}
env = {{ "A=B" = "{SECRET}" }}
args = ["{SECRET}", 1]

[servers.fs]
command = "npx"
args = ["{SECRET}\u0000"]
env = {{ A = "{SECRET}\u0000", B = 1 }}
env_http_headers = {{ X = "{SECRET}" }}

[servers.other]
url = "{SECRET}"
oauth_resource = "ftp://{SECRET}"

[servers.machine]
url = "https://mcp.example.com/mcp"
oauth_grant = "client_credentials"
oauth_client_id = "corral"
oauth_client_secret = "{SECRET}"
oauth_private_key = "{SECRET}"
oauth_assertion = "{SECRET}"
oauth_id_token = "{SECRET}"
oauth_idp_client_secret = "{SECRET}"
oauth_idp_issuer = "{SECRET}"
oauth_private_key_algorithm = "{SECRET}"
oauth_private_key_file = "{SECRET}"

[servers.workload]
url = "https://mcp.example.com/mcp"
oauth_grant = "jwt_bearer"
oauth_assertion_env_var = "{SECRET}="
oauth_client_secret_file = "{SECRET}"
"#
    );
    let lines = error_lines(&text);
    assert!(
        lines.len() >= 10,
        "expected a problem for each bad value, got:\n{}",
        lines.join("\n")
    );
    for line in &lines {
        assert!(!line.contains(SECRET), "a secret leaked into: {line}");
    }
    // Nor in a syntax error about the line holding it.
    let syntax = error_lines(&format!("[servers.linear]\nhttp_headers = {{ X = \"{SECRET} }}\n"));
    assert!(!syntax.join("\n").contains(SECRET), "{syntax:?}");
}

/// The example from the issue, with every field.
const FULL_EXAMPLE: &str = r#"#:schema ./schema/config.schema.json

[servers.filesystem]
transport = "stdio"
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/home/ada"]
env = { LOG_LEVEL = "debug" }
env_vars = ["GITHUB_TOKEN"]
cwd = '@CWD@'
enabled = true
startup_timeout_sec = 30
tool_timeout_sec = 120
stop_timeout_sec = 4
restart_backoff_initial_sec = 0.25
restart_backoff_max_sec = 10
crash_loop_limit = 3
roots = ['@CWD@', "file:///srv/shared"]
enabled_tools = ["read_file"]
disabled_tools = ["write_file"]

[servers.linear]
url = "https://mcp.linear.app/mcp"
bearer_token_env_var = "LINEAR_TOKEN"
http_headers = { "X-Team" = "core" }
env_http_headers = { "X-Api-Key" = "LINEAR_API_KEY" }
scopes = ["read", "write"]
oauth_resource = "https://mcp.linear.app"
oauth_client_id = "corral-desktop"
oauth_client_secret_env_var = "LINEAR_CLIENT_SECRET"
oauth_client_metadata_url = "https://corral.example/client.json"
enabled = false
startup_timeout_sec = 2.5
tool_timeout_sec = 0.25

[servers.ci]
url = "https://mcp.example.com/mcp"
oauth_grant = "client_credentials"
oauth_client_id = "corral-ci"
oauth_client_auth = "private_key_jwt"
oauth_private_key_file = '@CWD@/ci-key.pem'
oauth_private_key_algorithm = "ES256"

[servers.ci-env]
url = "https://mcp.example.com/mcp"
oauth_grant = "client_credentials"
oauth_client_id = "corral-ci"
oauth_private_key_env_var = "CI_KEY"

[servers.k8s]
url = "https://mcp.example.com/mcp"
oauth_grant = "jwt_bearer"
oauth_assertion_file = '@CWD@/token'

[servers.k8s-env]
url = "https://mcp.example.com/mcp"
oauth_grant = "jwt_bearer"
oauth_client_id = "workload"
oauth_client_secret_file = '@CWD@/workload-secret'
oauth_assertion_env_var = "WORKLOAD_JWT"

[servers.sso]
url = "https://mcp.example.com/mcp"
oauth_grant = "enterprise_managed"
oauth_client_id = "corral"
oauth_client_auth = "client_secret_post"
oauth_client_secret_env_var = "AS_SECRET"
oauth_idp_issuer = "https://idp.example.com"
oauth_idp_token_endpoint = "https://idp.example.com/token"
oauth_idp_client_id = "corral-at-idp"
oauth_idp_client_secret_file = '@CWD@/idp-secret'
oauth_id_token_file = '@CWD@/id-token'

[servers.sso-env]
url = "https://mcp.example.com/mcp"
oauth_grant = "enterprise_managed"
oauth_client_id = "corral"
oauth_idp_issuer = "https://idp.example.com"
oauth_idp_token_endpoint = "https://idp.example.com/token"
oauth_idp_client_id = "corral-at-idp"
oauth_idp_client_secret_env_var = "IDP_SECRET"
oauth_id_token_env_var = "ID_TOKEN"
"#;

/// An absolute directory on this platform, for `cwd`.
fn absolute_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn full_example() -> String {
    FULL_EXAMPLE.replace("@CWD@", &absolute_dir().display().to_string())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn string_map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn server<'c>(config: &'c Config, name: &str) -> &'c ServerConfig {
    config
        .servers
        .get(name)
        .unwrap_or_else(|| panic!("server `{name}` missing from {config:?}"))
}

#[test]
fn the_full_example_reads_every_field() {
    let config = parse_ok(&full_example());
    assert_eq!(
        config.servers.keys().collect::<Vec<_>>(),
        [
            "ci",
            "ci-env",
            "filesystem",
            "k8s",
            "k8s-env",
            "linear",
            "sso",
            "sso-env"
        ]
    );

    let filesystem = server(&config, "filesystem");
    assert_eq!(filesystem.name, "filesystem");
    assert!(filesystem.enabled);
    assert_eq!(filesystem.startup_timeout, Duration::from_secs(30));
    assert_eq!(filesystem.tool_timeout, Duration::from_secs(120));
    assert_eq!(filesystem.enabled_tools, Some(strings(&["read_file"])));
    assert_eq!(filesystem.disabled_tools, strings(&["write_file"]));
    assert_eq!(filesystem.stop_timeout, Duration::from_secs(4));
    assert_eq!(filesystem.restart_backoff_initial, Duration::from_millis(250));
    assert_eq!(filesystem.restart_backoff_max, Duration::from_secs(10));
    assert_eq!(filesystem.crash_loop_limit, 3);
    assert_eq!(
        filesystem.roots,
        Some(vec![
            absolute_dir().display().to_string(),
            "file:///srv/shared".to_owned()
        ])
    );
    let TransportConfig::Stdio(stdio) = &filesystem.transport else {
        panic!("filesystem should be stdio: {filesystem:?}");
    };
    assert_eq!(stdio.command, "npx");
    assert_eq!(
        stdio.args,
        strings(&["-y", "@modelcontextprotocol/server-filesystem", "/home/ada"])
    );
    assert_eq!(stdio.env, string_map(&[("LOG_LEVEL", "debug")]));
    assert_eq!(stdio.env_vars, strings(&["GITHUB_TOKEN"]));
    assert_eq!(stdio.cwd, Some(absolute_dir()));

    let linear = server(&config, "linear");
    assert!(!linear.enabled);
    assert_eq!(linear.startup_timeout, Duration::from_millis(2500));
    assert_eq!(linear.tool_timeout, Duration::from_millis(250));
    assert_eq!(linear.enabled_tools, None);
    assert!(linear.disabled_tools.is_empty());
    let TransportConfig::StreamableHttp(http) = &linear.transport else {
        panic!("linear should be streamable HTTP: {linear:?}");
    };
    assert_eq!(http.url, "https://mcp.linear.app/mcp");
    assert_eq!(http.bearer_token_env_var.as_deref(), Some("LINEAR_TOKEN"));
    assert_eq!(http.http_headers, string_map(&[("X-Team", "core")]));
    assert_eq!(http.env_http_headers, string_map(&[("X-Api-Key", "LINEAR_API_KEY")]));
    assert_eq!(http.scopes, strings(&["read", "write"]));
    assert_eq!(http.oauth_resource.as_deref(), Some("https://mcp.linear.app"));
    assert_eq!(http.oauth_grant, None);
}

/// The grant of server `name` of the full example.
fn grant(config: &Config, name: &str) -> config::OAuthGrant {
    let TransportConfig::StreamableHttp(http) = &server(config, name).transport else {
        panic!("{name} should be streamable HTTP");
    };
    *http
        .oauth_grant
        .clone()
        .unwrap_or_else(|| panic!("{name} has no grant"))
}

#[test]
fn the_full_example_reads_every_grant() {
    use config::{ClientAuth, JwtAlgorithm, OAuthGrant, SecretMethod, SecretSource};
    let config = parse_ok(&full_example());
    let file = |name: &str| SecretSource::File(absolute_dir().join(name));
    let env = |name: &str| SecretSource::EnvVar(name.to_owned());

    let OAuthGrant::ClientCredentials { client_id, auth } = grant(&config, "ci") else {
        panic!("ci: client_credentials");
    };
    assert_eq!(client_id, "corral-ci");
    assert_eq!(
        auth,
        ClientAuth::PrivateKeyJwt {
            key: file("ci-key.pem"),
            algorithm: JwtAlgorithm::Es256
        }
    );
    let OAuthGrant::ClientCredentials { auth, .. } = grant(&config, "ci-env") else {
        panic!("ci-env: client_credentials");
    };
    assert_eq!(
        auth,
        ClientAuth::PrivateKeyJwt {
            key: env("CI_KEY"),
            algorithm: JwtAlgorithm::Rs256
        },
        "a key alone means private_key_jwt, RS256 by default"
    );

    let OAuthGrant::JwtBearer {
        client_id,
        assertion,
        auth,
    } = grant(&config, "k8s")
    else {
        panic!("k8s: jwt_bearer");
    };
    assert_eq!((client_id, assertion, auth), (None, file("token"), ClientAuth::None));
    let OAuthGrant::JwtBearer {
        client_id,
        assertion,
        auth,
    } = grant(&config, "k8s-env")
    else {
        panic!("k8s-env: jwt_bearer");
    };
    assert_eq!(client_id.as_deref(), Some("workload"));
    assert_eq!(assertion, env("WORKLOAD_JWT"));
    assert_eq!(
        auth,
        ClientAuth::Secret {
            secret: file("workload-secret"),
            method: None
        },
        "a secret alone: the method follows the authorization server's metadata"
    );

    let OAuthGrant::EnterpriseManaged {
        client_id,
        auth,
        idp,
        id_token,
    } = grant(&config, "sso")
    else {
        panic!("sso: enterprise_managed");
    };
    assert_eq!(client_id, "corral");
    assert_eq!(
        auth,
        ClientAuth::Secret {
            secret: env("AS_SECRET"),
            method: Some(SecretMethod::Post)
        }
    );
    assert_eq!(idp.issuer, "https://idp.example.com");
    assert_eq!(idp.token_endpoint, "https://idp.example.com/token");
    assert_eq!(idp.client_id, "corral-at-idp");
    assert_eq!(idp.client_secret, Some(file("idp-secret")));
    assert_eq!(id_token, file("id-token"));
    let OAuthGrant::EnterpriseManaged {
        auth, idp, id_token, ..
    } = grant(&config, "sso-env")
    else {
        panic!("sso-env: enterprise_managed");
    };
    assert_eq!(auth, ClientAuth::None, "no secret: a public client");
    assert_eq!(idp.client_secret, Some(env("IDP_SECRET")));
    assert_eq!(id_token, env("ID_TOKEN"));
}

#[test]
fn omitted_fields_take_their_defaults() {
    let config = parse_ok("[servers.fs]\ncommand = \"npx\"\n\n[servers.remote]\nurl = \"http://127.0.0.1:8080/mcp\"\n");
    for server in config.servers.values() {
        assert!(server.enabled);
        assert_eq!(server.startup_timeout, config::DEFAULT_STARTUP_TIMEOUT);
        assert_eq!(server.tool_timeout, config::DEFAULT_TOOL_TIMEOUT);
        assert_eq!(server.stop_timeout, config::DEFAULT_STOP_TIMEOUT);
        assert_eq!(server.restart_backoff_initial, config::DEFAULT_RESTART_BACKOFF_INITIAL);
        assert_eq!(server.restart_backoff_max, config::DEFAULT_RESTART_BACKOFF_MAX);
        assert_eq!(server.crash_loop_limit, config::DEFAULT_CRASH_LOOP_LIMIT);
        assert_eq!(server.enabled_tools, None);
        assert!(server.disabled_tools.is_empty());
    }
    let TransportConfig::Stdio(stdio) = &server(&config, "fs").transport else {
        panic!("fs should be stdio");
    };
    assert!(stdio.args.is_empty() && stdio.env.is_empty() && stdio.env_vars.is_empty());
    assert_eq!(stdio.cwd, None);
    let TransportConfig::StreamableHttp(http) = &server(&config, "remote").transport else {
        panic!("remote should be streamable HTTP");
    };
    assert_eq!(http.bearer_token_env_var, None);
    assert!(http.http_headers.is_empty() && http.env_http_headers.is_empty() && http.scopes.is_empty());
    assert_eq!(http.oauth_resource, None);
}

#[test]
fn files_without_servers_are_the_default_config() {
    for text in ["", "\n", "# nothing yet\n", "[servers]\n", "servers = {}\n"] {
        assert_eq!(parse_ok(text), Config::default(), "{text:?}");
    }
}

#[test]
fn inline_tables_and_dotted_keys_are_the_same_config() {
    let inline = parse_ok("servers = { fs = { command = \"npx\", args = [\"a\"] } }\n");
    let dotted = parse_ok("servers.fs.command = \"npx\"\nservers.fs.args = [\"a\"]\n");
    let headers = parse_ok("[servers.fs]\ncommand = \"npx\"\nargs = [\"a\"]\n");
    assert_eq!(inline, headers);
    assert_eq!(dotted, headers);
}

#[test]
fn a_missing_file_is_the_default_config() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir/config.toml");
    assert_eq!(config::load(&path).expect("missing file is fine"), Config::default());
}

#[test]
fn a_file_that_is_not_utf8_is_a_problem_with_a_position() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config-not-utf8.toml");
    std::fs::write(&path, b"[servers.fs]\ncommand = \"np\xffx\"\n").expect("write test file");
    let error = config::load(&path).expect_err("not UTF-8");
    let ConfigError::Invalid { problems, .. } = &error else {
        panic!("expected ConfigError::Invalid, got {error:?}");
    };
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].line, problems[0].column), (Some(2), Some(14)));
    assert_eq!(problems[0].message, "the file is not valid UTF-8");
}

#[test]
fn a_directory_is_a_read_error_naming_the_path() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let error = config::load(path).expect_err("a directory is not a file");
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()), "{error}");
}

/// Server field names the JSON Schema describes.
fn schema_server_fields() -> Vec<String> {
    let schema = config::json_schema();
    let properties = schema["$defs"]["server"]["properties"]
        .as_object()
        .expect("the schema describes server properties");
    properties.keys().cloned().collect()
}

#[test]
fn the_schema_describes_exactly_the_fields_the_parser_reads() {
    // The full example uses every field and parses, so each one is known to the parser.
    let example: toml::Table = toml::from_str(&full_example()).expect("the example is TOML");
    let mut used: Vec<String> = example["servers"]
        .as_table()
        .expect("servers table")
        .values()
        .flat_map(|server| server.as_table().expect("server table").keys().cloned())
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used, schema_server_fields());

    let schema = config::json_schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["$defs"]["server"]["additionalProperties"], false);
    for field in schema_server_fields() {
        let description = &schema["$defs"]["server"]["properties"][&field]["description"];
        assert!(
            description.as_str().is_some_and(|text| !text.is_empty()),
            "`{field}` has no description"
        );
    }
    let properties = &schema["$defs"]["server"]["properties"];
    assert_eq!(properties["enabled"]["default"], true);
    assert_eq!(
        properties["startup_timeout_sec"]["default"],
        config::DEFAULT_STARTUP_TIMEOUT.as_secs()
    );
    assert_eq!(
        properties["tool_timeout_sec"]["default"],
        config::DEFAULT_TOOL_TIMEOUT.as_secs()
    );
}

#[test]
fn the_reference_docs_mention_every_field() {
    let docs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap_or_else(|error| panic!("{}: {error}", docs_path.display()));
    let missing: Vec<String> = schema_server_fields()
        .into_iter()
        .filter(|field| !docs.contains(&format!("`{field}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} does not document {missing:?}",
        docs_path.display()
    );
}

#[test]
fn the_mcp_endpoint_is_off_by_default_on_loopback_and_read_when_configured() {
    let default = parse_ok("").mcp_endpoint;
    assert!(!default.enabled);
    assert_eq!(default.listen, config::DEFAULT_MCP_ENDPOINT_LISTEN);
    assert_eq!(default.listen.to_string(), "127.0.0.1:7767");
    assert!(!default.allow_non_loopback && default.allowed_origins.is_empty());
    assert!(
        !default.allow_session_servers,
        "a token must not grant running commands by default"
    );
    let endpoint = parse_ok(
        "[mcp_endpoint]\nenabled = true\nlisten = \"[::1]:0\"\nallowed_origins = [\"http://localhost:6274\"]\n",
    )
    .mcp_endpoint;
    assert!(endpoint.enabled);
    assert_eq!(endpoint.listen, "[::1]:0".parse().expect("an address"));
    assert_eq!(endpoint.allowed_origins, ["http://localhost:6274"]);
    let everywhere =
        parse_ok("[mcp_endpoint]\nenabled = true\nlisten = \"0.0.0.0:7767\"\nallow_non_loopback = true\n").mcp_endpoint;
    assert!(everywhere.allow_non_loopback);
    assert!(everywhere.listen.ip().is_unspecified());
    let own_servers = parse_ok("[mcp_endpoint]\nallow_session_servers = true\n").mcp_endpoint;
    assert!(own_servers.allow_session_servers);
}

#[test]
fn daemon_wide_oauth_settings_are_read() {
    let config = parse_ok(
        "credentials_store = \"encrypted-file\"\noauth_callback_port = 8765\n\
         oauth_callback_url = \"http://localhost:8765/cb\"\noauth_opener = [\"python3\", \"follow.py\"]\n",
    );
    assert_eq!(
        config.credentials_store,
        corral_protocol::config::CredentialsStoreMode::EncryptedFile
    );
    assert_eq!(config.oauth_callback_port, Some(8765));
    assert_eq!(config.oauth_callback_url.as_deref(), Some("http://localhost:8765/cb"));
    assert_eq!(
        config.oauth_opener,
        Some(vec!["python3".to_owned(), "follow.py".to_owned()])
    );
    assert_eq!(
        parse_ok("").credentials_store,
        corral_protocol::config::CredentialsStoreMode::Auto
    );
}
