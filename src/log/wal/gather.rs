//! A group commit's bytes in file order, written with one `pwritev`: record headers
//! and small payloads are copied into one buffer, large values are written from
//! where they already lie (the buffer a catch-up answer arrived in, shared with the
//! replica). Copying them into the group's buffer first was a whole pass over every
//! byte of a catch-up: 17-19% of the writer thread in its profile.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

/// Pieces at least this large are written from where they lie. Below it a copy costs
/// less than the `iovec` entry it saves.
pub const SHARED_WRITE_MIN_BYTES: usize = 4096;

/// Entries handed to one `pwritev` call: Linux's `IOV_MAX`.
const MAX_IOVECS_PER_CALL: usize = 1024;

#[derive(Clone, Copy, Debug)]
enum Piece<'a> {
    /// `copied[start..end]`.
    Copied {
        start: usize,
        end: usize,
    },
    Shared(&'a [u8]),
}

/// See the module documentation. `copied` is handed in and back out so the writer
/// keeps one buffer from commit to commit.
#[derive(Debug)]
pub struct GroupBytes<'a> {
    copied: Vec<u8>,
    pieces: Vec<Piece<'a>>,
    len: usize,
}

impl<'a> GroupBytes<'a> {
    /// Starts empty, reusing `buffer`'s capacity.
    pub fn new(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        GroupBytes {
            copied: buffer,
            pieces: Vec::new(),
            len: 0,
        }
    }

    /// Bytes added since the last [`GroupBytes::clear`].
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserves room for `bytes` more copied bytes.
    pub fn reserve_copied(&mut self, bytes: usize) {
        self.copied.reserve(bytes);
    }

    /// Appends a copy of `bytes`.
    pub fn copy(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.copied.len();
        self.copied.extend_from_slice(bytes);
        let end = self.copied.len();
        match self.pieces.last_mut() {
            // Copies in a row are one piece: `copied` only grows by copies, so the
            // last copied piece ends where the new bytes start.
            Some(Piece::Copied { end: last_end, .. }) => *last_end = end,
            _ => self.pieces.push(Piece::Copied { start, end }),
        }
        self.len += bytes.len();
    }

    /// Appends `bytes`, by reference when large enough to be worth it.
    pub fn share(&mut self, bytes: &'a [u8]) {
        if bytes.len() < SHARED_WRITE_MIN_BYTES {
            self.copy(bytes);
        } else {
            self.pieces.push(Piece::Shared(bytes));
            self.len += bytes.len();
        }
    }

    /// Forgets the bytes added, keeping the copy buffer's capacity.
    pub fn clear(&mut self) {
        self.copied.clear();
        self.pieces.clear();
        self.len = 0;
    }

    /// The copy buffer, for the next commit.
    pub fn into_buffer(self) -> Vec<u8> {
        self.copied
    }

    fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces.iter().map(|piece| match *piece {
            Piece::Copied { start, end } => &self.copied[start..end],
            Piece::Shared(bytes) => bytes,
        })
    }

    /// The bytes in one piece (encodings for tests and fuzz seeds).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for slice in self.slices() {
            out.extend_from_slice(slice);
        }
        out
    }

    /// Writes every byte at `offset` of `file`, as `write_all_at` would the joined
    /// bytes: retries interrupted and short writes.
    pub fn write_all_at(&self, file: &File, offset: u64) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.slices().map(IoSlice::new).collect();
        let mut rest = &mut slices[..];
        let mut offset = offset;
        while !rest.is_empty() {
            let count = rest.len().min(MAX_IOVECS_PER_CALL);
            let at = libc::off_t::try_from(offset).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "file offset out of range")
            })?;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (documented
            // guarantee); the `count` entries and the memory they point to are
            // borrowed for the duration of the call, which only reads them.
            let written = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    rest.as_ptr().cast::<libc::iovec>(),
                    count as libc::c_int,
                    at,
                )
            };
            if written < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let written = written as usize;
            offset += written as u64;
            // At most the bytes of the first `count` entries were written, so this
            // never advances past the end.
            IoSlice::advance_slices(&mut rest, written);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn copies_in_a_row_are_one_piece_and_large_shares_are_references() {
        let large = vec![7u8; SHARED_WRITE_MIN_BYTES];
        let small = vec![9u8; SHARED_WRITE_MIN_BYTES - 1];
        let mut bytes = GroupBytes::new(Vec::new());
        bytes.copy(b"head");
        bytes.share(&small);
        bytes.copy(b"");
        bytes.share(&large);
        bytes.copy(b"tail");
        assert_eq!(bytes.pieces.len(), 3, "{:?}", bytes.pieces);
        assert!(matches!(bytes.pieces[1], Piece::Shared(s) if s.as_ptr() == large.as_ptr()));
        assert_eq!(bytes.len(), 4 + small.len() + large.len() + 4);
        assert_eq!(
            bytes.to_vec(),
            [&b"head"[..], &small, &large, b"tail"].concat()
        );
        bytes.clear();
        assert!(bytes.is_empty() && bytes.to_vec().is_empty());
    }

    #[test]
    fn more_pieces_than_one_call_takes_are_written_whole_and_in_order() {
        // Distinct contents per piece, so a skipped or repeated piece shows.
        let values: Vec<Vec<u8>> = (0..MAX_IOVECS_PER_CALL * 2 + 37)
            .map(|i| vec![(i % 251) as u8; SHARED_WRITE_MIN_BYTES + i % 5])
            .collect();
        let mut bytes = GroupBytes::new(Vec::new());
        for (i, value) in values.iter().enumerate() {
            bytes.copy(&(i as u32).to_le_bytes());
            bytes.share(value);
        }
        assert!(bytes.pieces.len() > 2 * MAX_IOVECS_PER_CALL);
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(b"before", 0).unwrap();
        bytes.write_all_at(&file, 6).unwrap();
        let mut on_disk = vec![0u8; 6 + bytes.len()];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(&on_disk[..6], b"before");
        assert!(on_disk[6..] == bytes.to_vec()[..]);
    }
}
