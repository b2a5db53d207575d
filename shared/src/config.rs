//! Configuration common to every Herald service.
//!
//! Each binary describes its settings as a clap `Parser` whose fields also read `HERALD_*`
//! environment variables; clap does the typing, defaults, validation and `--help`.
//! [`parse`] wraps it so that a bad or missing value names the environment variable too,
//! and exits non-zero without a panic.

use clap::Parser;

/// Connection settings every service needs.
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// PostgreSQL URL, with an explicit user, e.g. postgres://herald:herald@127.0.0.1:5432/herald
    #[arg(long, env = "HERALD_DATABASE_URL", value_parser = parse_database_url)]
    pub database_url: String,

    /// RabbitMQ URL; the path is the vhost (`%2f` for the default one). A cluster: the URL
    /// of each node, separated by commas (a connection goes to the first that answers,
    /// starting from a different one in each process).
    #[arg(
        long,
        env = "HERALD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = parse_amqp_url
    )]
    pub amqp_url: String,

    /// Maximum PostgreSQL connections in this process's pool.
    #[arg(long, env = "HERALD_DB_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub db_pool_size: u32,
}

fn parse_database_url(value: &str) -> Result<String, String> {
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err("must start with postgres:// or postgresql://".into());
    }
    let rest = value.split_once("://").map_or("", |(_, r)| r);
    if !rest.contains('@') {
        return Err("must name the user explicitly (postgres://USER:PASSWORD@HOST/DB)".into());
    }
    Ok(value.to_owned())
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

fn parse_amqp_url(value: &str) -> Result<String, String> {
    for node in value.split(',').map(str::trim) {
        if !(node.starts_with("amqp://") || node.starts_with("amqps://")) {
            return Err("each URL must start with amqp:// (or amqps://)".into());
        }
    }
    Ok(value.to_owned())
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
            let mut message = error.render().to_string();
            if explain {
                let hints: Vec<String> = command
                    .get_arguments()
                    .filter_map(|arg| {
                        let env = arg.get_env()?.to_string_lossy().into_owned();
                        let long = arg.get_long()?;
                        message
                            .contains(&format!("--{long}"))
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
}
