//! Where does a command's response end? A state machine the relay feeds every server packet of
//! one command's response; it answers [`Progress::More`] until the response is complete, then
//! [`Progress::Done`] with the final status flags (whether a transaction is still open decides
//! whether a pooled server can be released) or the error code.
//!
//! Shapes handled (`*` = repeated, `(EOF)` = omitted under CLIENT_DEPRECATE_EOF):
//! - COM_QUERY, COM_PROCESS_INFO: OK | ERR | LOCAL INFILE request (0xFB, then OK | ERR after the
//!   client's data) | column count, column definition*, (EOF), text row*, EOF-or-OK | ERR.
//!   An OK/EOF carrying SERVER_MORE_RESULTS_EXISTS means another result follows (multi-statement,
//!   CALL), which starts over.
//! - COM_STMT_EXECUTE, COM_STMT_BULK_EXECUTE: the same with binary rows (first byte 0x00). With a
//!   cursor the rows do not follow: the end marker after the column definitions carries
//!   SERVER_STATUS_CURSOR_EXISTS (an EOF, or under DEPRECATE_EOF an OK with 0xFE header) and the
//!   response is complete there. COM_STMT_FETCH: binary row*, EOF-or-OK | ERR.
//! - COM_STMT_PREPARE: ERR | STMT_PREPARE_OK, parameter definition*, (EOF), column definition*,
//!   (EOF) (each block only when its count is non-zero).
//! - COM_FIELD_LIST: column definition*, EOF-or-OK | ERR.
//! - COM_CHANGE_USER: OK | ERR | AuthSwitchRequest / AuthMoreData, answered by the client
//!   ([`Progress::AuthContinue`]), repeated until OK | ERR.
//! - COM_STATISTICS: one packet, a bare string.
//! - COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA: no response at all; the tracker is done
//!   from the start ([`expects_response`] is false) and feeding it is an error.
//! - Everything else (PING, INIT_DB, RESET_CONNECTION, STMT_RESET, SET_OPTION, ...): one OK | ERR
//!   | EOF.
//!
//! The 0xFE ambiguity: a packet starting with 0xFE ends a row or column block only if shorter
//! than 9 bytes (shorter than 16 MiB - 1 under DEPRECATE_EOF, see [`is_end_marker`]); a longer one
//! is a text row whose first value is at least 16 MiB. ERR (0xFF) is recognised anywhere: no row,
//! column definition or column count can start with 0xFF. MariaDB progress reports (ERR with code
//! 0xFFFF) are not errors and never end a response.
//!
//! Input: logical payloads ([`crate::packet::PacketCodec`]) via [`ResponseTracker::feed`], or
//! physical frames ([`crate::packet::FrameDecoder`]) via [`ResponseTracker::feed_frame`], which
//! only looks at the first frame of each packet (that frame is 0xFFFFFF bytes exactly when the
//! packet is long, which is all the 0xFE rule needs).
//!
//! Not supported (poolguard does not negotiate them, see `crate::consts::UNSUPPORTED_CAPABILITIES`):
//! MySQL's CLIENT_OPTIONAL_RESULTSET_METADATA; a column count packet with trailing bytes is
//! rejected. MariaDB's MARIADB_CLIENT_CACHE_METADATA is handled when announced with
//! [`ResponseTracker::with_mariadb_capabilities`].

use crate::auth::CACHING_SHA2_FAST_AUTH_SUCCESS;
use crate::consts::{
    AUTH_MORE_DATA_HEADER, CLIENT_DEPRECATE_EOF, COM_CHANGE_USER, COM_FIELD_LIST, COM_PROCESS_INFO,
    COM_QUERY, COM_QUIT, COM_STATISTICS, COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE,
    COM_STMT_FETCH, COM_STMT_PREPARE, COM_STMT_SEND_LONG_DATA, EOF_HEADER, ERR_HEADER,
    LOCAL_INFILE_HEADER, MARIADB_CLIENT_CACHE_METADATA, OK_HEADER, PROGRESS_REPORT_CODE,
    SERVER_MORE_RESULTS_EXISTS, SERVER_STATUS_CURSOR_EXISTS,
};
use crate::lenenc::Reader;
use crate::packet::Frame;
use crate::response::{end_marker_status, err_code, is_end_marker, ok_status_flags};
use crate::stmt::StmtPrepareOk;
use crate::DecodeError;

/// What the tracker concluded from the packet it was just fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The response continues: relay this packet and keep reading from the server.
    More,
    /// The response is complete with this packet.
    Done {
        /// Status flags of the final OK/EOF; `None` after an ERR, or when the response has none
        /// (COM_STMT_PREPARE under DEPRECATE_EOF, COM_STATISTICS): the status is then unchanged,
        /// see [`ResponseTracker::last_status_flags`] for the last one seen in this response.
        status_flags: Option<u16>,
        /// Error code when the response ended with an ERR packet.
        error: Option<u16>,
    },
    /// The server asks for a LOCAL INFILE: relay the client's file packets (ending with an empty
    /// one) to the server, then keep feeding the server's answer (OK | ERR) to this tracker.
    LocalInfileRequested,
    /// COM_CHANGE_USER: the server asks for more authentication data; relay the client's next
    /// packet, then keep feeding the server's answer.
    AuthContinue,
}

/// False for commands the server never answers (COM_QUIT, COM_STMT_CLOSE,
/// COM_STMT_SEND_LONG_DATA): the relay must not wait for a response to them.
pub fn expects_response(command: u8) -> bool {
    !matches!(command, COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA)
}

/// What follows a block of column (or parameter) definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Rows of a result set.
    Rows,
    /// The column definitions of a prepare response (after its parameter definitions).
    PrepareColumns(u16),
    /// Nothing: the response is complete.
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// First packet of a (next) result: OK, ERR, LOCAL INFILE request or column count.
    ResultStart,
    /// Column or parameter definitions still to come.
    Defs { remaining: u64, next: Next },
    /// The EOF after a definition block (not under DEPRECATE_EOF).
    DefsEof { next: Next },
    /// Rows until an end marker or ERR.
    Rows,
    /// First packet of a prepare response.
    PrepareOk,
    /// COM_FIELD_LIST: column definitions until an end marker.
    FieldList,
    /// A single OK, ERR or EOF.
    Single,
    /// A single packet of any shape (COM_STATISTICS).
    Opaque,
    /// Authentication exchange of COM_CHANGE_USER.
    ChangeUser,
    /// Complete.
    Done,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::ResultStart => "OK, ERR, LOCAL INFILE request or column count",
            State::Defs { .. } => "a column definition",
            State::DefsEof { .. } => "EOF after column definitions",
            State::Rows => "a row, EOF/OK or ERR",
            State::PrepareOk => "STMT_PREPARE_OK or ERR",
            State::FieldList => "a column definition, EOF or ERR",
            State::Single => "OK, ERR or EOF",
            State::Opaque => "any packet",
            State::ChangeUser => "OK, ERR, AuthSwitchRequest or AuthMoreData",
            State::Done => "nothing (response complete)",
        }
    }
}

/// Tracks one command's response (see the module docs).
#[derive(Debug, Clone)]
pub struct ResponseTracker {
    command: u8,
    capabilities: u32,
    mariadb_capabilities: u32,
    binary: bool,
    state: State,
    last_status: Option<u16>,
    prepare_ok: Option<StmtPrepareOk>,
    rows: u64,
    result_sets: u32,
}

impl ResponseTracker {
    /// A tracker for the response to `command` (the first byte of the client's packet), on a
    /// connection with the negotiated `capabilities`.
    pub fn new(command: u8, capabilities: u32) -> Self {
        let state = match command {
            COM_QUERY | COM_PROCESS_INFO | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => {
                State::ResultStart
            }
            COM_STMT_FETCH => State::Rows,
            COM_STMT_PREPARE => State::PrepareOk,
            COM_FIELD_LIST => State::FieldList,
            COM_STATISTICS => State::Opaque,
            COM_CHANGE_USER => State::ChangeUser,
            c if !expects_response(c) => State::Done,
            _ => State::Single,
        };
        ResponseTracker {
            command,
            capabilities,
            mariadb_capabilities: 0,
            binary: matches!(
                command,
                COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE | COM_STMT_FETCH
            ),
            state,
            last_status: None,
            prepare_ok: None,
            rows: 0,
            result_sets: 0,
        }
    }

    /// A tracker for the command in `payload` (the client's packet); `None` for an empty payload.
    pub fn for_command(payload: &[u8], capabilities: u32) -> Option<Self> {
        payload
            .first()
            .map(|&command| ResponseTracker::new(command, capabilities))
    }

    /// Declares the MariaDB extended capabilities negotiated on the connection (only
    /// MARIADB_CLIENT_CACHE_METADATA changes what the tracker expects).
    pub fn with_mariadb_capabilities(mut self, mariadb_capabilities: u32) -> Self {
        self.mariadb_capabilities = mariadb_capabilities;
        self
    }

    /// The command this tracker follows.
    pub fn command(&self) -> u8 {
        self.command
    }

    /// True once the response is complete (immediately for commands without a response).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The last status flags seen in this response (from any OK or EOF, including intermediate
    /// results of a multi-result response that later failed).
    pub fn last_status_flags(&self) -> Option<u16> {
        self.last_status
    }

    /// The STMT_PREPARE_OK of a COM_STMT_PREPARE response, once seen.
    pub fn prepare_ok(&self) -> Option<&StmtPrepareOk> {
        self.prepare_ok.as_ref()
    }

    /// Rows seen so far (all result sets together).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Result sets (with columns) seen so far.
    pub fn result_sets(&self) -> u32 {
        self.result_sets
    }

    /// Feeds one physical frame: continuation frames of a split packet are relayed without
    /// inspection; the first frame of each packet is fed as in [`ResponseTracker::feed`].
    pub fn feed_frame(&mut self, frame: &Frame) -> Result<Progress, DecodeError> {
        self.feed_chunk(frame.payload(), frame.is_continuation)
    }

    /// [`ResponseTracker::feed_frame`] for a frame held elsewhere: `payload` is the physical
    /// packet's payload, `is_continuation` whether it continues a split packet.
    pub fn feed_chunk(
        &mut self,
        payload: &[u8],
        is_continuation: bool,
    ) -> Result<Progress, DecodeError> {
        if is_continuation {
            if self.state == State::Done {
                return Err(DecodeError::ResponseComplete);
            }
            return Ok(Progress::More);
        }
        self.feed(payload)
    }

    /// Feeds the next server payload of the response.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        if payload.first() == Some(&ERR_HEADER) && self.state != State::Done {
            return self.on_err(payload);
        }
        match self.state {
            State::Done => Err(DecodeError::ResponseComplete),
            State::ResultStart => self.on_result_start(payload),
            State::Defs { remaining, next } => self.on_definition(payload, remaining, next),
            State::DefsEof { next } => self.on_definitions_eof(payload, next),
            State::Rows => self.on_row(payload),
            State::PrepareOk => self.on_prepare_ok(payload),
            State::FieldList => self.on_field_list(payload),
            State::Single => self.on_single(payload),
            State::Opaque => Ok(self.done(None, None)),
            State::ChangeUser => self.on_change_user(payload),
        }
    }

    /// ERR is valid in every state: no row, definition or column count starts with 0xFF.
    fn on_err(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        let code = err_code(payload)?;
        if code == PROGRESS_REPORT_CODE {
            // MariaDB progress report: informational, the statement is still running.
            return Ok(Progress::More);
        }
        Ok(self.done(None, Some(code)))
    }

    fn on_result_start(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        match payload.first() {
            Some(&OK_HEADER) => {
                let status = ok_status_flags(payload, self.capabilities)?;
                Ok(self.end_of_result(status))
            }
            Some(&LOCAL_INFILE_HEADER) if self.command == COM_QUERY => {
                Ok(Progress::LocalInfileRequested)
            }
            Some(&EOF_HEADER) | Some(&LOCAL_INFILE_HEADER) | None => Err(self.unexpected(payload)),
            Some(_) => {
                let mut r = Reader::new(payload);
                let count = r.lenenc_int("column count")?;
                let metadata_follows =
                    if self.mariadb_capabilities & MARIADB_CLIENT_CACHE_METADATA != 0 {
                        r.u8("metadata follows flag")? != 0
                    } else {
                        true
                    };
                if !r.is_empty() {
                    return Err(DecodeError::Malformed {
                        what: "column count packet",
                        detail: "trailing bytes (optional result set metadata is not supported)",
                    });
                }
                if count == 0 {
                    return Err(DecodeError::Malformed {
                        what: "column count packet",
                        detail: "zero columns",
                    });
                }
                self.result_sets = self.result_sets.saturating_add(1);
                if !metadata_follows {
                    return Ok(self.after_defs(Next::Rows));
                }
                self.state = State::Defs {
                    remaining: count,
                    next: Next::Rows,
                };
                Ok(Progress::More)
            }
        }
    }

    fn on_definition(
        &mut self,
        payload: &[u8],
        remaining: u64,
        next: Next,
    ) -> Result<Progress, DecodeError> {
        if payload.is_empty() || is_end_marker(payload, self.capabilities) {
            return Err(self.unexpected(payload));
        }
        match remaining.checked_sub(1) {
            None | Some(0) => Ok(self.after_defs(next)),
            Some(left) => {
                self.state = State::Defs {
                    remaining: left,
                    next,
                };
                Ok(Progress::More)
            }
        }
    }

    fn on_definitions_eof(&mut self, payload: &[u8], next: Next) -> Result<Progress, DecodeError> {
        if !is_end_marker(payload, self.capabilities) {
            return Err(self.unexpected(payload));
        }
        let status = end_marker_status(payload, self.capabilities)?;
        self.note_status(status);
        let cursor = status.is_some_and(|s| {
            s & SERVER_STATUS_CURSOR_EXISTS != 0 && s & SERVER_MORE_RESULTS_EXISTS == 0
        });
        if next == Next::Rows && self.binary && cursor {
            // Cursor opened: rows come later with COM_STMT_FETCH.
            return Ok(self.done(status, None));
        }
        Ok(self.enter(next))
    }

    fn on_row(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        if is_end_marker(payload, self.capabilities) {
            let status = end_marker_status(payload, self.capabilities)?;
            return Ok(self.end_of_result(status));
        }
        // Binary rows always start with 0x00; a text row is never empty.
        if payload.is_empty() || (self.binary && payload.first() != Some(&OK_HEADER)) {
            return Err(self.unexpected(payload));
        }
        self.rows = self.rows.saturating_add(1);
        Ok(Progress::More)
    }

    fn on_prepare_ok(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        if payload.first() != Some(&OK_HEADER) {
            return Err(self.unexpected(payload));
        }
        let ok = StmtPrepareOk::decode(payload)?;
        self.prepare_ok = Some(ok);
        if ok.num_params > 0 {
            self.state = State::Defs {
                remaining: u64::from(ok.num_params),
                next: Next::PrepareColumns(ok.num_columns),
            };
            return Ok(Progress::More);
        }
        Ok(self.enter(Next::PrepareColumns(ok.num_columns)))
    }

    fn on_field_list(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        if is_end_marker(payload, self.capabilities) {
            let status = end_marker_status(payload, self.capabilities)?;
            return Ok(self.done(status, None));
        }
        if payload.is_empty() {
            return Err(self.unexpected(payload));
        }
        Ok(Progress::More)
    }

    fn on_single(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        match payload.first() {
            Some(&OK_HEADER) => {
                let status = ok_status_flags(payload, self.capabilities)?;
                Ok(self.done(status, None))
            }
            Some(&EOF_HEADER) if is_end_marker(payload, self.capabilities) => {
                let status = end_marker_status(payload, self.capabilities)?;
                Ok(self.done(status, None))
            }
            _ => Err(self.unexpected(payload)),
        }
    }

    fn on_change_user(&mut self, payload: &[u8]) -> Result<Progress, DecodeError> {
        match payload.first() {
            Some(&OK_HEADER) => {
                let status = ok_status_flags(payload, self.capabilities)?;
                Ok(self.done(status, None))
            }
            // AuthSwitchRequest: MariaDB sends one for every COM_CHANGE_USER (a fresh nonce).
            Some(&EOF_HEADER) => Ok(Progress::AuthContinue),
            // caching_sha2 fast-auth success is followed by the OK, without a client turn.
            Some(&AUTH_MORE_DATA_HEADER)
                if payload.get(1..) == Some(&[CACHING_SHA2_FAST_AUTH_SUCCESS][..]) =>
            {
                Ok(Progress::More)
            }
            Some(&AUTH_MORE_DATA_HEADER) => Ok(Progress::AuthContinue),
            _ => Err(self.unexpected(payload)),
        }
    }

    /// The last definition of a block was seen.
    fn after_defs(&mut self, next: Next) -> Progress {
        if self.capabilities & CLIENT_DEPRECATE_EOF == 0 {
            self.state = State::DefsEof { next };
            Progress::More
        } else {
            self.enter(next)
        }
    }

    fn enter(&mut self, next: Next) -> Progress {
        match next {
            Next::Rows => {
                self.state = State::Rows;
                Progress::More
            }
            Next::PrepareColumns(0) | Next::Finish => self.done(self.last_status, None),
            Next::PrepareColumns(n) => {
                self.state = State::Defs {
                    remaining: u64::from(n),
                    next: Next::Finish,
                };
                Progress::More
            }
        }
    }

    /// An OK or end marker closed a result: another follows if the server says so.
    fn end_of_result(&mut self, status: Option<u16>) -> Progress {
        if status.is_some_and(|s| s & SERVER_MORE_RESULTS_EXISTS != 0) {
            self.note_status(status);
            self.state = State::ResultStart;
            return Progress::More;
        }
        self.done(status, None)
    }

    fn note_status(&mut self, status: Option<u16>) {
        if status.is_some() {
            self.last_status = status;
        }
    }

    fn done(&mut self, status_flags: Option<u16>, error: Option<u16>) -> Progress {
        self.note_status(status_flags);
        self.state = State::Done;
        Progress::Done {
            status_flags,
            error,
        }
    }

    fn unexpected(&self, payload: &[u8]) -> DecodeError {
        DecodeError::UnexpectedHeader {
            expected: self.state.name(),
            header: payload.first().copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests;
