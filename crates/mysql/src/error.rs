//! The one error type of this crate: why bytes from the network could not be decoded.
//!
//! Every variant means the peer is broken, hostile, or speaking a dialect we do not negotiate. The
//! caller should answer with an ERR packet when the peer is a client (see `crate::consts` for the
//! codes: `ER_NET_PACKET_TOO_LARGE` for [`DecodeError::PacketTooLarge`], `ER_UNKNOWN_COM_ERROR` or
//! `ER_HANDSHAKE_ERROR` otherwise) and close the connection: after a decode error the stream position
//! is unknown, so no decoder state is meant to be reused.

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A field needs more bytes than the payload has left.
    #[error("packet too short: {what} needs {needed} byte(s) but only {available} remain")]
    TooShort {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs (for a length-encoded field: the announced length).
        needed: usize,
        /// Bytes left in the payload.
        available: usize,
    },

    /// A logical packet (all its 16 MiB chunks together) is larger than `max_allowed_packet`.
    /// `len` is what is known when the limit is crossed: the exact size of a short packet, or for a
    /// split packet the bytes announced so far (the real size is at least that).
    #[error("packet of {len} bytes exceeds max_allowed_packet ({max} bytes)")]
    PacketTooLarge {
        /// Logical length known so far.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// A continuation chunk of a split packet did not carry the next sequence id.
    #[error("packet sequence id out of order: expected {expected}, got {got}")]
    SequenceMismatch {
        /// The sequence id the protocol requires here.
        expected: u8,
        /// The sequence id on the wire.
        got: u8,
    },

    /// A length-encoded integer started with a byte that is not a valid prefix here
    /// (0xFB is NULL, only meaningful inside text rows; 0xFF is never valid).
    #[error("invalid length-encoded integer prefix 0x{byte:02x} in {what}")]
    InvalidLenEnc {
        /// The field being read.
        what: &'static str,
        /// The offending first byte.
        byte: u8,
    },

    /// A NUL-terminated string has no NUL before the end of the payload.
    #[error("{what}: missing NUL terminator")]
    MissingNul {
        /// The field being read.
        what: &'static str,
    },

    /// A text field that must be UTF-8 is not.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },

    /// A packet started with a header byte that is not allowed where it appeared.
    #[error("unexpected packet header 0x{header:02x}: expected {expected}")]
    UnexpectedHeader {
        /// What the decoder was waiting for.
        expected: &'static str,
        /// The first byte of the payload (0 for an empty payload).
        header: u8,
    },

    /// The server greeting announced a protocol version other than 10.
    #[error("unsupported protocol version {0} (only HandshakeV10 is supported)")]
    UnsupportedProtocolVersion(u8),

    /// The peer relies on a pre-4.1 protocol feature we do not implement (e.g. a client without
    /// CLIENT_PROTOCOL_41, or the old_password auth switch).
    #[error("unsupported legacy protocol: {0}")]
    Unsupported(&'static str),

    /// A packet is well framed but its content is inconsistent.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The packet or field.
        what: &'static str,
        /// What is wrong with it.
        detail: &'static str,
    },

    /// The response tracker was fed a packet after the response was complete: the relay and the
    /// server disagree about where the response ends.
    #[error("packet received after the response was complete")]
    ResponseComplete,
}

impl DecodeError {
    /// Shorthand for [`DecodeError::TooShort`].
    pub(crate) fn too_short(what: &'static str, needed: usize, available: usize) -> Self {
        DecodeError::TooShort {
            what,
            needed,
            available,
        }
    }

    /// True when the error is [`DecodeError::PacketTooLarge`], which deserves its own
    /// `ER_NET_PACKET_TOO_LARGE` (1153) answer rather than a generic protocol error.
    pub fn is_too_large(&self) -> bool {
        matches!(self, DecodeError::PacketTooLarge { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_numbers() {
        let e = DecodeError::too_short("username", 5, 2);
        assert_eq!(
            e.to_string(),
            "packet too short: username needs 5 byte(s) but only 2 remain"
        );
        let e = DecodeError::PacketTooLarge { len: 70, max: 64 };
        assert!(e.is_too_large());
        assert_eq!(
            e.to_string(),
            "packet of 70 bytes exceeds max_allowed_packet (64 bytes)"
        );
        let e = DecodeError::UnexpectedHeader {
            expected: "OK or ERR",
            header: 0xfe,
        };
        assert_eq!(
            e.to_string(),
            "unexpected packet header 0xfe: expected OK or ERR"
        );
    }
}
