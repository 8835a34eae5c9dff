//! Bounds-checked big-endian reading and writing. Every read says what it
//! was reading so a short packet is reported by field, and nothing here can
//! index out of range: a datagram from the LAN is hostile input.

use std::net::Ipv4Addr;

use crate::DecodeError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what,
                need: n,
                have: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn ip(&mut self, what: &'static str) -> Result<Ipv4Addr, DecodeError> {
        Ok(Ipv4Addr::from(self.u32(what)?))
    }

    /// Reads a 32-bit element count and refuses it unless that many
    /// elements of at least `min_element_len` bytes could fit in what is
    /// left: a hostile count of 4 billion must not drive an allocation.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_element_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        let fits = self.remaining() / min_element_len.max(1);
        if n > fits {
            return Err(DecodeError::CountTooLarge {
                what,
                count: n,
                room: fits,
            });
        }
        Ok(n)
    }

    /// Ends a component: every byte its length announced must have been
    /// used, so a layout disagreement is an error and not silently skipped.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                what,
                extra: self.remaining(),
            });
        }
        Ok(())
    }
}

pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_ip(&mut self, v: Ipv4Addr);
    fn put_count(&mut self, n: usize);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_ip(&mut self, v: Ipv4Addr) {
        self.extend_from_slice(&v.octets());
    }
    fn put_count(&mut self, n: usize) {
        // Counts we write are bounded by what fits in a UDP datagram.
        self.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
}
