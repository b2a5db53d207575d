//! The subcommands: their arguments (clap) and what each does with the client.

pub mod campaign;
pub mod contact;
pub mod key;
pub mod message;
pub mod probe;
pub mod provider;
pub mod segment;
pub mod suppression;
pub mod tenant;

use std::io::{self, Write};
use std::path::Path;

use indicatif::ProgressBar;
use reqwest::Body;
use serde::de::DeserializeOwned;

use crate::client::{ApiError, Client, PageAt, Reply};
use crate::model::Page;
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
    /// `progress --watch`: `--timeout` passed first, or `--exit-status` and not every
    /// recipient was sent.
    #[error("{0}")]
    NotDone(String),
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

/// `--idempotency-key`: sent as a header, so printable ASCII (the admin's rule) rather
/// than a request that cannot be built, reported as an unreachable server.
pub fn parse_idempotency_key(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        Ok(text.to_owned())
    } else {
        Err("expected printable ASCII".to_owned())
    }
}

/// Writes to stdout without `println!`'s panic when the reader has gone (`| head`).
/// What tenants wrote is shown, never run by the terminal (`output::terminal_safe`).
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(output::terminal_safe(text).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Where a listing starts and how far it goes; every list command takes these.
#[derive(Debug, Clone, clap::Args)]
pub struct PageArgs {
    /// Items per page
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Start where a previous page ended (it printed `more: --cursor …`)
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    pub cursor: Option<String>,
    /// Follow the pages to the end and print them as one list
    #[arg(long)]
    pub all: bool,
}

/// Prints one page (and, on stderr, how to ask for the next), or with `--all` every page as
/// one list (`--json`: one `{items, next_cursor: null}` object).
pub async fn show_pages<T: DeserializeOwned>(
    ctx: &Ctx,
    args: PageArgs,
    mut fetch: impl AsyncFnMut(&PageAt) -> Result<Reply<Page<T>>, ApiError>,
    render: impl Fn(&[T]) -> String,
) -> Result<(), CliError> {
    let mut at = PageAt {
        cursor: args.cursor,
        limit: args.limit,
    };
    if !args.all {
        let reply = fetch(&at).await?;
        ctx.show(&reply, |page| render(&page.items))?;
        if !ctx.json
            && let Some(next) = reply.parse()?.next_cursor
        {
            note(&format!("more: --cursor {next}"));
        }
        return Ok(());
    }
    let (mut items, mut raw) = (Vec::new(), Vec::new());
    loop {
        let reply = fetch(&at).await?;
        let page = reply.parse()?;
        if let Some(list) = reply.raw()["items"].as_array() {
            raw.extend(list.iter().cloned());
        }
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => at.cursor = Some(next),
            None => break,
        }
    }
    let text = if ctx.json {
        output::pretty_json(&serde_json::json!({ "items": raw, "next_cursor": null }))
    } else {
        render(&items)
    };
    write_stdout(&text)
}

/// A remark for the person at the terminal, kept off stdout so pipes see only the result.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{}", output::terminal_safe(text));
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
