//! Packets poolguard writes to MySQL clients on its own behalf: OK, EOF and ERR, framed with the
//! sequence id the client expects next.
//!
//! Every refusal goes through [`err_packet`], which takes the code and SQLSTATE from
//! [`ProxyError::mysql_code`] / [`ProxyError::mysql_sqlstate`], the one place they are decided.

use crate::stream::ClientStream;
use bytes::BytesMut;
use poolguard_mysql::packet::encode_with;
use poolguard_mysql::response::{encode_err, encode_err_before_handshake, EofPacket, OkPacket};

use crate::error::ProxyError;

/// Capabilities poolguard's own OK/EOF packets are encoded with (PROTOCOL_41, no session
/// tracking: the same shape the servers send on both legs).
const OWN_CAPS: u32 = poolguard_mysql::consts::CLIENT_PROTOCOL_41;

/// Appends an ERR packet for `e` with sequence id `seq`.
pub fn err_packet(out: &mut BytesMut, seq: u8, e: &ProxyError, mariadb: bool) {
    let message = e.to_string();
    encode_with(out, seq, |b| {
        encode_err(
            b,
            e.mysql_code(mariadb),
            e.mysql_sqlstate(mariadb),
            &message,
        )
    });
}

/// Appends an ERR packet sent instead of the greeting (no SQLSTATE marker).
pub fn err_before_greeting(out: &mut BytesMut, e: &ProxyError, mariadb: bool) {
    let message = e.to_string();
    encode_with(out, 0, |b| {
        encode_err_before_handshake(b, e.mysql_code(mariadb), &message)
    });
}

/// Appends an OK packet with these status flags.
pub fn ok_packet(out: &mut BytesMut, seq: u8, status: u16) {
    encode_with(out, seq, |b| {
        OkPacket::with_status(status).encode(b, OWN_CAPS)
    });
}

/// Appends an EOF packet with these status flags (the answer to COM_SET_OPTION).
pub fn eof_packet(out: &mut BytesMut, seq: u8, status: u16) {
    encode_with(out, seq, |b| {
        EofPacket {
            warnings: 0,
            status_flags: Some(status),
        }
        .encode(b)
    });
}

/// Writes an ERR and closes the connection (best effort: the client may be gone).
pub async fn send_fatal(client: &mut ClientStream, seq: u8, e: &ProxyError, mariadb: bool) {
    let mut out = BytesMut::new();
    err_packet(&mut out, seq, e, mariadb);
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolguard_mysql::response::ErrPacket;

    #[test]
    fn err_packets_carry_the_mapped_code() {
        let mut out = BytesMut::new();
        err_packet(
            &mut out,
            1,
            &ProxyError::PoolExhausted("pool full".into()),
            true,
        );
        assert_eq!(out[3], 1);
        let e = ErrPacket::decode(&out[4..]).unwrap();
        assert_eq!(e.code, 1040);
        assert_eq!(e.sql_state_str(), "08004");
        assert_eq!(e.message, "pool full");
    }
}
