//! `outpost export CHANNEL DIR`: has the edge write the channel's files as
//! a plain read-only tree at DIR (for a Samba share), and says how.

use std::path::Path;

use anyhow::Context;
use http::Method;
use outpost_protocol::ExportStatus;

use super::text::{human, print_json, query_value};
use super::{Endpoint, Target};

pub fn export(target: &Target, channel: &str, dir: &Path) -> anyhow::Result<()> {
    // The edge resolves nothing against its own working directory.
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let path = format!(
        "/channels/export?name={}&dir={}",
        query_value(channel),
        query_value(&dir.to_string_lossy())
    );
    let status: ExportStatus = Endpoint::resolve(target)?.call(Method::POST, &path)?;
    if target.json {
        return print_json(&status);
    }
    print_export(&status);
    Ok(())
}

pub(super) fn print_export(status: &ExportStatus) {
    let how = match (status.linked, status.copied) {
        (_, 0) => "hard links into the store".to_string(),
        (0, _) => "copies (another file system than the cache)".to_string(),
        (l, c) => format!("{l} hard links, {c} copies"),
    };
    println!(
        "{}: {} files, {} ({how})",
        status.dir,
        status.files,
        human(status.bytes)
    );
    for skipped in &status.skipped {
        println!("  skipped {skipped}");
    }
    if let Some(error) = &status.error {
        println!("  FAILED {error}");
    }
}
