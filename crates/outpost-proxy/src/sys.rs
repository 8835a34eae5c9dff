//! Socket options the edge needs from the kernel.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The destination a connection was addressed to before the firewall
/// redirected it to us (`SO_ORIGINAL_DST`), if it was redirected.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let original = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    original.ok()?.as_socket().filter(|dst| *dst != local)
}
