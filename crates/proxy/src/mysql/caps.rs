//! Capability negotiation on both legs of a relayed MySQL session.
//!
//! Invariant: every capability poolguard offers a client is one every server connection is
//! opened with, and no wire-format capability differs between the legs. Neither leg negotiates
//! CLIENT_DEPRECATE_EOF, CLIENT_SESSION_TRACK, TLS, compression, optional result-set metadata,
//! query attributes or MariaDB's extended capabilities other than extended type information,
//! so OK/EOF packets and result sets have one shape on both sides and are relayed untouched.
//! Extended type information (column definitions that name JSON and friends) is per client,
//! like CLIENT_FOUND_ROWS: such clients get pools of their own ([`Leg`]). Capabilities that only change semantics
//! are handled per client: CLIENT_FOUND_ROWS selects a pool whose servers were opened with it,
//! CLIENT_MULTI_STATEMENTS is synchronised with COM_SET_OPTION, CLIENT_LOCAL_FILES is offered
//! only when `allow_local_infile` is on (servers always have it, so poolguard sees the request
//! and can refuse it clearly).

use poolguard_mysql::consts::*;

/// What every server connection asks for (intersected with what the server offers).
pub const SERVER_LEG: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// What the server must offer for poolguard to relay it.
pub const REQUIRED_FROM_SERVER: u32 =
    CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;

/// Capabilities offered to clients, before intersecting with what the servers have.
const CLIENT_OFFER: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_RESERVED
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// MariaDB extended capabilities offered to clients (when the server offers them too): extended
/// type information in column definitions (JSON, UUID, INET... named), which changes the
/// contents of column definitions only, not where packets begin or end.
pub const MARIADB_OFFER: u32 = MARIADB_CLIENT_EXTENDED_TYPE_INFO;

/// What a client chose at login that fixes how its server connections must log in, so pools
/// are kept apart by it: CLIENT_FOUND_ROWS (what UPDATE reports) and MariaDB's extended type
/// information (what column definitions carry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Leg {
    pub found_rows: bool,
    pub extended_types: bool,
}

impl Leg {
    /// From the capabilities negotiated with a client (`mariadb_caps`: its MariaDB extended
    /// ones, already intersected with the offer).
    pub fn of(caps: u32, mariadb_caps: u32) -> Leg {
        Leg {
            found_rows: caps & CLIENT_FOUND_ROWS != 0,
            extended_types: mariadb_caps & MARIADB_CLIENT_EXTENDED_TYPE_INFO != 0,
        }
    }

    /// The capabilities of a server connection for a pool of such clients.
    pub fn server_caps(self) -> u32 {
        if self.found_rows {
            SERVER_LEG | CLIENT_FOUND_ROWS
        } else {
            SERVER_LEG
        }
    }

    /// The MariaDB extended capabilities of such a server connection, given what the server
    /// offers.
    pub fn server_mariadb_caps(self, offered: u32) -> u32 {
        if self.extended_types {
            offered & MARIADB_CLIENT_EXTENDED_TYPE_INFO
        } else {
            0
        }
    }

    /// How the pool's name shows it (empty for the common choice).
    pub fn suffix(self) -> &'static str {
        match (self.found_rows, self.extended_types) {
            (false, false) => "",
            (true, false) => " (found_rows)",
            (false, true) => " (extended types)",
            (true, true) => " (found_rows, extended types)",
        }
    }
}

/// The capabilities announced in poolguard's greeting, given the server's greeting
/// capabilities. Bit 0 mirrors the server (MariaDB clears it); no MariaDB extended
/// capabilities are announced.
pub fn offer(server_caps: u32, allow_local_infile: bool) -> u32 {
    let mut offer = CLIENT_OFFER;
    if allow_local_infile {
        offer |= CLIENT_LOCAL_FILES;
    }
    // FOUND_ROWS is per pool and INTERACTIVE/IGNORE_SIGPIPE/RESERVED change nothing on the
    // wire, so they are offered whatever the server says; the rest must be on the server leg.
    let per_client =
        CLIENT_FOUND_ROWS | CLIENT_INTERACTIVE | CLIENT_IGNORE_SIGPIPE | CLIENT_RESERVED;
    let mut caps = offer & (server_caps | per_client);
    if server_caps & CLIENT_MYSQL == 0 {
        caps &= !CLIENT_MYSQL;
    } else {
        caps |= CLIENT_MYSQL;
    }
    caps
}

/// What a client ends up with: its request intersected with the offer.
pub fn negotiated(client_caps: u32, offered: u32) -> u32 {
    client_caps & offered | CLIENT_PROTOCOL_41
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_capabilities_agree_on_both_legs() {
        let server = !CLIENT_MYSQL;
        let offered = offer(server, false);
        for leg in [
            Leg::default().server_caps(),
            Leg {
                found_rows: true,
                ..Leg::default()
            }
            .server_caps(),
        ] {
            let leg = leg & server;
            assert_eq!(
                offered & WIRE_FORMAT_CAPABILITIES,
                leg & WIRE_FORMAT_CAPABILITIES
            );
        }
        assert_eq!(
            offered & (CLIENT_DEPRECATE_EOF | CLIENT_SESSION_TRACK | CLIENT_SSL),
            0
        );
        assert_eq!(offered & UNSUPPORTED_CAPABILITIES, 0);
        assert_eq!(offered & CLIENT_LOCAL_FILES, 0);
        assert_ne!(offer(server, true) & CLIENT_LOCAL_FILES, 0);
        assert_eq!(offered & CLIENT_MYSQL, 0);
    }
}
