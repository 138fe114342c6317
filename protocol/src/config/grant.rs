//! The OAuth grants for machines of a streamable-HTTP server (`oauth_grant`): client
//! credentials, the JWT-bearer grant of workload identity, and enterprise-managed authorization.
//! The fields themselves are rows of the one `FIELDS` table (`config.rs`); this module reads them
//! into an [`OAuthGrant`] and checks that they fit together: what each grant needs, one source per
//! secret, how the client authenticates, and no `Authorization` of the config's own besides.
//!
//! Secrets (client secrets, private keys, assertions, ID tokens) are never values of the file:
//! only the name of an environment variable of corrald or the absolute path of a file, read when
//! a grant runs ([`SecretSource`]). An inline secret field (`oauth_client_secret = "..."`) is an
//! error naming the server and the field and saying where the secret goes instead.

use std::ops::Range;
use std::path::PathBuf;

use super::ServerCheck;

/// The fields of a server that hold a secret inline, refused whatever their value, and the
/// fields to use instead.
pub(super) const INLINE_SECRETS: &[(&str, &str)] = &[
    (
        "oauth_client_secret",
        "`oauth_client_secret_env_var` or `oauth_client_secret_file`",
    ),
    (
        "oauth_private_key",
        "`oauth_private_key_env_var` or `oauth_private_key_file`",
    ),
    ("oauth_assertion", "`oauth_assertion_env_var` or `oauth_assertion_file`"),
    ("oauth_id_token", "`oauth_id_token_env_var` or `oauth_id_token_file`"),
    (
        "oauth_idp_client_secret",
        "`oauth_idp_client_secret_env_var` or `oauth_idp_client_secret_file`",
    ),
];

/// The values of `oauth_grant`.
pub(super) const GRANT_NAMES: [&str; 3] = ["client_credentials", "jwt_bearer", "enterprise_managed"];
/// The values of `oauth_client_auth`.
pub(super) const CLIENT_AUTH_NAMES: [&str; 4] =
    ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];

/// Fields that mean something only with `oauth_grant`.
const GRANT_ONLY_FIELDS: &[&str] = &[
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
];

/// Where a secret is read from when a grant runs: never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// An environment variable of corrald, by name.
    EnvVar(String),
    /// A file, by absolute path (read whole, surrounding whitespace trimmed), each time the
    /// grant runs: a file rotated by its owner is picked up at the next grant.
    File(PathBuf),
}

impl SecretSource {
    /// The config field this source was given in, e.g. `oauth_client_secret_file`, for messages.
    pub fn field(&self, stem: &str) -> String {
        match self {
            Self::EnvVar(_) => format!("{stem}_env_var"),
            Self::File(_) => format!("{stem}_file"),
        }
    }
}

/// `oauth_grant`: how corrald gets a server's tokens by itself, without a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthGrant {
    /// `client_credentials` (OAuth 2.1, SEP-1046): the client authenticates as itself.
    ClientCredentials {
        /// `oauth_client_id`.
        client_id: String,
        /// How it authenticates (a secret or a private key).
        auth: ClientAuth,
    },
    /// `jwt_bearer` (RFC 7523; workload identity federation, SEP-1933): a JWT the workload's
    /// platform issued (a Kubernetes service account token, a CI job's OIDC token) is the grant.
    JwtBearer {
        /// `oauth_client_id`, if the authorization server knows the workload as a client.
        client_id: Option<String>,
        /// `oauth_assertion_env_var` / `oauth_assertion_file`: the workload's JWT.
        assertion: SecretSource,
        /// How the client authenticates (`none` unless a secret or key is given).
        auth: ClientAuth,
    },
    /// `enterprise_managed` (SEP-990): the user's ID token is exchanged at the enterprise
    /// identity provider for an ID-JAG (RFC 8693), which the authorization server takes as a
    /// JWT-bearer grant (RFC 7523).
    EnterpriseManaged {
        /// `oauth_client_id`: the client at the MCP server's authorization server.
        client_id: String,
        /// How that client authenticates there.
        auth: ClientAuth,
        /// The identity provider.
        idp: IdentityProvider,
        /// `oauth_id_token_env_var` / `oauth_id_token_file`: the user's ID token from it.
        id_token: SecretSource,
    },
}

impl OAuthGrant {
    /// The grant as written in `oauth_grant`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientCredentials { .. } => GRANT_NAMES[0],
            Self::JwtBearer { .. } => GRANT_NAMES[1],
            Self::EnterpriseManaged { .. } => GRANT_NAMES[2],
        }
    }

    /// The client id at the MCP server's authorization server, if one is configured.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Self::ClientCredentials { client_id, .. } | Self::EnterpriseManaged { client_id, .. } => Some(client_id),
            Self::JwtBearer { client_id, .. } => client_id.as_deref(),
        }
    }

    /// How the client authenticates at the MCP server's authorization server.
    pub fn client_auth(&self) -> &ClientAuth {
        match self {
            Self::ClientCredentials { auth, .. }
            | Self::JwtBearer { auth, .. }
            | Self::EnterpriseManaged { auth, .. } => auth,
        }
    }
}

/// The enterprise identity provider of `enterprise_managed`: approved by configuration, never
/// discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityProvider {
    /// `oauth_idp_issuer`: its issuer identifier, exactly as in its metadata.
    pub issuer: String,
    /// `oauth_idp_token_endpoint`: where the token exchange goes.
    pub token_endpoint: String,
    /// `oauth_idp_client_id`: corrald's client there.
    pub client_id: String,
    /// `oauth_idp_client_secret_env_var` / `oauth_idp_client_secret_file`: its secret, for a
    /// confidential client (sent with HTTP Basic); none for a public client.
    pub client_secret: Option<SecretSource>,
}

/// How a client authenticates at a token endpoint (`oauth_client_auth`; by default from what is
/// configured: a private key → `private_key_jwt`, a secret → a secret method, neither → `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `none`: a public client, identified by `client_id` in the request body.
    None,
    /// A client secret: `client_secret_basic` (HTTP Basic) or `client_secret_post` (the body).
    Secret {
        /// Where the secret is.
        secret: SecretSource,
        /// The method named in `oauth_client_auth`; `None`: Basic, unless the authorization
        /// server's metadata lists `client_secret_post` and not `client_secret_basic`.
        method: Option<SecretMethod>,
    },
    /// `private_key_jwt` (RFC 7523 §2.2): a JWT signed with the client's key for every request.
    PrivateKeyJwt {
        /// Where the PEM key is (PKCS#8, or PKCS#1 / SEC1).
        key: SecretSource,
        /// `oauth_private_key_algorithm`.
        algorithm: JwtAlgorithm,
    },
}

/// Where a client secret goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretMethod {
    /// `client_secret_basic`: HTTP Basic.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the request body.
    Post,
}

/// The JWS algorithm of `private_key_jwt` assertions (`oauth_private_key_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (the default).
    #[default]
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA with P-256 and SHA-256.
    Es256,
    /// ECDSA with P-384 and SHA-384.
    Es384,
    /// EdDSA with Ed25519.
    EdDsa,
}

impl JwtAlgorithm {
    /// Every algorithm, in the order the docs list them.
    pub const ALL: [JwtAlgorithm; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// The JWS name (`alg`), e.g. `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|algorithm| algorithm.as_str() == name)
    }
}

/// What the rest of the server's fields say that the grant check needs.
pub(super) struct GrantInputs<'a> {
    /// `oauth_client_id`.
    pub(super) client_id: Option<&'a str>,
    /// `oauth_client_secret_env_var` / `oauth_client_secret_file`, as read (each already checked).
    pub(super) client_secret_env_var: Option<&'a str>,
    pub(super) client_secret_file: Option<&'a PathBuf>,
    /// Whether the config sets `Authorization` itself (`bearer_token_env_var`, or the header).
    pub(super) explicit_authorization: Option<&'static str>,
}

impl ServerCheck<'_, '_, '_> {
    /// The span of `field`'s value, or of the server's name when it is absent.
    fn span_of(&self, field: &str) -> Range<usize> {
        self.fields
            .get(field)
            .map_or_else(|| self.name_span.clone(), |value| value.span())
    }

    /// One of a secret's two sources (`STEM_env_var`, `STEM_file`), reporting both given.
    fn secret_source(&mut self, stem: &str) -> Option<SecretSource> {
        let env_field = format!("{stem}_env_var");
        let file_field = format!("{stem}_file");
        let env = self.string(&env_field, super::secret_env_var);
        let file = self.string(&file_field, super::secret_file);
        match (env, file) {
            (Some(_), Some(_)) => {
                let message = format!("set only one of `{env_field}` and `{file_field}`");
                self.report(Some(&file_field), self.span_of(&file_field), message);
                None
            }
            (Some(variable), None) => Some(SecretSource::EnvVar(variable)),
            (None, Some(path)) => Some(SecretSource::File(PathBuf::from(path))),
            (None, None) => None,
        }
    }

    /// A value of an enumeration, reporting anything else with the values it may take.
    fn one_of<'n>(&mut self, field: &str, names: &[&'n str]) -> Option<&'n str> {
        let value = self.value(field)?;
        let Some(text) = value.get_ref().as_str() else {
            self.type_error(field, value, "a string");
            return None;
        };
        if let Some(name) = names.iter().find(|name| **name == text) {
            return Some(name);
        }
        // Not quoted: a secret pasted into the wrong field must not end up in a message.
        let message = format!("unknown value, expected one of `{}`", names.join("`, `"));
        self.report(Some(field), value.span(), message);
        None
    }

    /// `oauth_grant` and its fields, checked together. `None` without `oauth_grant` (then a
    /// grant's fields are reported as unused) or when something is wrong (reported).
    pub(super) fn grant(&mut self, inputs: &GrantInputs<'_>) -> Option<OAuthGrant> {
        let Some(grant) = self.one_of("oauth_grant", &GRANT_NAMES) else {
            if !self.fields.contains_key("oauth_grant") {
                for field in GRANT_ONLY_FIELDS {
                    if self.value(field).is_some() {
                        let message = format!(
                            "only used with `oauth_grant` (`{}`); without it the server logs in \
                             interactively (`corral login`)",
                            GRANT_NAMES.join("`, `")
                        );
                        self.report(Some(field), self.span_of(field), message);
                    }
                }
            }
            return None;
        };
        let grant_span = self.span_of("oauth_grant");
        if let Some(field) = inputs.explicit_authorization {
            let message =
                format!("cannot be combined with `{field}`: the grant's tokens would never be used; remove one");
            self.report(Some("oauth_grant"), grant_span.clone(), message);
        }
        let auth = self.client_auth(inputs, grant)?;
        let client_id = inputs.client_id.map(str::to_owned);
        let needs_client_id = grant != "jwt_bearer" || auth != ClientAuth::None;
        if needs_client_id && client_id.is_none() {
            let message = format!("`oauth_grant = \"{grant}\"` needs `oauth_client_id`");
            self.report(Some("oauth_client_id"), grant_span.clone(), message);
        }
        let missing = |check: &mut Self, what: &str| {
            let message = format!("`oauth_grant = \"{grant}\"` needs {what}");
            check.report(Some("oauth_grant"), grant_span.clone(), message);
        };
        match grant {
            "client_credentials" => {
                if auth == ClientAuth::None {
                    missing(
                        self,
                        "a client secret (`oauth_client_secret_env_var` or `oauth_client_secret_file`) \
                         or a private key (`oauth_private_key_env_var` or `oauth_private_key_file`)",
                    );
                    return None;
                }
                Some(OAuthGrant::ClientCredentials {
                    client_id: client_id?,
                    auth,
                })
            }
            "jwt_bearer" => {
                let Some(assertion) = self.secret_source("oauth_assertion") else {
                    missing(
                        self,
                        "the workload's JWT: `oauth_assertion_file` (e.g. a projected service account \
                         token) or `oauth_assertion_env_var`",
                    );
                    return None;
                };
                if needs_client_id && client_id.is_none() {
                    return None;
                }
                Some(OAuthGrant::JwtBearer {
                    client_id,
                    assertion,
                    auth,
                })
            }
            _ => {
                let issuer = self.string("oauth_idp_issuer", super::http_url);
                let token_endpoint = self.string("oauth_idp_token_endpoint", super::http_url);
                let idp_client_id = self.string("oauth_idp_client_id", super::program);
                let idp_secret = self.secret_source("oauth_idp_client_secret");
                let id_token = self.secret_source("oauth_id_token");
                let mut complete = true;
                for (field, present) in [
                    ("`oauth_idp_issuer`", issuer.is_some()),
                    ("`oauth_idp_token_endpoint`", token_endpoint.is_some()),
                    ("`oauth_idp_client_id`", idp_client_id.is_some()),
                    (
                        "the user's ID token: `oauth_id_token_file` or `oauth_id_token_env_var`",
                        id_token.is_some(),
                    ),
                ] {
                    if !present {
                        missing(self, field);
                        complete = false;
                    }
                }
                if !complete {
                    return None;
                }
                Some(OAuthGrant::EnterpriseManaged {
                    client_id: client_id?,
                    auth,
                    idp: IdentityProvider {
                        issuer: issuer?,
                        token_endpoint: token_endpoint?,
                        client_id: idp_client_id?,
                        client_secret: idp_secret,
                    },
                    id_token: id_token?,
                })
            }
        }
    }

    /// How the client authenticates: `oauth_client_auth` when given (checked against what is
    /// configured), else what the secret or key configured implies.
    fn client_auth(&mut self, inputs: &GrantInputs<'_>, grant: &str) -> Option<ClientAuth> {
        let named = self.one_of("oauth_client_auth", &CLIENT_AUTH_NAMES);
        let key = self.secret_source("oauth_private_key");
        let algorithm = match self.value("oauth_private_key_algorithm") {
            None => JwtAlgorithm::default(),
            Some(_) => {
                let names = JwtAlgorithm::ALL.map(JwtAlgorithm::as_str);
                let name = self.one_of("oauth_private_key_algorithm", &names)?;
                JwtAlgorithm::from_name(name)?
            }
        };
        let secret = match (inputs.client_secret_env_var, inputs.client_secret_file) {
            (Some(_), Some(_)) => {
                let message = "set only one of `oauth_client_secret_env_var` and `oauth_client_secret_file`";
                self.report(
                    Some("oauth_client_secret_file"),
                    self.span_of("oauth_client_secret_file"),
                    message,
                );
                return None;
            }
            (Some(variable), None) => Some(SecretSource::EnvVar(variable.to_owned())),
            (None, Some(path)) => Some(SecretSource::File(path.clone())),
            (None, None) => None,
        };
        let auth_span = self.span_of("oauth_client_auth");
        let refuse = |check: &mut Self, message: String| {
            check.report(Some("oauth_client_auth"), auth_span.clone(), message);
            None
        };
        match (named, key, secret) {
            (_, Some(key), Some(_)) => {
                let field = key.field("oauth_private_key");
                let message = "set a client secret or a private key, not both";
                self.report(Some(&field), self.span_of(&field), message);
                None
            }
            (Some("private_key_jwt") | None, Some(key), None) => Some(ClientAuth::PrivateKeyJwt { key, algorithm }),
            (Some("private_key_jwt"), None, _) => refuse(
                self,
                "`private_key_jwt` needs a private key: `oauth_private_key_file` or `oauth_private_key_env_var`"
                    .to_owned(),
            ),
            (Some(method @ ("client_secret_basic" | "client_secret_post")), None, Some(secret)) => {
                let method = if method == "client_secret_basic" {
                    SecretMethod::Basic
                } else {
                    SecretMethod::Post
                };
                Some(ClientAuth::Secret {
                    secret,
                    method: Some(method),
                })
            }
            (None, None, Some(secret)) => Some(ClientAuth::Secret { secret, method: None }),
            (Some(method @ ("client_secret_basic" | "client_secret_post")), _, None) => refuse(
                self,
                format!(
                    "`{method}` needs a client secret: `oauth_client_secret_file` or `oauth_client_secret_env_var`"
                ),
            ),
            (Some("none"), None, None) | (None, None, None) => Some(ClientAuth::None),
            (Some(method), _, _) => refuse(
                self,
                format!("`{method}` does not fit the secret or key configured for `oauth_grant = \"{grant}\"`"),
            ),
        }
    }
}
