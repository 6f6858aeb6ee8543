//! Cutting a TLS byte stream into TURN messages (RFC 8656 §12.5): a STUN message is its
//! 20-byte header plus the length in it; ChannelData is its 4-byte header plus the length,
//! padded to a multiple of 4 on the wire. Whatever else arrives cannot be resynchronised
//! (a stream has no message boundaries), so it ends the connection.

/// The STUN magic cookie (RFC 8489 §5), checked so that garbage is refused at its first
/// 8 bytes rather than after buffering whatever length it claims.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_HEADER: usize = 20;
const CHANNEL_HEADER: usize = 4;

/// Why a connection's byte stream is not TURN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("neither STUN nor ChannelData (first byte {0:#04x})")]
    NotTurn(u8),
    #[error("ChannelData on channel {0:#06x}, outside 0x4000-0x4fff")]
    BadChannel(u16),
    #[error("a STUN header without the magic cookie")]
    NoCookie,
    #[error("a STUN length of {0}, not a multiple of 4")]
    UnalignedLength(usize),
    #[error("a {size}-byte message, over the {max}-byte connection buffer")]
    TooLarge { size: usize, max: usize },
}

/// Buffers one connection's incoming bytes, never more than `max`, and hands out whole
/// messages.
pub(crate) struct Framer {
    buf: Vec<u8>,
    max: usize,
}

impl Framer {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    /// How many bytes may be read now: reads are sized by this, so the buffer never
    /// grows past `max`.
    pub(crate) fn space(&self) -> usize {
        self.max.saturating_sub(self.buf.len())
    }

    /// Appends bytes read from the stream (at most [`Framer::space`] of them).
    pub(crate) fn extend(&mut self, data: &[u8]) {
        debug_assert!(data.len() <= self.space(), "read beyond the framer's space");
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, without ChannelData's stream padding; `Ok(None)` until
    /// more bytes arrive. After an error the connection must be closed.
    pub(crate) fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some((message, wire)) = frame_len(&self.buf)? else {
            return Ok(None);
        };
        if wire > self.max {
            return Err(FrameError::TooLarge {
                size: wire,
                max: self.max,
            });
        }
        if self.buf.len() < wire {
            return Ok(None);
        }
        let out = self.buf.get(..message).unwrap_or_default().to_vec();
        self.buf.drain(..wire);
        Ok(Some(out))
    }
}

/// The length of the message at the start of `buf` and of its frame on the wire, once
/// enough of its header is there to tell.
fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // The top two bits, as on UDP (RFC 8656 §12): 00 STUN, 01 ChannelData.
    match first >> 6 {
        0 => {
            let Some(header) = buf.get(..8) else {
                return Ok(None);
            };
            if header[4..8] != MAGIC_COOKIE {
                return Err(FrameError::NoCookie);
            }
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            if len % 4 != 0 {
                return Err(FrameError::UnalignedLength(len));
            }
            Ok(Some((STUN_HEADER + len, STUN_HEADER + len)))
        }
        1 => {
            let Some(header) = buf.get(..CHANNEL_HEADER) else {
                return Ok(None);
            };
            // 0x5000-0x7fff are reserved (RFC 8656 §12): on a stream that is a client we
            // cannot follow.
            let channel = u16::from_be_bytes([header[0], header[1]]);
            if channel > 0x4fff {
                return Err(FrameError::BadChannel(channel));
            }
            let message = CHANNEL_HEADER + usize::from(u16::from_be_bytes([header[2], header[3]]));
            Ok(Some((message, message.next_multiple_of(4))))
        }
        _ => Err(FrameError::NotTurn(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(attr_len: u16, fill: u8) -> Vec<u8> {
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&attr_len.to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend(std::iter::repeat_n(fill, usize::from(attr_len)));
        m
    }

    fn channel(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0x40, 0x01];
        m.extend_from_slice(&u16::try_from(payload.len()).expect("small").to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn padded(mut m: Vec<u8>) -> Vec<u8> {
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    fn all(framer: &mut Framer) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| framer.next_message().expect("valid stream")).collect()
    }

    #[test]
    fn a_message_split_across_reads_comes_out_whole() {
        let msg = stun(8, 0xaa);
        for cut in 1..msg.len() {
            let mut framer = Framer::new(1024);
            framer.extend(&msg[..cut]);
            assert_eq!(framer.next_message(), Ok(None), "cut at {cut}");
            framer.extend(&msg[cut..]);
            assert_eq!(all(&mut framer), vec![msg.clone()], "cut at {cut}");
        }
    }

    #[test]
    fn several_messages_in_one_read_come_out_in_order() {
        let (a, b, c) = (stun(0, 0), channel(b"abcd"), stun(4, 1));
        let mut framer = Framer::new(1024);
        framer.extend(&[a.clone(), b.clone(), c.clone()].concat());
        assert_eq!(all(&mut framer), vec![a, b, c]);
        assert_eq!(framer.space(), 1024, "nothing left behind");
    }

    #[test]
    fn channel_data_padding_is_skipped_and_not_handed_out() {
        let (odd, next) = (channel(b"hello"), stun(0, 0));
        let mut framer = Framer::new(1024);
        let stream = [padded(odd.clone()), next.clone()].concat();
        assert_eq!(stream.len(), 12 + 20);
        // Without its padding the message is whole but its frame is not: wait for it.
        framer.extend(&stream[..9]);
        assert_eq!(framer.next_message(), Ok(None));
        framer.extend(&stream[9..]);
        assert_eq!(all(&mut framer), vec![odd, next]);
        // An empty ChannelData is only its header.
        framer.extend(&channel(b""));
        assert_eq!(all(&mut framer), vec![channel(b"")]);
    }

    #[test]
    fn a_message_larger_than_the_buffer_is_refused_from_its_header() {
        let mut framer = Framer::new(64);
        framer.extend(&stun(100, 0)[..8]);
        assert_eq!(
            framer.next_message(),
            Err(FrameError::TooLarge { size: 120, max: 64 })
        );
        // The cap counts the padding: 57 bytes of payload take 64 on the wire and fit,
        // 61 take 68 and do not.
        let mut framer = Framer::new(64);
        framer.extend(&channel(&[0; 57])[..4]);
        assert_eq!(framer.next_message(), Ok(None));
        let mut framer = Framer::new(64);
        framer.extend(&channel(&[0; 61])[..4]);
        assert_eq!(
            framer.next_message(),
            Err(FrameError::TooLarge { size: 68, max: 64 })
        );
        // Exactly the cap fits, and reads are never offered more room than that.
        let mut framer = Framer::new(64);
        let fits = padded(channel(&[1; 60]));
        assert_eq!(framer.space(), 64);
        framer.extend(&fits[..40]);
        assert_eq!(framer.space(), 24);
        framer.extend(&fits[40..]);
        assert_eq!(all(&mut framer), vec![fits]);
    }

    #[test]
    fn garbage_is_refused() {
        let mut framer = Framer::new(1024);
        // "GE" is a valid channel number, but "T " a length over the buffer.
        framer.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            framer.next_message(),
            Err(FrameError::TooLarge {
                size: 21_540,
                max: 1024
            })
        );
        let mut framer = Framer::new(1024);
        framer.extend(&[0x50, 0, 0, 0]);
        assert_eq!(framer.next_message(), Err(FrameError::BadChannel(0x5000)));
        let mut framer = Framer::new(1024);
        framer.extend(&[0x80, 0, 0, 0]);
        assert_eq!(framer.next_message(), Err(FrameError::NotTurn(0x80)));
        let mut no_cookie = stun(0, 0);
        no_cookie[4] = 0;
        let mut framer = Framer::new(1024);
        framer.extend(&no_cookie);
        assert_eq!(framer.next_message(), Err(FrameError::NoCookie));
        let mut unaligned = stun(0, 0);
        unaligned[3] = 3;
        let mut framer = Framer::new(1024);
        framer.extend(&unaligned);
        assert_eq!(framer.next_message(), Err(FrameError::UnalignedLength(3)));
    }
}
