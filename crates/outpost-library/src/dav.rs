//! The read-only WebDAV file system dav-server lists: folders and files of
//! a copy of the library view, taken for one request. It shows only files
//! a client can open (present in the store): a share that lists a syncing
//! or quarantined file would fail the copy Explorer starts from it; the
//! pages and JSON show every state. It answers metadata
//! and directory listings only; opening a file is refused (downloads go
//! through the engine, see `lib.rs`), as is every change.

use std::future::{self, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use outpost_channel::{FileState, LibraryChannel, LibraryEntry, LibraryFolder, LibraryNode};

use crate::browse::escape;

/// What one request can see: the channels (at `/`), or one channel.
#[derive(Debug)]
pub enum Snapshot {
    Root(Vec<LibraryFolder>),
    Channel(LibraryChannel),
}

#[derive(Debug, Clone)]
pub struct ViewFs {
    snapshot: Arc<Snapshot>,
}

impl ViewFs {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot: Arc::new(snapshot),
        }
    }

    /// The path's metadata, and for a folder its entries.
    fn resolve(&self, path: &DavPath) -> FsResult<(Meta, Vec<(String, Meta)>)> {
        let text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
        let segments: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        match (&*self.snapshot, segments.as_slice()) {
            (Snapshot::Root(channels), []) => {
                let newest = channels.iter().filter_map(|c| c.modified).max();
                let entries = channels
                    .iter()
                    .map(|c| (c.name.clone(), Meta::folder(c.modified)))
                    .collect();
                Ok((Meta::folder(newest), entries))
            }
            (Snapshot::Channel(channel), [name, rel @ ..]) if *name == channel.name => {
                let rel: Vec<String> = rel.iter().map(|s| s.to_string()).collect();
                match channel.lookup(&rel).ok_or(FsError::NotFound)? {
                    LibraryNode::File(file) if file.state != FileState::Present => {
                        Err(FsError::NotFound)
                    }
                    LibraryNode::File(file) => Ok((
                        Meta::file(file.len, file.modified, file.etag.as_deref()),
                        Vec::new(),
                    )),
                    LibraryNode::Folder(entries) => {
                        let mut newest = None;
                        let list = entries
                            .iter()
                            .filter(|e| match e {
                                LibraryEntry::File(f) => f.state == FileState::Present,
                                LibraryEntry::Folder(_) => true,
                            })
                            .map(|e| match e {
                                LibraryEntry::Folder(f) => {
                                    newest = newest.max(f.modified);
                                    (f.name.clone(), Meta::folder(f.modified))
                                }
                                LibraryEntry::File(f) => {
                                    newest = newest.max(f.modified);
                                    (
                                        f.name().to_string(),
                                        Meta::file(f.len, f.modified, f.etag.as_deref()),
                                    )
                                }
                            })
                            .collect();
                        Ok((Meta::folder(newest), list))
                    }
                }
            }
            _ => Err(FsError::NotFound),
        }
    }
}

#[derive(Debug, Clone)]
struct Meta {
    dir: bool,
    len: u64,
    modified: SystemTime,
    etag: Option<String>,
}

impl Meta {
    fn folder(modified: Option<SystemTime>) -> Self {
        Self {
            dir: true,
            len: 0,
            modified: modified.unwrap_or(UNIX_EPOCH),
            etag: None,
        }
    }

    fn file(len: Option<u64>, modified: Option<SystemTime>, etag: Option<&str>) -> Self {
        // The origin's validator, so that a client comparing PROPFIND's
        // getetag with a download's ETag sees one file.
        let etag = etag.map(|t| t.trim_start_matches("W/").trim_matches('"').to_string());
        Self {
            dir: false,
            len: len.unwrap_or(0),
            modified: modified.unwrap_or(UNIX_EPOCH),
            etag,
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }

    fn is_dir(&self) -> bool {
        self.dir
    }

    fn etag(&self) -> Option<String> {
        if let Some(tag) = &self.etag {
            return Some(tag.clone());
        }
        let t = self.modified.duration_since(UNIX_EPOCH).ok()?;
        Some(format!("{:x}-{:x}", self.len, t.as_secs()))
    }

    // The store keeps no creation or access time; Windows shows these
    // columns, and the modified time is the honest stand-in.
    fn created(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }

    fn accessed(&self) -> FsResult<SystemTime> {
        Ok(self.modified)
    }
}

struct Entry {
    name: String,
    meta: Meta,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }

    fn metadata(&'_ self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        Box::pin(future::ready(Ok(
            Box::new(self.meta.clone()) as Box<dyn DavMetaData>
        )))
    }
}

fn displayname(path: &DavPath) -> Option<DavProp> {
    let text = std::str::from_utf8(path.as_bytes()).ok()?;
    let name = text.split('/').rfind(|s| !s.is_empty()).unwrap_or("");
    Some(DavProp::new(
        "displayname".into(),
        "D".into(),
        "DAV:".into(),
        escape(name),
    ))
}

impl DavFileSystem for ViewFs {
    fn open<'a>(
        &'a self,
        _path: &'a DavPath,
        _options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        // GET never reaches dav-server (the library answers it from the
        // store) and writes are refused before it: nothing opens a file.
        Box::pin(future::ready(Err(FsError::Forbidden)))
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        let result = self.resolve(path).and_then(|(meta, entries)| {
            if !meta.dir {
                return Err(FsError::Forbidden);
            }
            let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = entries
                .into_iter()
                .map(|(name, meta)| Ok(Box::new(Entry { name, meta }) as Box<dyn DavDirEntry>))
                .collect();
            Ok(Box::pin(futures_util::stream::iter(entries)) as FsStream<Box<dyn DavDirEntry>>)
        });
        Box::pin(future::ready(result))
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        let result = self
            .resolve(path)
            .map(|(meta, _)| Box::new(meta) as Box<dyn DavMetaData>);
        Box::pin(future::ready(result))
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(future::ready(true))
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, _do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        Box::pin(future::ready(Ok(displayname(path).into_iter().collect())))
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        let found = (prop.name == "displayname" && prop.namespace.as_deref() == Some("DAV:"))
            .then(|| displayname(path))
            .flatten()
            .and_then(|p| p.xml);
        Box::pin(future::ready(found.ok_or(FsError::NotFound)))
    }
}
