//! Byte buffers that exchanges borrow from their worker and give back when they end, so that a
//! kept-alive request does not allocate and grow its head and staging buffers again.
//!
//! The free list belongs to the worker, not to a connection: idle connections hold none, and
//! the number kept follows the requests in flight, within `MAX_KEPT`.

/// Buffers kept on the free list, at most.
const MAX_KEPT: usize = 1024;
/// A buffer that grew past this (a large head or a streamed body) is freed, not kept.
const MAX_CAPACITY: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct Buffers {
    free: Vec<Vec<u8>>,
}

impl Buffers {
    /// An empty buffer, with the capacity of one given back earlier if there is one.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Keeps `buf` for a later `take`, emptied, unless it is large or enough are kept.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > MAX_CAPACITY || self.free.len() >= MAX_KEPT {
            return;
        }
        buf.clear();
        self.free.push(buf);
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty_with_its_capacity() {
        let mut buffers = Buffers::default();
        let mut buf = buffers.take();
        assert_eq!(buf.capacity(), 0);
        buf.extend_from_slice(&[7; 300]);
        let capacity = buf.capacity();
        buffers.give(buf);
        let again = buffers.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        assert_eq!(buffers.kept(), 0);
    }

    #[test]
    fn large_empty_and_surplus_buffers_are_not_kept() {
        let mut buffers = Buffers::default();
        buffers.give(Vec::new());
        buffers.give(Vec::with_capacity(MAX_CAPACITY + 1));
        assert_eq!(buffers.kept(), 0);
        for _ in 0..MAX_KEPT + 5 {
            buffers.give(Vec::with_capacity(64));
        }
        assert_eq!(buffers.kept(), MAX_KEPT);
    }
}
