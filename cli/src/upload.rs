//! Turning a file (or stdin) into a streamed upload body: its format and a byte-progress bar.

use std::path::Path;

use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Body;
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;

/// The upload formats the API reads (`admin/API.md`, "Audience upload").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header row with an `address` column; other columns are variables/attributes.
    Csv,
    /// One `{"address": …, "variables": {…}}` object per line.
    Ndjson,
    /// One array of those objects.
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::Ndjson => "application/x-ndjson",
            Self::Json => "application/json",
        }
    }

    /// The format a file name's extension implies, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// What `FILE` names: stdin (`-`) or a path.
pub fn is_stdin(file: &Path) -> bool {
    file.as_os_str() == "-"
}

/// `--format` when given, else the extension, else CSV for stdin.
pub fn resolve_format(file: &Path, explicit: Option<Format>) -> Result<Format, String> {
    if let Some(format) = explicit {
        return Ok(format);
    }
    if is_stdin(file) {
        return Ok(Format::Csv);
    }
    Format::from_path(file).ok_or_else(|| {
        format!(
            "cannot tell the format of {} from its extension (.csv, .ndjson, .jsonl, .json); pass --format",
            file.display()
        )
    })
}

/// Bigger than ReaderStream's 4 KiB default: fewer, larger chunks for million-row files.
const CHUNK: usize = 256 * 1024;

/// A request body that reads `reader` as it is sent, counting bytes on `bar`.
pub fn streamed_body<R>(reader: R, bar: ProgressBar) -> Body
where
    R: AsyncRead + Send + 'static,
{
    Body::wrap_stream(counted_chunks(reader, bar))
}

/// The chunks `ReaderStream` yields (`bytes::Bytes`), named without depending on `bytes`.
type Chunk<R> = <ReaderStream<R> as futures::TryStream>::Ok;

fn counted_chunks<R>(
    reader: R,
    bar: ProgressBar,
) -> impl futures::TryStream<Ok = Chunk<R>, Error = std::io::Error> + Send + 'static
where
    R: AsyncRead + Send + 'static,
{
    ReaderStream::with_capacity(reader, CHUNK).inspect_ok(move |chunk| {
        bar.inc(chunk.len() as u64);
        if bar.length().is_some_and(|len| bar.position() >= len) {
            // Validation and inserts happen as the server reads, but the answer only comes
            // after the last row: say why the bar sits full.
            bar.set_message("waiting for the server…");
        }
    })
}

/// A bar on stderr (hidden when stderr is not a terminal): bytes of `size`, or a spinner
/// with a byte count when the size is unknown (stdin).
pub fn byte_bar(size: Option<u64>) -> ProgressBar {
    let bar = match size {
        Some(size) => {
            let bar = ProgressBar::new(size);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} uploading {bytes} {binary_bytes_per_sec}")
            {
                bar.set_style(style);
            }
            bar
        }
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_follows_the_extension() {
        let of = |name: &str| Format::from_path(Path::new(name)).map(Format::content_type);
        assert_eq!(of("audience.csv"), Some("text/csv"));
        assert_eq!(of("AUDIENCE.CSV"), Some("text/csv"));
        assert_eq!(of("a.ndjson"), Some("application/x-ndjson"));
        assert_eq!(of("dir.v2/a.jsonl"), Some("application/x-ndjson"));
        assert_eq!(of("a.json"), Some("application/json"));
        assert_eq!(of("a.txt"), None);
        assert_eq!(of("csv"), None);
    }

    #[test]
    fn stdin_is_csv_unless_told_otherwise_and_format_overrides() {
        let stdin = Path::new("-");
        assert_eq!(resolve_format(stdin, None), Ok(Format::Csv));
        assert_eq!(
            resolve_format(stdin, Some(Format::Ndjson)),
            Ok(Format::Ndjson)
        );
        assert_eq!(
            resolve_format(Path::new("x.csv"), Some(Format::Json)),
            Ok(Format::Json)
        );
        let err = resolve_format(Path::new("people.txt"), None).unwrap_err();
        assert!(
            err.contains("people.txt") && err.contains("--format"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_body_streams_the_whole_reader_in_chunks() {
        let data = vec![b'x'; 3 * CHUNK + 17];
        let bar = ProgressBar::hidden();
        bar.set_length(data.len() as u64);
        let (read, chunks) = counted_chunks(std::io::Cursor::new(data.clone()), bar.clone())
            .try_fold((Vec::new(), 0), |(mut all, n), chunk| async move {
                all.extend_from_slice(&chunk);
                Ok((all, n + 1))
            })
            .await
            .unwrap();
        assert_eq!(read, data);
        assert!(chunks >= 4, "{chunks} chunks");
        assert_eq!(bar.position(), data.len() as u64);
        assert_eq!(bar.message(), "waiting for the server…");
    }
}
