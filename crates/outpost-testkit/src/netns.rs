//! Running code inside a named network namespace (`ip netns add NAME`),
//! for root tests: a dedicated thread joins the namespace with `setns`
//! and runs the closure. Sockets, TUN interfaces and connections it opens
//! belong to that namespace for their whole life, whichever thread uses
//! them afterwards.

use std::io;

/// Runs `f` on a new thread inside `/run/netns/NAME` and returns its
/// result.
pub fn in_netns<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = format!("/run/netns/{name}");
    let ns =
        std::fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    std::thread::spawn(move || {
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| io::Error::other(format!("setns {path}: {e}")))?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}
