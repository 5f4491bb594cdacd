//! Client commands: the first byte of every command-phase packet, encoders for the commands the
//! proxy sends on its own (health checks, reset before reuse, its own queries), and read access to
//! a COM_QUERY's SQL (for leak attribution and pinning decisions).
//!
//! Requests are relayed untouched; nothing here rewrites a client's packet (statement ids are
//! rewritten by `crate::stmt`). Invariant: readers never panic on an empty or short payload.

use bytes::{BufMut, BytesMut};

use crate::consts::{COM_INIT_DB, COM_QUERY};

/// The command byte of a client packet, `None` for an empty payload.
pub fn command_byte(payload: &[u8]) -> Option<u8> {
    payload.first().copied()
}

/// The SQL text of a COM_QUERY payload (without the command byte), `None` for other commands.
/// Only valid without CLIENT_QUERY_ATTRIBUTES, which poolguard does not negotiate (it prefixes the
/// text with parameters).
pub fn query_text(payload: &[u8]) -> Option<&[u8]> {
    match payload.split_first() {
        Some((&COM_QUERY, sql)) => Some(sql),
        _ => None,
    }
}

/// Writes a command without arguments: COM_PING, COM_RESET_CONNECTION, COM_QUIT,
/// COM_STATISTICS, COM_DEBUG.
pub fn encode_command(buf: &mut BytesMut, command: u8) {
    buf.put_u8(command);
}

/// Writes a COM_QUERY payload.
pub fn encode_query(buf: &mut BytesMut, sql: &[u8]) {
    buf.put_u8(COM_QUERY);
    buf.put_slice(sql);
}

/// Writes a COM_INIT_DB payload (switch the default database).
pub fn encode_init_db(buf: &mut BytesMut, database: &[u8]) {
    buf.put_u8(COM_INIT_DB);
    buf.put_slice(database);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{COM_PING, COM_RESET_CONNECTION};

    #[test]
    fn exact_bytes() {
        let mut b = BytesMut::new();
        encode_command(&mut b, COM_RESET_CONNECTION);
        encode_command(&mut b, COM_PING);
        assert_eq!(&b[..], &[0x1f, 0x0e]);
        let mut b = BytesMut::new();
        encode_query(&mut b, b"SELECT @@max_connections");
        assert_eq!(b[0], 0x03);
        assert_eq!(query_text(&b), Some(&b"SELECT @@max_connections"[..]));
        assert_eq!(command_byte(&b), Some(COM_QUERY));
        let mut b = BytesMut::new();
        encode_init_db(&mut b, b"bank");
        assert_eq!(&b[..], b"\x02bank");
        assert_eq!(query_text(&b), None);
        assert_eq!(query_text(&[]), None);
        assert_eq!(command_byte(&[]), None);
    }
}
