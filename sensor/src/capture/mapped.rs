//! Capture files mapped read-only into memory.
//!
//! The shared-nothing file workers (`run::shared`) each walk
//! the whole capture, keeping the packets whose address pair they own. A
//! read-only mapping of the page cache lets all of them do so without
//! copying a byte: reading the file through a buffer instead would copy it
//! once per worker (1.5 GB per worker for 5 M IMIX frames).
//!
//! The mapping is private and read-only: nothing is ever written through
//! it. One hazard is the kernel's, not ours to remove: if another process
//! truncates the file while it is mapped, reading past the new end raises
//! SIGBUS and ends the process (ripgrep, which maps files the same way,
//! shares it). A capture still growing (tcpdump writing it) is safe: the
//! mapping covers the length the file had when it was opened. Readers that
//! must survive a file being cut under them (standard input, pipes, FIFOs)
//! go through [`super::pcap_file::ReadSource`], which never maps.
//!
//! Pages every reader is done with can be handed back while the mapping
//! lives ([`MappedFile::release`]): the kernel's page tables and the
//! process's resident size then stay bounded on captures of any size, and
//! their teardown is spread over the run instead of falling, all at once,
//! on the thread that drops the mapping.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::ptr::NonNull;

/// A capture file's bytes: mapped, or (for an empty file, which cannot be
/// mapped) an empty slice.
#[derive(Debug)]
pub struct MappedFile {
    ptr: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing
// immutable bytes between threads, or moving their owner, is sound.
unsafe impl Send for MappedFile {}
// SAFETY: as above: `&MappedFile` only gives out `&[u8]`.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps a regular file. `Ok(None)` for anything else (a pipe, a FIFO,
    /// a device): such inputs are read, not mapped.
    pub fn map(file: &File) -> io::Result<Option<MappedFile>> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let len = usize::try_from(meta.len())
            .map_err(|_| io::Error::other("file larger than the address space"))?;
        if len == 0 {
            return Ok(Some(MappedFile { ptr: None, len: 0 }));
        }
        Self::map_len(file, len).map(Some)
    }

    #[cfg(unix)]
    fn map_len(file: &File, len: usize) -> io::Result<MappedFile> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private read-only mapping of `len` bytes of an
        // open file; the result is checked before use and unmapped in
        // `drop`. Nothing else in the process refers to this range.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ptr..ptr + len` is the mapping just made. The advice
        // only tunes read-ahead; its failure changes nothing but speed.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_SEQUENTIAL);
        }
        Ok(MappedFile {
            ptr: NonNull::new(ptr.cast::<u8>()),
            len,
        })
    }

    #[cfg(not(unix))]
    fn map_len(_file: &File, _len: usize) -> io::Result<MappedFile> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "memory mapping is implemented for Unix only",
        ))
    }
}

impl MappedFile {
    /// Hands the pages wholly inside bytes `range` of the file back to the
    /// kernel (`madvise(MADV_DONTNEED)`): for a private mapping of a file
    /// never written through, their bytes stay the file's, and are read
    /// back from it (normally from the page cache, which this leaves alone)
    /// should they be read again. Only speed is at stake: a reader that
    /// comes back to them pays a page fault. Pages partly outside `range`
    /// are kept, though the kernel may drop the whole of a huge page it
    /// maps the file with (Linux does for large folios mapped whole).
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Some(p) = self.ptr {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
                .unwrap_or(4096)
                .max(1);
            let start = range.start.next_multiple_of(page);
            let end = range.end.min(self.len) / page * page;
            if start >= end {
                return;
            }
            // SAFETY: `start..end` lies inside the mapping made in
            // `map_len` (`end` is at most its length) and is page-aligned
            // (the mapping starts on a page). The mapping is private,
            // read-only and backed by a file: dropping its pages loses no
            // byte, a later read faults the file's bytes back in, so the
            // slices borrowed from `self` keep their contents. Failure
            // leaves the pages mapped, which changes nothing but memory.
            unsafe {
                libc::madvise(
                    p.as_ptr().add(start).cast(),
                    end - start,
                    libc::MADV_DONTNEED,
                );
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self.ptr {
            // SAFETY: the mapping is `len` readable bytes, alive as long as
            // `self`, and never written while mapped.
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr(), self.len) },
            None => &[],
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(p) = self.ptr {
            // SAFETY: unmaps exactly the mapping made in `map_len`; no slice
            // of it outlives `self` (they borrow it).
            unsafe {
                libc::munmap(p.as_ptr().cast(), self.len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_mapped_file_reads_as_its_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        f.write_all(&bytes).unwrap();
        let m = MappedFile::map(&f).unwrap().expect("a regular file maps");
        assert_eq!(&m[..], &bytes[..]);
    }

    /// Released pages read back as the file's bytes, and stop counting in
    /// the process's resident memory.
    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_read_back_as_the_files_bytes() {
        /// The mapping's resident KiB, from the kernel's view of it.
        fn resident_kib(m: &MappedFile) -> u64 {
            let start = format!("{:x}-", m.ptr.unwrap().as_ptr() as usize);
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
            assert!(lines.next().is_some(), "the mapping is in smaps");
            let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
            rss.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        let m = MappedFile::map(&f).unwrap().expect("a regular file maps");
        let sum: u64 = m.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert!(sum > 0);
        assert_eq!(resident_kib(&m), 64 << 10);
        // Not page-aligned at either end: at most the two partial pages
        // stay (none, where the kernel maps the file in huge pages and
        // drops those whole).
        m.release(1000..m.len() - 1000);
        let left = resident_kib(&m);
        assert!(left <= 8, "{left} KiB resident after the release");
        assert_eq!(&m[..], &bytes[..], "released pages read back as the file");
        // Ranges with no whole page, or past the end, are harmless.
        m.release(10..20);
        m.release(0..usize::MAX);
        assert_eq!(&m[..4096], &bytes[..4096]);
    }

    #[test]
    fn an_empty_file_maps_to_no_bytes() {
        let f = tempfile::tempfile().unwrap();
        let m = MappedFile::map(&f).unwrap().expect("a regular file maps");
        assert!(m.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_is_not_mapped() {
        let (r, _w) = std::io::pipe().unwrap();
        let f = File::from(std::os::fd::OwnedFd::from(r));
        assert!(MappedFile::map(&f).unwrap().is_none());
    }
}
