//! A test-only fault switch: makes a session panic at a chosen point, to prove that whatever
//! it held fails closed (see [`crate::contain`]).
//!
//! Compiled into debug builds (what the end-to-end tests run) and into builds with the `faults`
//! cargo feature; a release build leaves it out. Even where compiled in, it is armed only by
//! the `POOLGUARD_FAULTS` environment variable at start: a comma-separated list of [`Point`]
//! names, each firing once, the first time a session reaches it. Left out, [`Faults`] is empty
//! and [`Faults::hit`] compiles to nothing.

/// Where a session can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// PostgreSQL: the server reported a transaction open (ReadyForQuery 'T') after the
    /// client's statements, before the client hears of it.
    PgInTransaction,
    /// PostgreSQL: COPY FROM STDIN, relaying the client's data to the server.
    PgCopyIn,
    /// PostgreSQL: COPY TO STDOUT, relaying the server's data to the client.
    PgCopyOut,
    /// PostgreSQL: an extended-protocol Execute relayed, its Sync not yet sent.
    PgExtendedBatch,
    /// PostgreSQL: cleaning a server up for reuse, before DISCARD ALL.
    PgReset,
    /// MySQL: a response reported a transaction open.
    MyInTransaction,
    /// MySQL: a COM_STMT_EXECUTE sent to the server, its response not yet relayed.
    MyPreparedExecute,
    /// MySQL: LOAD DATA LOCAL INFILE, relaying the client's file to the server.
    MyLoadData,
    /// MySQL: cleaning a server up for reuse, before COM_RESET_CONNECTION.
    MyReset,
}

impl Point {
    pub const ALL: [Point; 9] = [
        Point::PgInTransaction,
        Point::PgCopyIn,
        Point::PgCopyOut,
        Point::PgExtendedBatch,
        Point::PgReset,
        Point::MyInTransaction,
        Point::MyPreparedExecute,
        Point::MyLoadData,
        Point::MyReset,
    ];

    /// Its name in `POOLGUARD_FAULTS`.
    pub fn name(self) -> &'static str {
        match self {
            Point::PgInTransaction => "pg_in_transaction",
            Point::PgCopyIn => "pg_copy_in",
            Point::PgCopyOut => "pg_copy_out",
            Point::PgExtendedBatch => "pg_extended_batch",
            Point::PgReset => "pg_reset",
            Point::MyInTransaction => "my_in_transaction",
            Point::MyPreparedExecute => "my_prepared_execute",
            Point::MyLoadData => "my_load_data",
            Point::MyReset => "my_reset",
        }
    }
}

/// The armed points of one proxy (no global state: it lives in [`crate::state::Shared`]).
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(any(debug_assertions, feature = "faults"))]
    armed: std::sync::Mutex<Vec<Point>>,
}

impl Faults {
    /// The points `POOLGUARD_FAULTS` names (none without the `faults` feature). Unknown
    /// names are logged and ignored.
    pub fn from_env() -> Self {
        #[cfg(any(debug_assertions, feature = "faults"))]
        {
            let spec = std::env::var("POOLGUARD_FAULTS").unwrap_or_default();
            let mut armed = Vec::new();
            for name in spec.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match Point::ALL.iter().find(|p| p.name() == name) {
                    Some(p) => armed.push(*p),
                    None => tracing::warn!(name, "POOLGUARD_FAULTS: no such fault point"),
                }
            }
            if !armed.is_empty() {
                tracing::warn!(points = %spec, "fault injection armed (a test build): sessions will panic at these points");
            }
            Faults {
                armed: std::sync::Mutex::new(armed),
            }
        }
        #[cfg(not(any(debug_assertions, feature = "faults")))]
        Faults::default()
    }

    /// Panics if `point` is armed (disarming it first, so it fires once).
    #[inline]
    pub fn hit(&self, point: Point) {
        #[cfg(any(debug_assertions, feature = "faults"))]
        {
            let fire = {
                let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
                match armed.iter().position(|p| *p == point) {
                    Some(i) => {
                        armed.swap_remove(i);
                        true
                    }
                    None => false,
                }
            };
            if fire {
                panic!("fault injected at {}", point.name());
            }
        }
        #[cfg(not(any(debug_assertions, feature = "faults")))]
        let _ = point;
    }
}
