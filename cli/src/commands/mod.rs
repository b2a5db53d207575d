//! The subcommands: their arguments (clap) and what each does with the client.

pub mod campaign;
pub mod contact;
pub mod key;
pub mod probe;
pub mod provider;
pub mod segment;
pub mod tenant;

use std::io::{self, Write};
use std::path::Path;

use indicatif::ProgressBar;
use reqwest::Body;
use serde::de::DeserializeOwned;

use crate::client::{ApiError, Client, Reply};
use crate::output;
use crate::upload::{self, Format};

/// Why a command failed; `main` turns it into a message and an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A bad argument or local input that clap could not check (a file that does not open,
    /// credentials that are not JSON): the user's to fix, like a usage error.
    #[error("{0}")]
    Input(String),
    /// `herald probe`: the service is not healthy (or not there).
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    /// Ctrl-C during `--watch`.
    #[error("interrupted")]
    Interrupted,
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// What every command needs.
pub struct Ctx {
    pub client: Client,
    /// Print the API's JSON instead of the human rendering.
    pub json: bool,
}

impl Ctx {
    /// Prints `reply` as pretty JSON (`--json`) or through `render`.
    pub fn show<T: DeserializeOwned>(
        &self,
        reply: &Reply<T>,
        render: impl FnOnce(&T) -> String,
    ) -> Result<(), CliError> {
        let text = if self.json {
            output::pretty_json(reply.raw())
        } else {
            render(&reply.parse()?)
        };
        write_stdout(&text)
    }
}

/// Writes to stdout without `println!`'s panic when the reader has gone (`| head`).
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A remark for the person at the terminal, kept off stdout so pipes see only the result.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// An upload body for `file` (`-` for stdin) with its format and the bar counting its bytes.
pub struct Upload {
    pub body: Body,
    pub format: Format,
    pub bar: ProgressBar,
}

pub async fn open_upload(file: &Path, format: Option<Format>) -> Result<Upload, CliError> {
    let format = upload::resolve_format(file, format).map_err(CliError::Input)?;
    if upload::is_stdin(file) {
        let bar = upload::byte_bar(None);
        let body = upload::streamed_body(tokio::io::stdin(), bar.clone());
        return Ok(Upload { body, format, bar });
    }
    let cannot = |e: io::Error| CliError::Input(format!("cannot read {}: {e}", file.display()));
    let handle = tokio::fs::File::open(file).await.map_err(cannot)?;
    let meta = handle.metadata().await.map_err(cannot)?;
    if meta.is_dir() {
        return Err(CliError::Input(format!(
            "{} is a directory",
            file.display()
        )));
    }
    // Pipes (`<(zcat audience.csv.gz)`) have no size: they get a byte counter, not a bar.
    let size = meta.is_file().then_some(meta.len());
    let bar = upload::byte_bar(size);
    let body = upload::streamed_body(handle, bar.clone());
    Ok(Upload { body, format, bar })
}
