//! The connection phase: the server greeting ([`HandshakeV10`]), what the client answers
//! ([`HandshakeResponse41`], or first an [`SslRequest`]), and the authentication exchange that may
//! follow ([`AuthSwitchRequest`], [`AuthMoreData`]), plus COM_CHANGE_USER which re-runs it.
//!
//! poolguard plays both roles: server towards clients (encode the greeting, decode responses) and
//! client towards servers (decode greetings, encode responses), so every packet has both
//! directions. Invariants: decoders take one logical payload, never panic, and never allocate from
//! a length field; they accept the variants real servers and clients send (MariaDB's extended
//! capabilities in reserved bytes, a missing final NUL after the plugin name) and reject what we do
//! not speak (pre-4.1 clients, protocol versions other than 10, the old_password switch).

mod greeting;
mod response;
mod switch;

pub use greeting::HandshakeV10;
pub use response::{
    decode_client_handshake, ChangeUser, ClientHandshake, HandshakeResponse41, SslRequest,
};
pub use switch::{AuthMoreData, AuthSwitchRequest};
