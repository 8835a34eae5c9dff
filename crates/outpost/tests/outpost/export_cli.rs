//! `outpost export CHANNEL DIR` against a real `outpost serve`: the tree
//! appears at DIR (a relative DIR is the operator's, not the edge's),
//! `outpost channels` shows it, and a DIR in the cache is refused with a
//! reason.

use outpost_testkit::{Origin, Resource, content};

use crate::support::{EdgeProcess, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_export_writes_the_tree_and_channels_shows_it() {
    let origin = Origin::start().await;
    let body = content(300_000, 9);
    origin.put(
        "/pkgs/a.msi",
        Resource::new(body.clone()).no_cache_headers(),
    );
    origin.put(
        "/pkgs/",
        Resource::new(bytes::Bytes::from_static(
            b"<html><body><pre><a href=\"a.msi\">a.msi</a></pre></body></html>",
        ))
        .no_cache_headers()
        .header("content-type", "text/html"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[channel]]\nname = \"pkgs\"\nsource = \"{}\"\n",
        origin.url("/pkgs/")
    );
    let edge = EdgeProcess::in_dir(dir.path(), &origin, Some(&config));
    let out = edge.cli(&["sync", "pkgs"]);
    assert!(out.status.success(), "{}", stderr(&out));

    std::fs::create_dir(dir.path().join("share")).unwrap();
    let out = edge.cli(&["export", "pkgs", "share/packages"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("1 files") && said.contains("hard links into the store"),
        "{said}"
    );
    let exported = dir.path().join("share/packages/a.msi");
    assert!(std::fs::read(&exported).unwrap() == body[..]);

    let out = edge.cli(&["channels"]);
    let text = stdout(&out);
    assert!(
        text.contains("  export ") && text.contains("share/packages: 1 files"),
        "{text}"
    );

    let out = edge.cli(&["export", "pkgs", "outpost-cache/share"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is inside the cache directory"), "{err}");
    let out = edge.cli(&["export", "nope", "share/x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no channel named \"nope\""),
        "{}",
        stderr(&out)
    );
}
