//! The store's write-ahead log: each group commit appends its changed
//! records here, framed and checksummed, and syncs the file once; the
//! database takes them later in one large transaction (a *fold*). One
//! append and one `fdatasync` per group cost far less than a B-tree
//! transaction that copies a page for every random ring key it touches,
//! and folding many groups at once touches each page once.
//!
//! A frame is the payload's length (u32, big-endian), its CRC-32 (u32,
//! big-endian), then the payload: a tag (0: the record was deleted, 1: it
//! holds a value), the database key's length (u16) and bytes, and the
//! value's bytes. Reading stops at the first frame that is cut short or
//! fails its checksum: that is the tail of an append a crash interrupted,
//! whose group was never acknowledged, and it is cut off.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The log file in the data directory.
pub const FILE: &str = "store.log";

const HEADER: usize = 8;
const TAG_DELETE: u8 = 0;
const TAG_PUT: u8 = 1;

/// One record's new state: its database key, and its value (`None`: deleted).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// The open log, positioned at its end.
pub struct Log {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir`: the records it holds, in the
    /// order written, and the log ready to append after them.
    pub fn open(dir: &Path) -> io::Result<(Log, Vec<Record>)> {
        let path = dir.join(FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if created {
            // The new file's name must survive a crash too.
            File::open(dir)?.sync_all()?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, good) = parse(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped = bytes.len() - good,
                "cutting off a torn tail of the store log (an append a crash interrupted)"
            );
            file.set_len(good as u64)?;
            file.sync_data()?;
        }
        let len = good as u64;
        Ok((Log { file, path, len }, records))
    }

    /// Appends the records and syncs: durable when this returns.
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for (key, value) in records {
            frame(&mut buf, key, value.as_deref());
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Empties the log (once the database holds everything in it).
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the log is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Appends one record's frame to `buf`. A key is at most a ring key and a
/// name, far below the u16 bound; a longer one is cut there (and then
/// fails to decode as an item, which the reader drops).
fn frame(buf: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let key = &key[..usize::from(key_len)];
    let mut payload = Vec::with_capacity(3 + key.len() + value.map_or(0, <[u8]>::len));
    payload.push(if value.is_some() { TAG_PUT } else { TAG_DELETE });
    payload.extend_from_slice(&key_len.to_be_bytes());
    payload.extend_from_slice(key);
    if let Some(value) = value {
        payload.extend_from_slice(value);
    }
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    buf.extend_from_slice(&payload);
}

/// The records of a log's bytes and how many bytes they span (the rest is
/// a torn tail).
fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, used)) = parse_one(&bytes[at..]) {
        records.push(record);
        at += used;
    }
    (records, at)
}

fn parse_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let (crc, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    let payload = rest.get(..len)?;
    if crc32fast::hash(payload) != u32::from_be_bytes(*crc) {
        return None;
    }
    let (&tag, rest) = payload.split_first()?;
    let (key_len, rest) = rest.split_first_chunk::<2>()?;
    let key_len = usize::from(u16::from_be_bytes(*key_len));
    let key = rest.get(..key_len)?.to_vec();
    let value = &rest[key_len..];
    let value = match tag {
        TAG_PUT => Some(value.to_vec()),
        TAG_DELETE if value.is_empty() => None,
        _ => return None,
    };
    Some(((key, value), HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2psip-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    fn put(key: &str, value: &str) -> Record {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    #[test]
    fn records_come_back_in_order_after_reopening_and_clear_empties() {
        let dir = scratch("order");
        {
            let (mut log, none) = Log::open(&dir).expect("open");
            assert!(none.is_empty());
            log.append(&[put("a", "1"), put("b", "2")]).expect("append");
            log.append(&[(b"a".to_vec(), None)]).expect("append");
            assert!(!log.is_empty());
        }
        let (mut log, records) = Log::open(&dir).expect("reopen");
        assert_eq!(
            records,
            vec![put("a", "1"), put("b", "2"), (b"a".to_vec(), None)]
        );
        log.clear().expect("clear");
        drop(log);
        let (log, records) = Log::open(&dir).expect("reopen");
        assert!(records.is_empty());
        assert!(log.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_or_corrupted_tail_is_cut_off_and_appends_go_on_after_the_good_part() {
        let dir = scratch("torn");
        {
            let (mut log, _) = Log::open(&dir).expect("open");
            log.append(&[put("kept", "yes")]).expect("append");
            log.append(&[put("torn", "no")]).expect("append");
        }
        let path = dir.join(FILE);
        let full = std::fs::read(&path).expect("read");
        // A crash in the middle of the second append.
        std::fs::write(&path, &full[..full.len() - 3]).expect("write");
        {
            let (mut log, records) = Log::open(&dir).expect("reopen");
            assert_eq!(records, vec![put("kept", "yes")]);
            log.append(&[put("after", "ok")]).expect("append");
        }
        let (_, records) = Log::open(&dir).expect("reopen");
        assert_eq!(records, vec![put("kept", "yes"), put("after", "ok")]);
        // A flipped byte in the last frame: its checksum fails, it is dropped.
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&path, &bytes).expect("write");
        let (_, records) = Log::open(&dir).expect("reopen");
        assert_eq!(records, vec![put("kept", "yes")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_is_no_record() {
        assert_eq!(parse(b"").0.len(), 0);
        assert_eq!(parse(&[0xff; 64]), (Vec::new(), 0));
        // A delete that carries a value is not one this log wrote.
        let mut buf = Vec::new();
        frame(&mut buf, b"k", None);
        let mut payload = buf[HEADER..].to_vec();
        payload.push(7);
        let mut bad = Vec::new();
        bad.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bad.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
        bad.extend_from_slice(&payload);
        assert_eq!(parse(&bad), (Vec::new(), 0));
    }
}
