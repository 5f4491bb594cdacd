//! Message type bytes of protocol 3, split by direction: the same byte means different messages
//! depending on who sends it (`b'S'` is Sync from a client, ParameterStatus from a server).
//!
//! Invariant: values are exactly those of the PostgreSQL documentation, "Message Formats".

/// Bytes that start messages a client (frontend) sends.
pub mod frontend {
    /// Query: simple-protocol SQL text.
    pub const QUERY: u8 = b'Q';
    /// Parse: create a prepared statement (extended protocol).
    pub const PARSE: u8 = b'P';
    /// Bind: create a portal from a prepared statement.
    pub const BIND: u8 = b'B';
    /// Execute: run a portal.
    pub const EXECUTE: u8 = b'E';
    /// Describe: ask for a statement's or portal's description.
    pub const DESCRIBE: u8 = b'D';
    /// Close: close a statement or portal.
    pub const CLOSE: u8 = b'C';
    /// Sync: end of an extended-protocol batch; the server answers ReadyForQuery.
    pub const SYNC: u8 = b'S';
    /// Flush: ask the server to send what it has buffered.
    pub const FLUSH: u8 = b'H';
    /// Terminate: the client is closing the connection.
    pub const TERMINATE: u8 = b'X';
    /// CopyData: a chunk of COPY FROM STDIN data.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone: end of COPY FROM STDIN data.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail: the client aborts COPY FROM STDIN.
    pub const COPY_FAIL: u8 = b'f';
    /// PasswordMessage, and also SASLInitialResponse, SASLResponse and GSSResponse: the meaning
    /// depends on the authentication request being answered.
    pub const PASSWORD: u8 = b'p';
    /// FunctionCall: the legacy fast-path function call.
    pub const FUNCTION_CALL: u8 = b'F';
}

/// Bytes that start messages a server (backend) sends.
pub mod backend {
    /// Authentication request or result (AuthenticationOk, ...SASL, ...MD5Password, ...).
    pub const AUTHENTICATION: u8 = b'R';
    /// ParameterStatus: a run-time parameter's current value.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// BackendKeyData: process id and secret key for CancelRequest.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// ReadyForQuery: the server is idle; carries the transaction status.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// CommandComplete: a command's completion tag.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// RowDescription: the columns of the rows to follow.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// DataRow: one row.
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse: the query string was empty.
    pub const EMPTY_QUERY: u8 = b'I';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// NoData: the statement or portal returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// PortalSuspended: Execute's row limit was reached.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ParameterDescription: a statement's parameter types.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// CopyInResponse: the server is ready for COPY FROM STDIN data.
    pub const COPY_IN: u8 = b'G';
    /// CopyOutResponse: COPY TO STDOUT data follows.
    pub const COPY_OUT: u8 = b'H';
    /// CopyBothResponse: streaming replication's two-way copy.
    pub const COPY_BOTH: u8 = b'W';
    /// CopyData: a chunk of COPY TO STDOUT data.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone: end of COPY TO STDOUT data.
    pub const COPY_DONE: u8 = b'c';
    /// NotificationResponse: a LISTEN channel fired.
    pub const NOTIFICATION: u8 = b'A';
    /// NegotiateProtocolVersion: the server supports an older minor or not all `_pq_` options.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// FunctionCallResponse: result of a FunctionCall.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
}
