//! `kvinspect DATA_DIR [summary|segments|entries|snapshots|verify]`: an offline, read-only
//! look at a kvstore data directory. It never repairs anything and never takes the directory lock,
//! so it is safe to run next to a live node (it then sees a moment of a moving log).
//!
//! Exit status: 0 = fine, 1 = damage found (`verify`: a torn tail or corruption in the
//! WAL, or a snapshot failing its checks),
//! 2 = usage error, 3 = the directory could not be read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvstore::datadir::{DataDir, SNAPSHOT_DIR, WAL_DIR};
use kvstore::raft::{Entry, Index};
use kvstore::snapshot::{self, SnapshotInfo, format::parse_snapshot_file_name};
use kvstore::store::{Command as StoreCommand, Condition};
use kvstore::wal::{self, Options, VerifyReport, Wal};

/// How many entries `entries` prints when `--to` is not given: enough to look around,
/// bounded so a multi-million-entry log does not flood the terminal.
const ENTRIES_DEFAULT_COUNT_MAX: u64 = 1000;
/// Characters of a command shown in the text preview.
const PREVIEW_CHARS_MAX: usize = 60;

/// Offline, read-only inspection of a kvstore data directory.
#[derive(Parser)]
#[command(name = "kvinspect", version)]
struct Cli {
    /// The node's data directory (the one given to kvnode --data).
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Node id, cluster, hard state, log range and segments (the default).
    Summary,
    /// Segment files with sequence, first index, index range and size.
    Segments,
    /// Decoded log entries.
    Entries {
        /// First index (default: the log's first index).
        #[arg(long)]
        from: Option<Index>,
        /// Last index (default: `from` + 999, or the last index).
        #[arg(long)]
        to: Option<Index>,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Snapshot files, newest first: index, term, size, key count, CRC check.
    Snapshots {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every WAL header and record CRC and every snapshot; exit status 1 on damage.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let wal_dir = cli.data_dir.join(WAL_DIR);
    let snapshot_dir = cli.data_dir.join(SNAPSHOT_DIR);
    let result = match cli.command.unwrap_or(Command::Summary) {
        Command::Summary => summary(&cli.data_dir, &wal_dir, &snapshot_dir),
        Command::Segments => segments(&wal_dir),
        Command::Entries { from, to, json } => entries(&wal_dir, from, to, json),
        Command::Snapshots { json } => snapshots(&snapshot_dir, json),
        Command::Verify => verify(&wal_dir, &snapshot_dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kvinspect: {error}");
            ExitCode::from(3)
        }
    }
}

fn summary(data_dir: &Path, wal_dir: &Path, snapshot_dir: &Path) -> kvstore::Result<ExitCode> {
    let identity = DataDir::inspect(data_dir)?;
    println!("data dir:    {}", data_dir.display());
    println!("node id:     {}", identity.node_id);
    println!("cluster id:  {}", identity.cluster_id);
    println!("voters:      {}", identity.voters.join(", "));
    let report = wal::verify(wal_dir)?;
    match &report.hard_state {
        Some(state) => println!(
            "hard state:  term {} vote {} commit {}",
            state.term,
            state.vote.as_deref().unwrap_or("-"),
            state.commit
        ),
        None => println!("hard state:  unknown (corruption stops replay; see below)"),
    }
    if let Some((index, term)) = report.base {
        println!("base:        index {index} term {term} (covered by a snapshot)");
    }
    if let Some((first, last)) = report.index_range {
        println!(
            "log:         first index {first}, last index {last} ({} entries)",
            (last + 1).saturating_sub(first)
        );
    }
    let total_bytes: u64 = report.segments.iter().map(|segment| segment.bytes).sum();
    println!(
        "segments:    {} ({total_bytes} bytes)",
        report.segments.len()
    );
    print_segments(&report);
    print_damage(&report);
    let listed = snapshot::list_dir(snapshot_dir)?;
    let valid = listed.iter().filter(|listed| listed.is_ok()).count();
    println!("snapshots:   {} ({valid} valid)", listed.len());
    print_snapshots(&listed);
    Ok(ExitCode::SUCCESS)
}

fn segments(wal_dir: &Path) -> kvstore::Result<ExitCode> {
    let report = wal::verify(wal_dir)?;
    print_segments(&report);
    print_damage(&report);
    Ok(ExitCode::SUCCESS)
}

/// One line per segment. The index range is the one written into the segment (a later
/// suffix truncation may have superseded its tail).
fn print_segments(report: &VerifyReport) {
    let last_index = report.index_range.map(|(_, last)| last);
    for (position, segment) in report.segments.iter().enumerate() {
        let end = match report.segments.get(position + 1) {
            Some(next) => Some(next.first_index.saturating_sub(1)),
            None => last_index,
        };
        let range = match end {
            Some(end) if end >= segment.first_index => format!("{}..={end}", segment.first_index),
            Some(_) => "(no entries)".to_string(),
            None => format!("{}..=?", segment.first_index),
        };
        let name = segment
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        println!(
            "  {name}  seq {:>4}  indexes {range:<24} {:>12} bytes",
            segment.sequence, segment.bytes
        );
    }
}

fn print_damage(report: &VerifyReport) {
    if let Some(torn) = &report.torn_tail {
        println!(
            "TORN TAIL:   {} at byte offset {} (log index {} on; {} bytes; {}); the next start saves these bytes aside and cuts them",
            torn.file.display(),
            torn.offset,
            torn.index,
            torn.bytes,
            torn.detail
        );
    }
    if let Some(damage) = &report.corruption {
        let indexes = match damage.index_range {
            Some((first, last)) => format!("log indexes {first}..={last}"),
            None => "log indexes unknown".to_string(),
        };
        println!(
            "CORRUPTION:  {} at byte offset {} ({indexes}): {}",
            damage.file.display(),
            damage.offset,
            damage.detail
        );
    }
}

fn verify(wal_dir: &Path, snapshot_dir: &Path) -> kvstore::Result<ExitCode> {
    let report = wal::verify(wal_dir)?;
    let listed = snapshot::list_dir(snapshot_dir)?;
    let snapshots_clean = listed.iter().all(|listed| listed.is_ok());
    if report.is_clean() && snapshots_clean {
        let range = report
            .index_range
            .map_or_else(String::new, |(first, last)| {
                format!(", indexes {first}..={last}")
            });
        println!(
            "ok: {} segments{range}, {} snapshots, every CRC valid",
            report.segments.len(),
            listed.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_damage(&report);
    for damaged in listed.iter().filter_map(|listed| listed.as_ref().err()) {
        println!("SNAPSHOT:    {damaged}");
    }
    Ok(ExitCode::from(1))
}

fn snapshots(snapshot_dir: &Path, json: bool) -> kvstore::Result<ExitCode> {
    let listed = snapshot::list_dir(snapshot_dir)?;
    if json {
        let rows: Vec<serde_json::Value> = listed.iter().map(snapshot_json).collect();
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|error| kvstore::Error::Decode(error.to_string()))?;
        println!("{text}");
    } else {
        print_snapshots(&listed);
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per snapshot file, newest first. A damaged one shows the index and term its
/// name claims, its size on disk, and what is wrong.
fn print_snapshots(listed: &[kvstore::Result<SnapshotInfo>]) {
    for row in listed.iter().map(snapshot_json) {
        let damage = match row["error"].as_str() {
            Some(error) => format!("DAMAGED: {error}"),
            None => "crc ok".to_string(),
        };
        println!(
            "  {}  index {:>10}  term {:>6}  {:>12} bytes  {:>10} keys  {damage}",
            row["file"].as_str().unwrap_or("?"),
            number(&row["index"]),
            number(&row["term"]),
            number(&row["bytes"]),
            number(&row["key_count"]),
        );
    }
}

/// A JSON number as text, `?` when unknown (null).
fn number(value: &serde_json::Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "?".to_string(), |number| number.to_string())
}

fn snapshot_json(listed: &kvstore::Result<SnapshotInfo>) -> serde_json::Value {
    match listed {
        Ok(info) => serde_json::json!({
            "file": file_name(&info.path),
            "index": info.meta.index,
            "term": info.meta.term,
            "voters": info.meta.voters,
            "bytes": info.file_bytes,
            "key_count": info.key_count,
            "crc_ok": true,
        }),
        Err(error) => {
            let (file, offset) = match error {
                kvstore::Error::Corruption { file, offset, .. } => (file.clone(), Some(*offset)),
                kvstore::Error::Io { path, .. } => (path.clone(), None),
                _ => (PathBuf::new(), None),
            };
            let name = file_name(&file);
            let (index, term) = parse_snapshot_file_name(&name).unzip();
            serde_json::json!({
                "file": name,
                "index": index,
                "term": term,
                "bytes": std::fs::metadata(&file).map(|meta| meta.len()).ok(),
                "key_count": null,
                "crc_ok": false,
                "offset": offset,
                "error": error.to_string(),
            })
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn entries(
    wal_dir: &Path,
    from: Option<Index>,
    to: Option<Index>,
    json: bool,
) -> kvstore::Result<ExitCode> {
    let options = Options {
        read_only: true,
        ..Options::default()
    };
    let (log, _) = Wal::open(wal_dir, options)?;
    let from = from.unwrap_or(log.first_index()).max(log.first_index());
    let to = to
        .unwrap_or(from.saturating_add(ENTRIES_DEFAULT_COUNT_MAX - 1))
        .min(log.last_index());
    let entries = log.entries(from, to)?;
    if json {
        let rows: Vec<serde_json::Value> = entries.iter().map(entry_json).collect();
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|error| kvstore::Error::Decode(error.to_string()))?;
        println!("{text}");
    } else {
        for entry in &entries {
            println!(
                "{:>10}  term {:>6}  {}",
                entry.index,
                entry.term,
                describe_command(&Decoded::of(&entry.command))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A log entry's command, decoded once as the store decodes it.
enum Decoded<'a> {
    /// The empty command of a new leader's no-op entry.
    Noop,
    /// A store command.
    Store(StoreCommand),
    /// Bytes that are no store command (the store skips them).
    Unknown(&'a [u8]),
}

impl Decoded<'_> {
    fn of(command: &[u8]) -> Decoded<'_> {
        if command.is_empty() {
            return Decoded::Noop;
        }
        StoreCommand::decode(command).map_or(Decoded::Unknown(command), Decoded::Store)
    }
}

/// An entry as JSON: index, term, the command's size and description, and, decoded as the
/// store decodes it, `op` (`noop`, `put`, `delete`, or `unknown` for bytes that are not a
/// store command), `key`, `value_bytes`, `value_utf8_lossy` and `condition`.
fn entry_json(entry: &Entry) -> serde_json::Value {
    let decoded = Decoded::of(&entry.command);
    let mut row = serde_json::json!({
        "index": entry.index,
        "term": entry.term,
        "command_bytes": entry.command.len(),
        "command": describe_command(&decoded),
    });
    let fields = match decoded {
        Decoded::Noop => serde_json::json!({ "op": "noop" }),
        Decoded::Store(StoreCommand::Put {
            key,
            value,
            condition,
        }) => serde_json::json!({
            "op": "put",
            "key": key,
            "value_bytes": value.len(),
            "value_utf8_lossy": String::from_utf8_lossy(&value),
            "condition": condition_json(condition),
        }),
        Decoded::Store(StoreCommand::Delete { key, condition }) => serde_json::json!({
            "op": "delete",
            "key": key,
            "condition": condition_json(condition),
        }),
        Decoded::Unknown(bytes) => serde_json::json!({
            "op": "unknown",
            "command_utf8_lossy": String::from_utf8_lossy(bytes),
        }),
    };
    if let (Some(row), serde_json::Value::Object(fields)) = (row.as_object_mut(), fields) {
        row.extend(fields);
    }
    row
}

fn condition_json(condition: Condition) -> serde_json::Value {
    match condition {
        Condition::None => serde_json::Value::Null,
        Condition::Revision(revision) => serde_json::json!({ "ifMatch": revision }),
        Condition::Present => serde_json::json!({ "ifMatch": "*" }),
        Condition::Absent => serde_json::json!({ "ifNoneMatch": "*" }),
    }
}

/// A readable one-line description of a log entry's command: `put "k" = 5 bytes "value"
/// if-match "7"`, `delete "k"`; bytes that are not a store command show as their length
/// and a lossy UTF-8 preview.
fn describe_command(decoded: &Decoded<'_>) -> String {
    match decoded {
        Decoded::Noop => "(empty: no-op entry)".to_string(),
        Decoded::Store(StoreCommand::Put {
            key,
            value,
            condition,
        }) => format!(
            "put {key:?} = {} bytes {:?}{}",
            value.len(),
            preview(value),
            describe_condition(*condition)
        ),
        Decoded::Store(StoreCommand::Delete { key, condition }) => {
            format!("delete {key:?}{}", describe_condition(*condition))
        }
        Decoded::Unknown(bytes) => format!(
            "{} bytes, not a store command: {:?}",
            bytes.len(),
            preview(bytes)
        ),
    }
}

fn describe_condition(condition: Condition) -> String {
    match condition {
        Condition::None => String::new(),
        Condition::Revision(revision) => format!(" if-match \"{revision}\""),
        Condition::Present => " if-match *".to_string(),
        Condition::Absent => " if-none-match *".to_string(),
    }
}

/// The first [`PREVIEW_CHARS_MAX`] characters of `bytes` as lossy UTF-8.
fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut preview: String = text.chars().take(PREVIEW_CHARS_MAX).collect();
    if text.chars().count() > PREVIEW_CHARS_MAX {
        preview.push_str("...");
    }
    preview
}
