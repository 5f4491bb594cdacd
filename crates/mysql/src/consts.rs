//! Protocol constants: capability flags, server status flags, command bytes, packet headers,
//! and the error codes poolguard sends or reacts to.
//!
//! Values follow MySQL's `include/mysql_com.h` and MariaDB's protocol documentation. Where the two
//! servers differ it is said next to the constant.
//!
//! Capabilities that change the *wire format* must be the same on both legs of a relayed session
//! (client <-> poolguard and poolguard <-> server), or be stripped on both: see
//! [`WIRE_FORMAT_CAPABILITIES`]. Capabilities in [`UNSUPPORTED_CAPABILITIES`] and
//! [`UNSUPPORTED_MARIADB_CAPABILITIES`] should be masked out on both legs.

// ---------------------------------------------------------------------------------------------
// Capability flags (`int<4>` in the handshake; MariaDB adds 32 more bits, see below).
// ---------------------------------------------------------------------------------------------

/// Use the improved old password hashing. MariaDB repurposes this bit as `CLIENT_MYSQL`: a server
/// that clears it is MariaDB and sends extended capabilities in the greeting's reserved bytes.
pub const CLIENT_LONG_PASSWORD: u32 = 1;
/// MariaDB's name for bit 0: set by MySQL servers and clients, cleared by MariaDB.
pub const CLIENT_MYSQL: u32 = 1;
/// Report rows matched rather than rows changed in OK's `affected_rows`.
pub const CLIENT_FOUND_ROWS: u32 = 1 << 1;
/// Get all column flags.
pub const CLIENT_LONG_FLAG: u32 = 1 << 2;
/// The handshake response carries an initial database.
pub const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
/// Disallow `database.table.column`.
pub const CLIENT_NO_SCHEMA: u32 = 1 << 4;
/// Compressed protocol (changes framing: never negotiated by poolguard).
pub const CLIENT_COMPRESS: u32 = 1 << 5;
/// ODBC client (no effect).
pub const CLIENT_ODBC: u32 = 1 << 6;
/// `LOAD DATA LOCAL INFILE` allowed: the server may answer a query with a 0xFB request.
pub const CLIENT_LOCAL_FILES: u32 = 1 << 7;
/// Ignore spaces before '('.
pub const CLIENT_IGNORE_SPACE: u32 = 1 << 8;
/// The 4.1 protocol: required by poolguard (pre-4.1 clients are refused).
pub const CLIENT_PROTOCOL_41: u32 = 1 << 9;
/// `wait_timeout` is `interactive_timeout` for this session.
pub const CLIENT_INTERACTIVE: u32 = 1 << 10;
/// Switch to TLS after the (short) SSL request packet.
pub const CLIENT_SSL: u32 = 1 << 11;
/// Do not issue SIGPIPE (client-side only).
pub const CLIENT_IGNORE_SIGPIPE: u32 = 1 << 12;
/// OK packets carry status flags even before 4.1.
pub const CLIENT_TRANSACTIONS: u32 = 1 << 13;
/// Old 4.1 flag, unused.
pub const CLIENT_RESERVED: u32 = 1 << 14;
/// 4.1 authentication: the auth response is length-prefixed (1 byte).
pub const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
/// Several statements per COM_QUERY.
pub const CLIENT_MULTI_STATEMENTS: u32 = 1 << 16;
/// Several result sets per COM_QUERY (needed for CALL).
pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
/// Several result sets per COM_STMT_EXECUTE.
pub const CLIENT_PS_MULTI_RESULTS: u32 = 1 << 18;
/// Pluggable authentication: plugin names in greeting, response and auth switch.
pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
/// Connection attributes in the handshake response.
pub const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
/// The auth response is a `string<lenenc>` (longer than 255 bytes allowed).
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
/// The client can handle expired passwords (sandbox mode).
pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
/// OK packets carry session state change information.
pub const CLIENT_SESSION_TRACK: u32 = 1 << 23;
/// Result sets end with an OK packet (0xFE header) instead of EOF; no EOF after column definitions.
pub const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
/// MySQL 8: result set metadata may be omitted (adds a byte to the column count packet).
pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
/// MySQL 8.0.18: zstd compression level in the handshake response.
pub const CLIENT_ZSTD_COMPRESSION_ALGORITHM: u32 = 1 << 26;
/// MySQL 8.0.23: COM_QUERY / COM_STMT_EXECUTE carry query attributes (changes request format).
pub const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
/// MySQL 8.0.27: multi-factor authentication.
pub const MULTI_FACTOR_AUTHENTICATION: u32 = 1 << 28;
/// Capability extension (reserved).
pub const CLIENT_CAPABILITY_EXTENSION: u32 = 1 << 29;
/// Verify the server certificate (client-side only).
pub const CLIENT_SSL_VERIFY_SERVER_CERT: u32 = 1 << 30;
/// Do not reset options after a failed connect (client-side only).
pub const CLIENT_REMEMBER_OPTIONS: u32 = 1 << 31;

// MariaDB extended capabilities: the upper 32 bits, sent as a separate `int<4>` in the last four
// reserved bytes of the greeting and of the handshake response when CLIENT_MYSQL is clear. Values
// here are relative to that `int<4>` (i.e. already shifted right by 32).

/// MariaDB: progress reports (ERR packets with code 0xFFFF) during long statements.
pub const MARIADB_CLIENT_PROGRESS: u32 = 1;
/// MariaDB: COM_MULTI (never used in practice).
pub const MARIADB_CLIENT_COM_MULTI: u32 = 1 << 1;
/// MariaDB: COM_STMT_BULK_EXECUTE.
pub const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u32 = 1 << 2;
/// MariaDB 10.5: extended type info in column definitions (changes column definition format).
pub const MARIADB_CLIENT_EXTENDED_TYPE_INFO: u32 = 1 << 3;
/// MariaDB 10.6: metadata caching for prepared statements (adds a byte to column count packets).
pub const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;

/// Capabilities that change what packets look like. A relay must ensure both legs agree on them
/// (the simplest way: offer clients only what the server leg negotiated, minus
/// [`UNSUPPORTED_CAPABILITIES`]).
pub const WIRE_FORMAT_CAPABILITIES: u32 = CLIENT_PROTOCOL_41
    | CLIENT_COMPRESS
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF
    | CLIENT_OPTIONAL_RESULTSET_METADATA
    | CLIENT_QUERY_ATTRIBUTES
    | CLIENT_TRANSACTIONS;

/// Capabilities poolguard never negotiates: compression changes the framing, optional metadata
/// adds a byte to the column count packet that [`crate::tracker`] does not handle, query
/// attributes change the COM_QUERY format, and the others need client-side features the proxy
/// cannot provide. See also [`UNSUPPORTED_MARIADB_CAPABILITIES`].
pub const UNSUPPORTED_CAPABILITIES: u32 = CLIENT_COMPRESS
    | CLIENT_OPTIONAL_RESULTSET_METADATA
    | CLIENT_ZSTD_COMPRESSION_ALGORITHM
    | CLIENT_QUERY_ATTRIBUTES
    | MULTI_FACTOR_AUTHENTICATION
    | CLIENT_CAPABILITY_EXTENSION;

/// MariaDB extended capabilities poolguard does not negotiate. Metadata caching makes a client
/// reuse the column definitions it got when it prepared a statement, while under transaction
/// pooling another server may execute it (the tracker still understands the format, see
/// `ResponseTracker::with_mariadb_capabilities`, e.g. for session pooling); COM_MULTI and extended
/// type info are not relayed.
pub const UNSUPPORTED_MARIADB_CAPABILITIES: u32 =
    MARIADB_CLIENT_COM_MULTI | MARIADB_CLIENT_EXTENDED_TYPE_INFO | MARIADB_CLIENT_CACHE_METADATA;

// ---------------------------------------------------------------------------------------------
// Server status flags (`int<2>` in OK and EOF packets).
// ---------------------------------------------------------------------------------------------

/// A transaction is open (explicitly, or implicitly with autocommit off).
pub const SERVER_STATUS_IN_TRANS: u16 = 1;
/// Autocommit is on.
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 2;
/// Another result set follows this one (multi-statement, CALL).
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 8;
/// The query used a bad index.
pub const SERVER_QUERY_NO_GOOD_INDEX_USED: u16 = 16;
/// The query used no index.
pub const SERVER_QUERY_NO_INDEX_USED: u16 = 32;
/// COM_STMT_EXECUTE opened a cursor: rows come with COM_STMT_FETCH.
pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 64;
/// The last row of a cursor was sent.
pub const SERVER_STATUS_LAST_ROW_SENT: u16 = 128;
/// A database was dropped.
pub const SERVER_STATUS_DB_DROPPED: u16 = 256;
/// `NO_BACKSLASH_ESCAPES` sql_mode is active (matters to client-side escaping).
pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 512;
/// Prepared statement metadata changed since prepare.
pub const SERVER_STATUS_METADATA_CHANGED: u16 = 1024;
/// The query was slow.
pub const SERVER_QUERY_WAS_SLOW: u16 = 2048;
/// The result set holds OUT parameters of a CALL.
pub const SERVER_PS_OUT_PARAMS: u16 = 4096;
/// A read-only transaction is open.
pub const SERVER_STATUS_IN_TRANS_READONLY: u16 = 8192;
/// Session state changed (details in the OK packet under CLIENT_SESSION_TRACK).
pub const SERVER_SESSION_STATE_CHANGED: u16 = 1 << 14;

// ---------------------------------------------------------------------------------------------
// Command bytes (first byte of a client packet in the command phase).
// ---------------------------------------------------------------------------------------------

/// Internal server state, never sent by clients.
pub const COM_SLEEP: u8 = 0x00;
/// Close the connection. No response.
pub const COM_QUIT: u8 = 0x01;
/// Change the default database. OK or ERR.
pub const COM_INIT_DB: u8 = 0x02;
/// Text query. OK, ERR, LOCAL INFILE request or text result set(s).
pub const COM_QUERY: u8 = 0x03;
/// Column definitions of a table (deprecated). Column definitions then EOF, or ERR.
pub const COM_FIELD_LIST: u8 = 0x04;
/// Deprecated `CREATE DATABASE`.
pub const COM_CREATE_DB: u8 = 0x05;
/// Deprecated `DROP DATABASE`.
pub const COM_DROP_DB: u8 = 0x06;
/// `FLUSH` (deprecated). OK or ERR.
pub const COM_REFRESH: u8 = 0x07;
/// Shutdown the server (deprecated). EOF/OK or ERR.
pub const COM_SHUTDOWN: u8 = 0x08;
/// Human-readable statistics: a single packet that is a plain string, not an OK.
pub const COM_STATISTICS: u8 = 0x09;
/// `SHOW PROCESSLIST` (deprecated). Result set or ERR.
pub const COM_PROCESS_INFO: u8 = 0x0a;
/// Internal.
pub const COM_CONNECT: u8 = 0x0b;
/// `KILL` (deprecated). OK or ERR.
pub const COM_PROCESS_KILL: u8 = 0x0c;
/// Dump debug info to the server log. EOF/OK or ERR.
pub const COM_DEBUG: u8 = 0x0d;
/// Liveness check. OK.
pub const COM_PING: u8 = 0x0e;
/// Internal.
pub const COM_TIME: u8 = 0x0f;
/// Internal.
pub const COM_DELAYED_INSERT: u8 = 0x10;
/// Re-authenticate as another user; resets session state. Auth exchange then OK or ERR.
pub const COM_CHANGE_USER: u8 = 0x11;
/// Replication: binlog stream (not relayed by poolguard).
pub const COM_BINLOG_DUMP: u8 = 0x12;
/// Replication.
pub const COM_TABLE_DUMP: u8 = 0x13;
/// Internal.
pub const COM_CONNECT_OUT: u8 = 0x14;
/// Replication: register a replica.
pub const COM_REGISTER_SLAVE: u8 = 0x15;
/// Prepare a statement. STMT_PREPARE_OK + parameter and column definitions, or ERR.
pub const COM_STMT_PREPARE: u8 = 0x16;
/// Execute a prepared statement. Like COM_QUERY but rows use the binary protocol.
pub const COM_STMT_EXECUTE: u8 = 0x17;
/// Send a parameter's data in chunks. No response.
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
/// Deallocate a prepared statement. No response.
pub const COM_STMT_CLOSE: u8 = 0x19;
/// Reset a statement's long data and cursor. OK or ERR.
pub const COM_STMT_RESET: u8 = 0x1a;
/// Enable/disable multi-statements. EOF (OK under DEPRECATE_EOF) or ERR.
pub const COM_SET_OPTION: u8 = 0x1b;
/// Fetch rows from a cursor. Binary rows then EOF/OK, or ERR.
pub const COM_STMT_FETCH: u8 = 0x1c;
/// Internal.
pub const COM_DAEMON: u8 = 0x1d;
/// Replication: GTID binlog stream.
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
/// Reset session state without re-authenticating. OK or ERR.
pub const COM_RESET_CONNECTION: u8 = 0x1f;
/// MySQL 8.0.23: clone plugin.
pub const COM_CLONE: u8 = 0x20;
/// MariaDB: COM_MULTI (unused in practice).
pub const COM_MULTI: u8 = 0xfe;
/// MariaDB: bulk execution of a prepared statement (array binding). Like COM_STMT_EXECUTE.
pub const COM_STMT_BULK_EXECUTE: u8 = 0xfa;

/// A short name for logs and metrics (`"COM_QUERY"`), or `"COM_UNKNOWN"`.
pub fn command_name(cmd: u8) -> &'static str {
    match cmd {
        COM_SLEEP => "COM_SLEEP",
        COM_QUIT => "COM_QUIT",
        COM_INIT_DB => "COM_INIT_DB",
        COM_QUERY => "COM_QUERY",
        COM_FIELD_LIST => "COM_FIELD_LIST",
        COM_CREATE_DB => "COM_CREATE_DB",
        COM_DROP_DB => "COM_DROP_DB",
        COM_REFRESH => "COM_REFRESH",
        COM_SHUTDOWN => "COM_SHUTDOWN",
        COM_STATISTICS => "COM_STATISTICS",
        COM_PROCESS_INFO => "COM_PROCESS_INFO",
        COM_CONNECT => "COM_CONNECT",
        COM_PROCESS_KILL => "COM_PROCESS_KILL",
        COM_DEBUG => "COM_DEBUG",
        COM_PING => "COM_PING",
        COM_TIME => "COM_TIME",
        COM_DELAYED_INSERT => "COM_DELAYED_INSERT",
        COM_CHANGE_USER => "COM_CHANGE_USER",
        COM_BINLOG_DUMP => "COM_BINLOG_DUMP",
        COM_TABLE_DUMP => "COM_TABLE_DUMP",
        COM_CONNECT_OUT => "COM_CONNECT_OUT",
        COM_REGISTER_SLAVE => "COM_REGISTER_SLAVE",
        COM_STMT_PREPARE => "COM_STMT_PREPARE",
        COM_STMT_EXECUTE => "COM_STMT_EXECUTE",
        COM_STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
        COM_STMT_CLOSE => "COM_STMT_CLOSE",
        COM_STMT_RESET => "COM_STMT_RESET",
        COM_SET_OPTION => "COM_SET_OPTION",
        COM_STMT_FETCH => "COM_STMT_FETCH",
        COM_DAEMON => "COM_DAEMON",
        COM_BINLOG_DUMP_GTID => "COM_BINLOG_DUMP_GTID",
        COM_RESET_CONNECTION => "COM_RESET_CONNECTION",
        COM_CLONE => "COM_CLONE",
        COM_MULTI => "COM_MULTI",
        COM_STMT_BULK_EXECUTE => "COM_STMT_BULK_EXECUTE",
        _ => "COM_UNKNOWN",
    }
}

// ---------------------------------------------------------------------------------------------
// Packet headers (first payload byte of server packets).
// ---------------------------------------------------------------------------------------------

/// OK packet (also STMT_PREPARE_OK and the first byte of binary rows).
pub const OK_HEADER: u8 = 0x00;
/// AuthMoreData during authentication.
pub const AUTH_MORE_DATA_HEADER: u8 = 0x01;
/// LOCAL INFILE request (and NULL in lenenc contexts).
pub const LOCAL_INFILE_HEADER: u8 = 0xfb;
/// EOF packet, OK packet under DEPRECATE_EOF, AuthSwitchRequest during authentication.
pub const EOF_HEADER: u8 = 0xfe;
/// ERR packet.
pub const ERR_HEADER: u8 = 0xff;

// ---------------------------------------------------------------------------------------------
// Error codes. SQLSTATEs are MySQL's defaults for the code; [`default_sqlstate`] returns them.
// ---------------------------------------------------------------------------------------------

/// 1040 (08004) "Too many connections". poolguard: acquire deadline passed, pool full.
pub const ER_CON_COUNT_ERROR: u16 = 1040;
/// 1043 (08S01) "Bad handshake".
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
/// 1044 (42000) "Access denied for user to database".
pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
/// 1045 (28000) "Access denied for user (using password: YES)". poolguard: authentication failed.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// 1047 (08S01) "Unknown command". poolguard: protocol violation, unsupported command.
pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
/// 1049 (42000) "Unknown database".
pub const ER_BAD_DB_ERROR: u16 = 1049;
/// 1053 (08S01) "Server shutdown in progress". poolguard: backend unavailable, circuit open, or
/// the proxy is draining.
pub const ER_SERVER_SHUTDOWN: u16 = 1053;
/// 1153 (08S01) "Got a packet bigger than 'max_allowed_packet' bytes".
pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
/// 1158 (08S01) "Got an error reading communication packets".
pub const ER_NET_READ_ERROR: u16 = 1158;
/// 1159 (08S01) "Got timeout reading communication packets".
pub const ER_NET_READ_INTERRUPTED: u16 = 1159;
/// 1203 (42000) "User already has more than 'max_user_connections' active connections".
/// poolguard: client refused (too many clients, queue full, rate limited).
pub const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
/// 1205 (HY000) "Lock wait timeout exceeded; try restarting transaction". poolguard: a transaction
/// left idle too long was rolled back and its server reclaimed.
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// 1243 (HY000) "Unknown prepared statement handler".
pub const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
/// 1251 (08004) "Client does not support authentication protocol requested by server".
pub const ER_NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
/// 1317 (70100) "Query execution was interrupted" (KILL QUERY), both servers.
pub const ER_QUERY_INTERRUPTED: u16 = 1317;
/// 1927 (70100) MariaDB "Connection was killed".
pub const ER_CONNECTION_KILLED: u16 = 1927;
/// 1969 (70100) MariaDB `ER_STATEMENT_TIMEOUT`: "Query execution was interrupted
/// (max_statement_time exceeded)". MariaDB's counterpart of MySQL's 3024, which MariaDB reserves
/// as `ER_UNUSED_1` ("You should never see it"; checked with MariaDB 10.11's `perror` and a real
/// `max_statement_time` timeout). poolguard should therefore send 1969 to clients of a MariaDB
/// backend and 3024 to clients of a MySQL backend when a query exceeds its timeout.
pub const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// 3024 (HY000) MySQL `ER_QUERY_TIMEOUT`: "Query execution was interrupted, maximum statement
/// execution time exceeded". See [`ER_STATEMENT_TIMEOUT`] for MariaDB.
pub const ER_QUERY_TIMEOUT: u16 = 3024;
/// 4031 (HY000) MySQL 8.0.24+ "The client was disconnected by the server because of inactivity".
pub const ER_CLIENT_INTERACTION_TIMEOUT: u16 = 4031;

/// The SQLSTATE a server pairs with `code`, for the codes above; "HY000" (general error) otherwise.
pub fn default_sqlstate(code: u16) -> &'static str {
    match code {
        ER_CON_COUNT_ERROR | ER_NOT_SUPPORTED_AUTH_MODE => "08004",
        ER_HANDSHAKE_ERROR
        | ER_UNKNOWN_COM_ERROR
        | ER_SERVER_SHUTDOWN
        | ER_NET_PACKET_TOO_LARGE
        | ER_NET_READ_ERROR
        | ER_NET_READ_INTERRUPTED => "08S01",
        ER_ACCESS_DENIED_ERROR => "28000",
        ER_DBACCESS_DENIED_ERROR | ER_BAD_DB_ERROR | ER_TOO_MANY_USER_CONNECTIONS => "42000",
        ER_QUERY_INTERRUPTED | ER_CONNECTION_KILLED | ER_STATEMENT_TIMEOUT => "70100",
        _ => "HY000",
    }
}

/// MariaDB progress reports reuse the ERR header with this code; they are not errors.
pub const PROGRESS_REPORT_CODE: u16 = 0xffff;

/// The default charset/collation poolguard announces: `utf8mb4_general_ci` (45), understood by
/// every MySQL >= 5.5 and MariaDB server and client.
pub const DEFAULT_COLLATION: u8 = 45;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_the_documented_values() {
        assert_eq!(CLIENT_PROTOCOL_41, 0x0200);
        assert_eq!(CLIENT_SSL, 0x0800);
        assert_eq!(CLIENT_SECURE_CONNECTION, 0x8000);
        assert_eq!(CLIENT_PLUGIN_AUTH, 0x0008_0000);
        assert_eq!(CLIENT_DEPRECATE_EOF, 0x0100_0000);
        assert_eq!(SERVER_MORE_RESULTS_EXISTS, 8);
        assert_eq!(COM_RESET_CONNECTION, 0x1f);
        assert_eq!(COM_STMT_EXECUTE, 0x17);
        assert_eq!(SERVER_SESSION_STATE_CHANGED, 0x4000);
    }

    #[test]
    fn sqlstates_and_names() {
        assert_eq!(default_sqlstate(ER_CON_COUNT_ERROR), "08004");
        assert_eq!(default_sqlstate(ER_ACCESS_DENIED_ERROR), "28000");
        assert_eq!(default_sqlstate(ER_TOO_MANY_USER_CONNECTIONS), "42000");
        assert_eq!(default_sqlstate(ER_STATEMENT_TIMEOUT), "70100");
        assert_eq!(default_sqlstate(ER_QUERY_TIMEOUT), "HY000");
        assert_eq!(default_sqlstate(12345), "HY000");
        assert_eq!(command_name(COM_QUERY), "COM_QUERY");
        assert_eq!(command_name(0x99), "COM_UNKNOWN");
    }

    #[test]
    fn unsupported_sets_exclude_what_the_tracker_needs() {
        assert_eq!(UNSUPPORTED_CAPABILITIES & CLIENT_DEPRECATE_EOF, 0);
        assert_eq!(UNSUPPORTED_CAPABILITIES & CLIENT_PROTOCOL_41, 0);
        assert_ne!(UNSUPPORTED_CAPABILITIES & CLIENT_COMPRESS, 0);
        assert_eq!(
            UNSUPPORTED_MARIADB_CAPABILITIES & MARIADB_CLIENT_PROGRESS,
            0
        );
    }
}
