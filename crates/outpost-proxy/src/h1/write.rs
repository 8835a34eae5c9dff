//! Writing responses: heads, bodies (with `sendfile` for stored bytes),
//! stall limits towards the client, and CONNECT tunnels.

use super::*;

impl Conn {
    /// Writes a response (counting body bytes in `body_bytes_sent`).
    /// Returns whether the connection can serve another request.
    pub(super) async fn write_response(
        &mut self,
        method: &Method,
        version: Version,
        keep_alive: bool,
        resp: Response<EdgeBody>,
    ) -> io::Result<bool> {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let declared_len = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let known_len = match &body {
            EdgeBody::Empty => Some(0),
            EdgeBody::Full(b) => Some(b.len() as u64),
            _ => None,
        };
        let length = declared_len.or(known_len);
        let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
        let keep_alive = keep_alive && (bodiless || length.is_some() || chunked);

        let mut head = BytesMut::with_capacity(512);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.extend_from_slice(b" ");
        head.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in parts.headers.iter() {
            if matches!(
                name.as_str(),
                "connection" | "keep-alive" | "transfer-encoding" | "content-length"
            ) {
                continue;
            }
            put_header(&mut head, name, value);
        }
        if let Some(len) = length
            && (!bodiless || declared_len.is_some())
            && status != StatusCode::NO_CONTENT
            && !status.is_informational()
        {
            put_header(&mut head, &header::CONTENT_LENGTH, &HeaderValue::from(len));
        }
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        if !keep_alive {
            head.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");

        if bodiless {
            write_within(&mut self.stream, &head, self.send_timeout).await?;
            return Ok(keep_alive);
        }
        let mut writer = BodyWriter {
            stream: &mut self.stream,
            head: Some(head),
            chunked,
            sent: &mut self.body_bytes_sent,
            send_timeout: self.send_timeout,
        };
        let complete = match body {
            EdgeBody::Empty => {
                writer.data(Bytes::new()).await?;
                true
            }
            EdgeBody::Full(b) => {
                writer.data(b).await?;
                true
            }
            EdgeBody::Stream(mut s) => loop {
                match s.frame().await {
                    None => break true,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            writer.data(data).await?;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "response body failed; closing the connection");
                        break false;
                    }
                }
            },
            EdgeBody::Object(obj) if obj.is_complete() => {
                // Every byte is on disk: cork the socket so the head and the
                // file data leave in full segments (nginx's tcp_nopush).
                let sock = socket2::SockRef::from(&*writer.stream);
                let _ = sock.set_tcp_cork(true);
                let result = send_object(&mut writer, obj).await;
                let _ = socket2::SockRef::from(&*writer.stream).set_tcp_cork(false);
                result?
            }
            EdgeBody::Object(obj) => {
                // The head goes out at once: the first bytes of a fill may
                // be a round trip away, and a client should not wait for them
                // to see the response start.
                writer.flush_head().await?;
                send_object(&mut writer, obj).await?
            }
        };
        writer.flush_head().await?;
        let sent = *writer.sent;
        if !complete {
            return Ok(false);
        }
        if let Some(len) = length
            && sent != len
        {
            tracing::warn!(
                declared = len,
                sent,
                "body length differs from Content-Length; closing"
            );
            return Ok(false);
        }
        if chunked {
            write_within(&mut self.stream, b"0\r\n\r\n", self.send_timeout).await?;
        }
        Ok(keep_alive)
    }

    /// Splices the client connection and `upstream` (CONNECT), after the 200.
    pub(super) async fn tunnel(mut self, mut upstream: TcpStream) {
        if self
            .stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if !self.buf.is_empty() && upstream.write_all(&self.buf).await.is_err() {
            return;
        }
        let start = Instant::now();
        let moved = AtomicU64::new(0);
        let mut client = Watched {
            inner: &mut self.stream,
            moved: &moved,
            start,
        };
        let mut server = Watched {
            inner: &mut upstream,
            moved: &moved,
            start,
        };
        let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
        tokio::pin!(copy);
        loop {
            let idle_since = start + Duration::from_millis(moved.load(Relaxed));
            tokio::select! {
                _ = &mut copy => return,
                _ = tokio::time::sleep_until((idle_since + self.tunnel_idle_timeout).into()) => {
                    let idle_since = start + Duration::from_millis(moved.load(Relaxed));
                    if idle_since.elapsed() >= self.tunnel_idle_timeout {
                        tracing::debug!(idle = ?self.tunnel_idle_timeout, "tunnel idle; closed");
                        return;
                    }
                }
            }
        }
    }
}

/// A tunnel end that notes when bytes last arrived (milliseconds after
/// `start`), so that an idle tunnel can be closed.
pub(super) struct Watched<'a, S> {
    inner: &'a mut S,
    moved: &'a AtomicU64,
    start: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.start.elapsed().as_millis() as u64;
            self.moved.fetch_max(now, Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

pub(super) fn put_header(head: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    head.extend_from_slice(name.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// Writes a body after the head, coalescing the head with small first data.
pub(super) struct BodyWriter<'a> {
    stream: &'a mut TcpStream,
    head: Option<BytesMut>,
    chunked: bool,
    sent: &'a mut u64,
    /// A client that takes no byte for this long is cut off.
    send_timeout: Duration,
}

impl BodyWriter<'_> {
    async fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        write_within(self.stream, buf, self.send_timeout).await
    }

    async fn flush_head(&mut self) -> io::Result<()> {
        if let Some(head) = self.head.take() {
            self.write(&head).await?;
            tracing::trace!("response head written");
        }
        Ok(())
    }

    async fn data(&mut self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        *self.sent += data.len() as u64;
        let mut out = self.head.take().unwrap_or_default();
        if self.chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= 64 * 1024 {
            out.extend_from_slice(&data);
            if self.chunked {
                out.extend_from_slice(b"\r\n");
            }
            return self.write(&out).await;
        }
        if !out.is_empty() {
            self.write(&out).await?;
        }
        self.write(&data).await?;
        if self.chunked {
            self.write(b"\r\n").await?;
        }
        Ok(())
    }

    async fn file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        if self.chunked {
            let mut out = self.head.take().unwrap_or_default();
            out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            self.write(&out).await?;
        } else {
            self.flush_head().await?;
        }
        sendfile_all(self.stream, file, offset, len, self.send_timeout, self.sent).await?;
        if self.chunked {
            self.write(b"\r\n").await?;
        }
        Ok(())
    }
}

/// Sends an object body; `Ok(false)` if it failed part way (the connection
/// must then be closed: the declared length cannot be met).
pub(super) async fn send_object(
    writer: &mut BodyWriter<'_>,
    mut obj: Box<crate::serve::ObjectStream>,
) -> io::Result<bool> {
    loop {
        match obj.next_piece().await {
            Ok(None) => return Ok(true),
            Ok(Some(Piece::Data(data))) => writer.data(data).await?,
            Ok(Some(Piece::File { file, offset, len })) => writer.file(&file, offset, len).await?,
            Err(e) => {
                tracing::info!(error = %e, "object body failed; closing the connection");
                return Ok(false);
            }
        }
    }
}

/// Writes all of `buf`, unless the client takes nothing for `stall`.
pub(super) async fn write_within(
    stream: &mut TcpStream,
    buf: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let mut rest = buf;
    while !rest.is_empty() {
        match tokio::time::timeout(stall, stream.write(rest)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => rest = &rest[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(client_stalled()),
        }
    }
    Ok(())
}

pub(super) fn client_stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")
}

/// Sends `len` bytes of `file` from `offset` to the socket, unless the
/// client takes nothing for `stall`.
pub(super) async fn sendfile_all(
    stream: &TcpStream,
    file: &std::fs::File,
    mut offset: u64,
    mut len: u64,
    stall: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    while len > 0 {
        tokio::time::timeout(stall, stream.writable())
            .await
            .map_err(|_| client_stalled())??;
        let count = len.min(1 << 30) as usize;
        match stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, Some(&mut offset), count).map_err(io::Error::from)
        }) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file shorter than its extents",
                ));
            }
            Ok(n) => {
                len -= n as u64;
                *sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
