//! Reading the secrets of a grant (client secrets, private keys, assertions, ID tokens) from
//! where the config says they are: an environment variable of corrald or a file, each time a
//! grant runs, so a rotated file is picked up by the next grant.
//!
//! Invariant: a [`Secret`] never shows its value (`Debug` hides it); every error names the
//! config field and the variable or file, never what it holds.

use corral_protocol::config::SecretSource;

use super::GrantError;

/// A secret read for one grant. `Debug` shows nothing of it.
pub(crate) struct Secret(String);

impl Secret {
    /// The value, for the request that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Read the secret `source` points at; `stem` is its config field without `_env_var` / `_file`
/// (e.g. `oauth_client_secret`), for messages. Surrounding whitespace (a file's final newline)
/// is not part of it; an empty secret is an error.
pub(crate) fn read(source: &SecretSource, stem: &str) -> Result<Secret, GrantError> {
    let field = source.field(stem);
    let value = match source {
        SecretSource::EnvVar(variable) => match std::env::var(variable) {
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => {
                return Err(GrantError::config(format!(
                    "environment variable `{variable}` ({field}) is not set in corrald's environment"
                )));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(GrantError::config(format!(
                    "environment variable `{variable}` ({field}) is not valid Unicode"
                )));
            }
        },
        SecretSource::File(path) => match std::fs::read(path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| GrantError::config(format!("{} ({field}) is not valid UTF-8", path.display())))?,
            Err(error) => {
                return Err(GrantError::config(format!(
                    "cannot read {} ({field}): {}",
                    path.display(),
                    error.kind()
                )));
            }
        },
        _ => {
            return Err(GrantError::config(format!(
                "{field}: this kind of secret source is not supported"
            )));
        }
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        let place = match source {
            SecretSource::EnvVar(variable) => format!("environment variable `{variable}`"),
            SecretSource::File(path) => path.display().to_string(),
            _ => field.clone(),
        };
        return Err(GrantError::config(format!("{place} ({field}) is empty")));
    }
    Ok(Secret(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_file_is_read_each_time_and_trimmed_and_errors_never_quote_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "first-secret\n").expect("write");
        let source = SecretSource::File(path.clone());
        assert_eq!(
            read(&source, "oauth_client_secret").expect("read").expose(),
            "first-secret"
        );
        std::fs::write(&path, "  rotated-secret  \n").expect("rotate");
        let rotated = read(&source, "oauth_client_secret").expect("read again");
        assert_eq!(rotated.expose(), "rotated-secret", "a rotated file is read anew");
        assert_eq!(format!("{rotated:?}"), "Secret(..)");

        let mut file = std::fs::File::create(&path).expect("truncate");
        file.write_all(b" \n").expect("blank");
        let error = read(&source, "oauth_client_secret").expect_err("blank").to_string();
        assert!(error.contains("(oauth_client_secret_file) is empty"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");

        std::fs::write(&path, b"\xff\xfe").expect("binary");
        let error = read(&source, "oauth_private_key").expect_err("not UTF-8").to_string();
        assert!(error.contains("(oauth_private_key_file) is not valid UTF-8"), "{error}");

        let missing = SecretSource::File(dir.path().join("missing"));
        let error = read(&missing, "oauth_assertion").expect_err("missing").to_string();
        assert!(error.contains("cannot read"), "{error}");
        assert!(error.contains("(oauth_assertion_file)"), "{error}");
    }

    #[test]
    fn an_unset_variable_is_named_with_its_field() {
        let source = SecretSource::EnvVar("CORRAL_TEST_NO_SUCH_VARIABLE_7f3a".to_owned());
        let error = read(&source, "oauth_id_token").expect_err("unset").to_string();
        assert_eq!(
            error,
            "environment variable `CORRAL_TEST_NO_SUCH_VARIABLE_7f3a` (oauth_id_token_env_var) is not set in \
             corrald's environment"
        );
    }
}
