/// Validates UTF-8 that arrives in pieces (fragments of one text message).
///
/// A sequence may be split across pieces; the validator keeps the incomplete tail (at most
/// 3 bytes) and fails as soon as a byte sequence can no longer be valid, so a peer cannot
/// make us buffer a whole large message before we notice it is not text.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// Feeds the next piece; `Err(())` if the bytes so far cannot be valid UTF-8.
    #[allow(clippy::result_unit_err)]
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), ()> {
        if self.pending_len > 0 {
            // Complete the split sequence byte by byte, so we never copy the whole piece.
            while self.pending_len < 4 && !data.is_empty() {
                self.pending[self.pending_len as usize] = data[0];
                self.pending_len += 1;
                data = &data[1..];
                match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                    Ok(_) => {
                        self.pending_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(()),
                    Err(_) => {}
                }
            }
            if self.pending_len > 0 {
                return if data.is_empty() { Ok(()) } else { Err(()) };
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(()),
                None => {
                    let tail = &data[e.valid_up_to()..];
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// True when the bytes so far end on a character boundary (the message may end here).
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_text_split_anywhere() {
        let text = "κόσμε — ok ✓ 𝄞 end".as_bytes();
        for split in 0..=text.len() {
            let mut v = Utf8Validator::default();
            v.feed(&text[..split]).unwrap();
            v.feed(&text[split..]).unwrap();
            assert!(v.is_complete(), "split at {split}");
        }
        // one byte at a time
        let mut v = Utf8Validator::default();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(v.is_complete());
    }

    #[test]
    fn fails_fast_on_an_impossible_sequence() {
        let mut v = Utf8Validator::default();
        // 0xF4 0x90 starts a code point above U+10FFFF: invalid already after two bytes.
        v.feed(b"hello").unwrap();
        assert!(v.feed(&[0xf4]).is_ok());
        assert!(v.feed(&[0x90]).is_err());
    }

    #[test]
    fn reports_an_unfinished_sequence_as_incomplete() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert!(!v.is_complete());
    }
}
