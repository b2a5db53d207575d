//! Configuration common to every Herald service.
//!
//! Each binary describes its settings as a clap `Parser` whose fields also read `HERALD_*`
//! environment variables; clap does the typing, defaults, validation and `--help`.
//! [`parse`] wraps it so that a bad or missing value names the environment variable too,
//! and exits non-zero without a panic.

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;

/// The database connection every service needs.
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// PostgreSQL URL, with an explicit user, e.g. postgres://herald:herald@127.0.0.1:5432/herald
    /// (TLS: add ?sslmode=require, or verify-full to check the server's name and
    /// certificate against HERALD_TLS_CA_FILE and the public roots built in, Mozilla's: not
    /// the system's store).
    #[arg(long, env = "HERALD_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: SecretUrl,

    /// A PEM file of CA certificates trusted for TLS to PostgreSQL and RabbitMQ (a managed
    /// service's private CA), besides the public roots: RabbitMQ's from the system's store,
    /// PostgreSQL's built in (Mozilla's).
    #[arg(long, env = "HERALD_TLS_CA_FILE", value_parser = parse_ca_file)]
    pub tls_ca_file: Option<PathBuf>,

    /// Maximum PostgreSQL connections in this process's pool (each process holds one more of
    /// its own for its readiness check; a scheduler two more besides: one for its leadership
    /// lock, one listening for wake-ups; a receiver one more, listening for providers
    /// changed).
    #[arg(long, env = "HERALD_DB_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub db_pool_size: u32,

    /// How long (ms) a worker's write, a receiver's receipt statement or a scheduler's pass
    /// of statements (plus the confirm timeout) waits for PostgreSQL's answer before it is
    /// given up and tried again on a new connection; a worker's and a receiver's sessions
    /// cancel a statement at four fifths of it; PostgreSQL drops the session of any
    /// service (the admin's too) whose side has gone quiet for it plus 15 s. A failover to
    /// another host, or a network cut that drops packets, leaves connections that never
    /// answer and never fail: the kernel takes about 15 minutes to notice, and meanwhile a
    /// process waiting on one would do nothing else. A connection taken from the pool, or
    /// handed back to it, must also answer a ping within 2 s or it is closed.
    #[arg(long, env = "HERALD_DB_DEADLINE_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub db_deadline_ms: u64,
}

/// The broker connection of the services that carry work (the scheduler and the workers;
/// the admin and the receiver only use the database).
#[derive(Debug, Clone, clap::Args)]
pub struct Broker {
    /// RabbitMQ URL; the path is the vhost (`%2f` for the default one); amqps:// for TLS,
    /// verified against the system's roots and HERALD_TLS_CA_FILE. A cluster: the URL of
    /// each node, separated by commas (a connection goes to the first that answers,
    /// starting from one drawn at random in each process).
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = parse_amqp_url
    )]
    pub amqp_url: SecretUrl,
}

impl Connections {
    /// See [`Connections::db_deadline_ms`].
    pub fn db_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.db_deadline_ms)
    }

    /// The TLS trust settings for both connections.
    pub fn tls(&self) -> Tls {
        Tls {
            ca_file: self.tls_ca_file.clone(),
        }
    }
}

/// The keys provider credentials are sealed with at rest (see [`crate::sealed`]): every
/// process that reads or writes them (admin, workers, receiver) has the same.
#[derive(Debug, Clone, clap::Args)]
pub struct CredentialKeys {
    /// 32 random bytes in base64 (`openssl rand -base64 32`) that seal providers'
    /// credentials in the database; unset, they are stored as given. The admin, the workers
    /// and the receiver need the same key.
    #[arg(long, env = "HERALD_CREDENTIALS_KEY", hide_env_values = true, value_parser = parse_seal_key)]
    pub credentials_key: Option<SecretString>,

    /// Earlier keys, comma-separated, still accepted to open credentials during a rotation
    /// (until `herald-admin credentials reseal` has sealed them all with the new key).
    #[arg(long, env = "HERALD_CREDENTIALS_OLD_KEYS", hide_env_values = true, value_parser = parse_seal_keys)]
    pub credentials_old_keys: Option<SecretString>,
}

impl CredentialKeys {
    pub fn keyring(&self) -> crate::sealed::Keyring {
        // Both were checked when parsed.
        crate::sealed::Keyring::new(
            self.credentials_key.as_ref(),
            self.credentials_old_keys.as_ref(),
        )
        .unwrap_or_default()
    }
}

fn parse_seal_key(value: &str) -> Result<SecretString, String> {
    let key = SecretString::from(value.to_owned());
    crate::sealed::Keyring::new(Some(&key), None).map_err(|e| e.to_string())?;
    Ok(key)
}

fn parse_seal_keys(value: &str) -> Result<SecretString, String> {
    let keys = SecretString::from(value.to_owned());
    crate::sealed::Keyring::new(None, Some(&keys)).map_err(|e| e.to_string())?;
    Ok(keys)
}

/// What TLS connections trust beyond the system's roots.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
}

/// A URL that may carry a password: usable, but shown with the password masked (by
/// `Debug` and [`SecretUrl::redacted`]), and wiped from memory when dropped.
#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL (or comma-separated URLs) with every password replaced by `***`.
    pub fn redacted(&self) -> String {
        self.expose()
            .split(',')
            .map(|one| match url::Url::parse(one.trim()) {
                Ok(mut url) if url.password().is_some() => {
                    let _ = url.set_password(Some("***"));
                    url.to_string()
                }
                Ok(url) => url.to_string(),
                Err(_) => "<unparsable URL>".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_database_url(value: &str) -> Result<SecretUrl, String> {
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err("must start with postgres:// or postgresql://".into());
    }
    let rest = value.split_once("://").map_or("", |(_, r)| r);
    if !rest.contains('@') {
        return Err("must name the user explicitly (postgres://USER:PASSWORD@HOST/DB)".into());
    }
    value
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    Ok(SecretUrl::new(value))
}

fn parse_ca_file(value: &str) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(value).map_err(|e| format!("cannot read {value}: {e}"))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{value} holds no PEM certificate"));
    }
    Ok(PathBuf::from(value))
}

/// A public base URL (the receipt receiver's, as providers reach it): http(s), a host, no
/// query or fragment; returned without a trailing slash.
pub fn parse_public_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment".into());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_amqp_url(value: &str) -> Result<SecretUrl, String> {
    for node in value.split(',').map(str::trim) {
        if !(node.starts_with("amqp://") || node.starts_with("amqps://")) {
            return Err("each URL must start with amqp:// (or amqps://)".into());
        }
        url::Url::parse(node).map_err(|e| format!("not a URL: {e}"))?;
    }
    Ok(SecretUrl::new(value))
}

/// Parses the process's arguments and environment into `T`.
///
/// On `--help`/`--version` it prints and exits 0; on an error it prints clap's message plus the
/// environment variable behind each offending argument, and exits 2.
pub fn parse<T: Parser>() -> T {
    parse_from(std::env::args_os())
}

/// [`parse`] over explicit arguments (tests use it).
pub fn parse_from<T, I, A>(args: I) -> T
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let mut command = T::command();
    match command
        .try_get_matches_from_mut(args)
        .and_then(|mut m| T::from_arg_matches_mut(&mut m))
    {
        Ok(parsed) => parsed,
        Err(error) => {
            use clap::error::ErrorKind;
            let explain = matches!(
                error.kind(),
                ErrorKind::MissingRequiredArgument
                    | ErrorKind::ValueValidation
                    | ErrorKind::InvalidValue
            );
            let error = error.format(&mut command);
            let mut message = without_secret(&error, &command);
            if explain {
                // The arguments of the command and of its subcommands (`herald-admin serve`).
                fn all_arguments(command: &clap::Command) -> Vec<&clap::Arg> {
                    command
                        .get_arguments()
                        .chain(command.get_subcommands().flat_map(all_arguments))
                        .collect()
                }
                let mut seen = std::collections::BTreeSet::new();
                let hints: Vec<String> = all_arguments(&command)
                    .into_iter()
                    .filter_map(|arg| {
                        let env = arg.get_env()?.to_string_lossy().into_owned();
                        let long = arg.get_long()?;
                        (message.contains(&format!("--{long}")) && seen.insert(long))
                            .then(|| format!("  --{long} is read from {env}"))
                    })
                    .collect();
                if !hints.is_empty() {
                    message.push_str("\nconfiguration:\n");
                    message.push_str(&hints.join("\n"));
                    message.push('\n');
                }
            }
            // Help and version output are not errors; everything else exits 2 (as clap does).
            let code = if error.use_stderr() { 2 } else { 0 };
            if error.use_stderr() {
                eprint!("{message}");
            } else {
                #[allow(clippy::print_stdout)]
                {
                    print!("{message}");
                }
            }
            std::process::exit(code);
        }
    }
}

/// `error`'s message, with the value it refuses hidden when that value is a secret (an
/// argument whose environment value `--help` hides: a URL with its password, a sealing key):
/// clap's message quotes the value, and a malformed one (a password with a `#` in it) would
/// otherwise go, whole, into the logs.
fn without_secret(error: &clap::Error, command: &clap::Command) -> String {
    use clap::error::{ContextKind, ContextValue};
    let message = error.render().to_string();
    let (Some(ContextValue::String(argument)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return message;
    };
    fn all_arguments(command: &clap::Command) -> Vec<&clap::Arg> {
        command
            .get_arguments()
            .chain(command.get_subcommands().flat_map(all_arguments))
            .collect()
    }
    let secret = all_arguments(command).into_iter().any(|arg| {
        arg.is_hide_env_values_set()
            && arg
                .get_long()
                .is_some_and(|long| argument.starts_with(&format!("--{long}")))
    });
    if secret && !value.is_empty() {
        message.replace(value.as_str(), "<hidden>")
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_must_name_a_user() {
        assert!(parse_database_url("postgres://localhost/herald").is_err());
        assert!(parse_database_url("mysql://u:p@localhost/herald").is_err());
        assert!(parse_database_url("postgres://herald:pw@127.0.0.1/herald").is_ok());
    }

    #[test]
    fn amqp_url_scheme_is_checked() {
        assert!(parse_amqp_url("http://localhost").is_err());
        assert!(parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(parse_amqp_url("amqp://a:5672/%2f, amqp://b:5673/%2f").is_ok());
        assert!(parse_amqp_url("amqp://a:5672/%2f,http://b").is_err());
    }

    #[test]
    fn a_malformed_secret_is_not_quoted_in_the_error() {
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            connections: Connections,
            #[command(flatten)]
            keys: CredentialKeys,
        }
        let refused = |args: &[&str]| {
            let command = <Cli as clap::CommandFactory>::command();
            let error = command
                .clone()
                .try_get_matches_from(args)
                .expect_err("refused");
            without_secret(&error, &command)
        };
        let bad_port = refused(&["x", "--database-url", "postgres://herald:hunter2@db:port/h"]);
        assert!(!bad_port.contains("hunter2"), "{bad_port}");
        assert!(
            bad_port.contains("--database-url") && bad_port.contains("not a PostgreSQL URL"),
            "{bad_port}"
        );
        let url = "postgres://herald:pw@db/h";
        let bad_key = refused(&[
            "x",
            "--database-url",
            url,
            "--credentials-key",
            "s3cr3t-k3y",
        ]);
        assert!(!bad_key.contains("s3cr3t-k3y"), "{bad_key}");
        assert!(bad_key.contains("--credentials-key"), "{bad_key}");
        // Other values are quoted, as clap does.
        let pool = refused(&["x", "--database-url", url, "--db-pool-size", "lots"]);
        assert!(pool.contains("lots"), "{pool}");
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let db =
            parse_database_url("postgres://herald:hunter2@db:5432/herald?sslmode=require").unwrap();
        let amqp =
            parse_amqp_url("amqps://u:s3cret@a:5671/%2f,amqps://u:s3cret@b:5671/%2f").unwrap();
        let shown = format!("{db:?} {amqp:?} {}", amqp.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("postgres://herald:***@db:5432/herald?sslmode=require"));
        assert!(shown.contains("amqps://u:***@b:5671/%2f"));
        assert_eq!(
            db.expose(),
            "postgres://herald:hunter2@db:5432/herald?sslmode=require"
        );
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        assert!(parse_ca_file("/nonexistent/ca.pem").is_err());
        let path = std::env::temp_dir().join(format!("herald-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(parse_ca_file(path.to_str().unwrap()).is_err());
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(parse_ca_file(path.to_str().unwrap()).is_ok());
        let _ = std::fs::remove_file(path);
    }
}
