//! Where a capture reader gets its bytes: a buffered reader over any
//! `Read`, or a capture already in memory.

use std::io::{self, Read};

use super::BUF_LEN;

/// The read buffer's first size; it grows to [`BUF_LEN`].
const START_LEN: usize = 64 << 10;

/// Where a capture reader gets its bytes: a window that can be refilled,
/// with absolute offsets for error messages.
pub trait ByteSource {
    /// Makes at least `need` bytes available unless the input ends first;
    /// returns how many are available.
    fn fill(&mut self, need: usize) -> io::Result<usize>;
    /// The bytes available now.
    fn available(&self) -> &[u8];
    /// Drops `n` available bytes.
    fn consume(&mut self, n: usize);
    /// Offset of the first available byte in the file.
    fn offset(&self) -> u64;
}

/// Reads through one large buffer (1 MiB, grown only for larger blocks).
#[derive(Debug)]
pub struct ReadSource<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl<R: Read> ReadSource<R> {
    pub(super) fn new(inner: R) -> Self {
        ReadSource {
            inner,
            buf: vec![0; START_LEN],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
        }
    }
}

impl<R: Read> ByteSource for ReadSource<R> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    fn fill(&mut self, need: usize) -> io::Result<usize> {
        if self.end - self.pos >= need || self.eof {
            return Ok(self.end - self.pos);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if need > self.buf.len() {
            self.buf.resize(need.next_power_of_two(), 0);
        } else if self.end > self.buf.len() / 2 && self.buf.len() < BUF_LEN {
            // Half full after moving what is left to the front: reads get
            // larger, up to BUF_LEN (a small capture never zeroes a large
            // buffer; a stream soon reads in large blocks).
            let len = (self.buf.len() * 2).min(BUF_LEN);
            self.buf.resize(len, 0);
        }
        while self.end < need {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.pos)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// A capture already in memory: packets borrow it directly, nothing is copied.
#[derive(Debug)]
pub struct SliceSource<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl ByteSource for SliceSource<'_> {
    fn fill(&mut self, _need: usize) -> io::Result<usize> {
        Ok(self.data.len() - self.pos)
    }

    fn available(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }
}
