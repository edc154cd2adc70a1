//! VERIFY and LOAD (see [`crate::snapshot`]): read-only, sequential, bounded memory.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, ENTRY_HEAD_BYTES, FOOTER_BYTES, Footer, HEADER_FIXED_BYTES, Header};
use super::{READ_BUFFER_BYTES, SnapshotInfo};
use crate::raft::{Index, Term};
use crate::{Error, Result};

fn corruption(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::Corruption {
        file: path.to_path_buf(),
        offset,
        index_range: None,
        detail: detail.into(),
    }
}

/// Where the parts of a snapshot file are, after header and footer checked out.
struct Layout {
    header: Header,
    header_bytes: u64,
    footer: Footer,
    file_bytes: u64,
}

impl Layout {
    fn info(&self, path: &Path) -> SnapshotInfo {
        SnapshotInfo {
            meta: self.header.meta.clone(),
            path: path.to_path_buf(),
            file_bytes: self.file_bytes,
            key_count: self.header.key_count,
        }
    }
}

fn read_at(file: &File, path: &Path, buffer: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buffer, offset)
        .map_err(|error| Error::io("read", path, error))
}

/// Opens `path` and checks its header, footer, length and name (not the body CRC).
fn open_checked(path: &Path) -> Result<(File, Layout)> {
    let file = File::open(path).map_err(|error| Error::io("open", path, error))?;
    let file_bytes = file
        .metadata()
        .map_err(|error| Error::io("stat", path, error))?
        .len();
    let smallest = (HEADER_FIXED_BYTES + FOOTER_BYTES) as u64;
    if file_bytes < smallest {
        return Err(corruption(
            path,
            file_bytes,
            format!(
                "file of {file_bytes} bytes is shorter than the smallest snapshot ({smallest}): truncated"
            ),
        ));
    }
    let (header, header_bytes) = read_header(&file, path, file_bytes)?;
    let footer_offset = file_bytes - FOOTER_BYTES as u64;
    let mut footer = [0u8; FOOTER_BYTES];
    read_at(&file, path, &mut footer, footer_offset)?;
    let footer =
        Footer::decode(&footer).map_err(|detail| corruption(path, footer_offset, detail))?;
    let expected = header_bytes + footer.body_bytes + FOOTER_BYTES as u64;
    if expected != file_bytes {
        return Err(corruption(
            path,
            footer_offset,
            format!(
                "file is {file_bytes} bytes but header and footer describe {expected}: truncated or extended"
            ),
        ));
    }
    check_name(path, &header)?;
    let layout = Layout {
        header,
        header_bytes,
        footer,
        file_bytes,
    };
    Ok((file, layout))
}

fn read_header(file: &File, path: &Path, file_bytes: u64) -> Result<(Header, u64)> {
    let mut fixed = [0u8; HEADER_FIXED_BYTES];
    read_at(file, path, &mut fixed, 0)?;
    let header_bytes =
        format::header_bytes(&fixed).map_err(|detail| corruption(path, 0, detail))?;
    if header_bytes as u64 + FOOTER_BYTES as u64 > file_bytes {
        return Err(corruption(
            path,
            0,
            format!("header of {header_bytes} bytes does not fit in a file of {file_bytes} bytes"),
        ));
    }
    let mut bytes = vec![0u8; header_bytes];
    read_at(file, path, &mut bytes, 0)?;
    let header = format::decode_header(&bytes).map_err(|detail| corruption(path, 0, detail))?;
    Ok((header, header_bytes as u64))
}

/// A file named like a snapshot must hold the snapshot its name says.
fn check_name(path: &Path, header: &Header) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match format::parse_snapshot_file_name(&name) {
        Some((index, term)) if (index, term) != (header.meta.index, header.meta.term) => {
            Err(corruption(
                path,
                16,
                format!(
                    "name says index {index} term {term}, header says index {} term {}",
                    header.meta.index, header.meta.term
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Fully verifies one snapshot file: header CRC, footer CRC, length, name and body CRC.
pub fn verify(path: &Path) -> Result<SnapshotInfo> {
    let (file, layout) = open_checked(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES.min(layout.footer.body_bytes as usize)];
    let mut offset = layout.header_bytes;
    let end = layout.header_bytes + layout.footer.body_bytes;
    while offset < end {
        let piece = &mut buffer[..(end - offset).min(READ_BUFFER_BYTES as u64) as usize];
        read_at(&file, path, piece, offset)?;
        hasher.update(piece);
        offset += piece.len() as u64;
    }
    check_body_crc(path, &layout, hasher.finalize())?;
    Ok(layout.info(path))
}

fn check_body_crc(path: &Path, layout: &Layout, computed: u32) -> Result<()> {
    let stored = layout.footer.body_crc;
    if stored == computed {
        return Ok(());
    }
    Err(corruption(
        path,
        layout.header_bytes,
        format!(
            "body CRC mismatch over bytes {}..{} (snapshot index {}): stored {stored:#010x}, computed {computed:#010x}",
            layout.header_bytes,
            layout.header_bytes + layout.footer.body_bytes,
            layout.header.meta.index
        ),
    ))
}

/// Every snapshot file in `dir`, newest (highest index, then term) first, each fully
/// verified. Read-only; a missing directory holds no snapshots. A file gone between the
/// listing and its read (a live node pruned an old snapshot: kvinspect takes no lock) is
/// left out, not reported as damaged.
pub fn list_dir(dir: &Path) -> Result<Vec<Result<SnapshotInfo>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io("list", dir, error)),
    };
    let mut snapshots: Vec<(Index, Term, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("list", dir, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((index, term)) = format::parse_snapshot_file_name(&name) {
            snapshots.push((index, term, entry.path()));
        }
    }
    snapshots.sort_by(|a, b| b.cmp(a));
    Ok(snapshots
        .into_iter()
        .filter_map(|(_, _, path)| match verify(&path) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && std::fs::symlink_metadata(&path).is_err() =>
            {
                None
            }
            verified => Some(verified),
        })
        .collect())
}

/// A reader that feeds every byte it reads into a CRC.
struct Hashing<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// LOAD: streams the entries of `path` to `on_entry`, verifying as it goes.
pub fn load(
    path: &Path,
    mut on_entry: impl FnMut(String, Vec<u8>, u64) -> Result<()>,
) -> Result<SnapshotInfo> {
    let (mut file, layout) = open_checked(path)?;
    file.seek(SeekFrom::Start(layout.header_bytes))
        .map_err(|error| Error::io("seek", path, error))?;
    let hashing = Hashing {
        inner: file.take(layout.footer.body_bytes),
        hasher: crc32fast::Hasher::new(),
    };
    let mut body = BodyReader {
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, hashing),
        path,
        offset: layout.header_bytes,
        end: layout.header_bytes + layout.footer.body_bytes,
    };
    let mut previous = String::new();
    for position in 0..layout.header.key_count {
        let (key, value, revision) = body.next_entry()?;
        if position > 0 && key.as_str() <= previous.as_str() {
            return Err(body.damaged(format!("key {key:?} is not after {previous:?}")));
        }
        previous.clear();
        previous.push_str(&key);
        on_entry(key, value, revision)?;
    }
    if body.offset != body.end {
        let trailing = body.end - body.offset;
        return Err(body.damaged(format!(
            "{trailing} bytes after the last of {} entries",
            layout.header.key_count
        )));
    }
    let computed = body.reader.into_inner().hasher.finalize();
    check_body_crc(path, &layout, computed)?;
    Ok(layout.info(path))
}

/// Decodes entries from the buffered, hashing body reader, tracking the file offset.
struct BodyReader<'p, R> {
    reader: BufReader<Hashing<R>>,
    path: &'p Path,
    offset: u64,
    end: u64,
}

impl<R: Read> BodyReader<'_, R> {
    fn damaged(&self, detail: String) -> Error {
        corruption(self.path, self.offset, detail)
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<()> {
        self.reader
            .read_exact(buffer)
            .map_err(|error| Error::io("read", self.path, error))
    }

    fn next_entry(&mut self) -> Result<(String, Vec<u8>, u64)> {
        let remaining = self.end - self.offset;
        if remaining < ENTRY_HEAD_BYTES as u64 {
            return Err(self.damaged(format!(
                "body ends ({remaining} bytes left) before all key_count entries"
            )));
        }
        let mut head = [0u8; ENTRY_HEAD_BYTES];
        self.read_exact(&mut head)?;
        let entry = format::decode_entry_head(&head, remaining - ENTRY_HEAD_BYTES as u64)
            .map_err(|detail| self.damaged(detail))?;
        let mut key = vec![0u8; entry.key_bytes];
        self.read_exact(&mut key)?;
        let mut value = vec![0u8; entry.value_bytes];
        self.read_exact(&mut value)?;
        let key =
            String::from_utf8(key).map_err(|_| self.damaged("key is not UTF-8".to_string()))?;
        self.offset += entry.entry_bytes();
        Ok((key, value, entry.revision))
    }
}
