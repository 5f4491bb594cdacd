//! What a server still owes, in order: one entry per request sent to it (or answered by
//! poolguard itself), so responses can be routed exactly.
//!
//! poolguard rewrites the extended protocol in transaction mode: it injects Parse for statements
//! a server lacks, answers Parse/Close for statements it already has, and injects SET to carry a
//! client's parameters. The client must still see exactly the responses to its own messages, in
//! order. [`Pending`] keeps one [`Expect`] per request; [`Pending::route`] tells, for each server
//! message, whether it goes to the client or is swallowed, and [`Pending::take_synthetic`] yields
//! poolguard's own answers once every response before them has been delivered.
//!
//! Protocol facts relied on: each of Parse, Bind, Close, Describe(portal) is answered by one
//! message (ParseComplete, BindComplete, CloseComplete, RowDescription/NoData); Describe(statement)
//! by ParameterDescription then RowDescription/NoData; Execute by rows then CommandComplete,
//! EmptyQueryResponse or PortalSuspended; Sync, Query and FunctionCall end with ReadyForQuery.
//! After an ErrorResponse to an extended-protocol message the server skips everything up to Sync.
//!
//! COPY: a Query or Execute answered by CopyInResponse (or CopyBothResponse) puts the server in
//! copy-in mode until the client's CopyDone or CopyFail. In that mode the server reads CopyData
//! and *ignores* Sync and Flush, so a Sync the client sent in between (libpq and tokio-postgres
//! send Bind, Execute, Sync before any data, then CopyDone, Sync) is owed nothing. The client's
//! CopyDone/CopyFail is recorded as [`Expect::CopyEnd`], a marker with no answer of its own, so
//! that the Syncs to forget are exactly those between the COPY's request and the marker. An error
//! during copy-in ends copy mode: after a simple Query the server answers ReadyForQuery at once
//! (and ignores the client's remaining copy messages); after Execute it skips to the next Sync.

use std::collections::VecDeque;
use std::sync::Arc;

use poolguard_pg::tags::backend as b;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A client Parse; `server_name` is the poolguard-owned name it was prepared under, if any,
    /// and `client_name` the name the client defined with it (undefined again if it fails).
    Parse {
        server_name: Option<Arc<str>>,
        client_name: Option<Box<[u8]>>,
    },
    Bind,
    Close,
    DescribeStatement,
    DescribePortal,
    Execute,
    Sync,
    Query,
    FunctionCall,
    /// poolguard's own Parse of a statement the server lacked; its ParseComplete is swallowed.
    InjectedParse {
        server_name: Arc<str>,
    },
    /// poolguard's own Close of an evicted statement.
    InjectedClose,
    /// poolguard's own simple query (parameter SETs); everything up to its ReadyForQuery is
    /// swallowed except ParameterStatus, which the client may see.
    InjectedQuery,
    /// The client's CopyDone or CopyFail: no answer of its own; it marks where a copy-in the
    /// server may still be entering ends (see the module docs). Never left at the head.
    CopyEnd,
    /// An answer poolguard gives itself, emitted when it reaches the head of the queue.
    SyntheticParseComplete,
    SyntheticCloseComplete,
    /// `DEALLOCATE name` of a statement only poolguard knew: CommandComplete + ReadyForQuery.
    SyntheticDeallocate,
}

/// An answer poolguard writes to the client itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synthetic {
    ParseComplete,
    CloseComplete,
    Deallocated,
}

impl Expect {
    fn is_extended(&self) -> bool {
        !matches!(
            self,
            Expect::Sync
                | Expect::Query
                | Expect::FunctionCall
                | Expect::InjectedQuery
                | Expect::SyntheticDeallocate
        )
    }

    fn ends_with_ready(&self) -> bool {
        matches!(
            self,
            Expect::Sync | Expect::Query | Expect::FunctionCall | Expect::InjectedQuery
        )
    }
}

/// The decision for one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Forward,
    Swallow,
}

/// Statement-cache consequences of a routed message, for the caller to apply.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheEffect {
    None,
    /// The server confirmed this statement exists.
    Prepared(Arc<str>),
    /// The server never prepared these (error, or skipped after an error): server statement
    /// names, and the client's names whose definition failed with them.
    Failed {
        server: Vec<Arc<str>>,
        client: Vec<Box<[u8]>>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("server sent message {tag:?} while poolguard expected {expected}")]
pub struct Unexpected {
    pub tag: char,
    pub expected: String,
}

#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Expect>,
    /// Entries that end with ReadyForQuery.
    ready_owed: u32,
    /// The server reported an error in an extended-protocol batch whose Sync has not been sent
    /// yet: it ignores every message until that Sync, so none of them is owed an answer.
    skipping_to_sync: bool,
    /// The server is in copy-in mode and the client's CopyDone/CopyFail has not been sent
    /// yet: Syncs sent now are ignored by the server, so none is owed a ReadyForQuery.
    copy_in: bool,
}

impl Pending {
    /// A fresh, empty queue that keeps this one's allocation: a server connection keeps its
    /// queue's storage between leases (see `ServerConn::spare_pending`), so a transaction does
    /// not allocate one. Nothing of this queue's state carries over.
    pub fn recycle(self) -> Pending {
        let mut queue = self.queue;
        queue.clear();
        Pending {
            queue,
            ..Pending::default()
        }
    }

    /// Records a request sent to the server (or answered by poolguard). While the server is
    /// skipping to a Sync, everything but the Sync is dropped: the server will not answer it,
    /// and neither may poolguard.
    pub fn push(&mut self, e: Expect) {
        if self.skipping_to_sync {
            if e != Expect::Sync {
                return;
            }
            self.skipping_to_sync = false;
        }
        if self.copy_in {
            match e {
                Expect::Sync => return,
                Expect::CopyEnd => self.copy_in = false,
                _ => {}
            }
        }
        if e == Expect::CopyEnd && self.queue.is_empty() {
            return; // everything before it is answered: nothing left to mark
        }
        if e.ends_with_ready() {
            self.ready_owed = self.ready_owed.saturating_add(1);
        }
        self.queue.push_back(e);
    }

    /// True while the server ignores everything up to the next Sync (see [`Pending::push`]):
    /// requests sent now have no effect on the server.
    pub fn server_skipping(&self) -> bool {
        self.skipping_to_sync
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Nothing the client sent is outstanding (poolguard's own requests may be).
    pub fn only_injected(&self) -> bool {
        self.queue.iter().all(|e| {
            matches!(
                e,
                Expect::InjectedQuery | Expect::InjectedParse { .. } | Expect::InjectedClose
            )
        })
    }

    /// Requests still waiting for a ReadyForQuery.
    #[cfg(test)]
    pub fn ready_owed(&self) -> u32 {
        self.ready_owed
    }

    /// The next answer poolguard owes the client itself, if every earlier response was delivered.
    pub fn take_synthetic(&mut self) -> Option<Synthetic> {
        let s = match self.queue.front()? {
            Expect::SyntheticParseComplete => Synthetic::ParseComplete,
            Expect::SyntheticCloseComplete => Synthetic::CloseComplete,
            Expect::SyntheticDeallocate => Synthetic::Deallocated,
            _ => return None,
        };
        self.queue.pop_front();
        self.drop_markers();
        Some(s)
    }

    fn pop(&mut self) -> Option<Expect> {
        let e = self.queue.pop_front()?;
        if e.ends_with_ready() {
            self.ready_owed = self.ready_owed.saturating_sub(1);
        }
        self.drop_markers();
        Some(e)
    }

    /// A [`Expect::CopyEnd`] at the head has done its work: everything before it is answered.
    fn drop_markers(&mut self) {
        while self.queue.front() == Some(&Expect::CopyEnd) {
            self.queue.pop_front();
        }
    }

    /// The head's COPY put the server in copy-in mode: the Syncs sent after the head and
    /// before the client's CopyDone/CopyFail are ignored by the server. If that marker is not
    /// here yet, Syncs are ignored until it is.
    fn enter_copy_in(&mut self) {
        let end = self
            .queue
            .iter()
            .position(|e| *e == Expect::CopyEnd)
            .unwrap_or(self.queue.len());
        let mut i = 1;
        let mut end = end;
        while i < end {
            if self.queue.get(i) == Some(&Expect::Sync) {
                self.queue.remove(i);
                self.ready_owed = self.ready_owed.saturating_sub(1);
                end = end.saturating_sub(1);
            } else {
                i = i.saturating_add(1);
            }
        }
        self.copy_in = end == self.queue.len();
    }

    fn unexpected(&self, tag: u8) -> Unexpected {
        Unexpected {
            tag: tag as char,
            expected: match self.queue.front() {
                Some(e) => format!("a response to {e:?}"),
                None => "nothing".into(),
            },
        }
    }

    /// Routes one server message. Call [`Pending::take_synthetic`] first until it returns None.
    pub fn route(&mut self, tag: u8) -> Result<(Route, CacheEffect), Unexpected> {
        let head = self.queue.front().cloned();
        let swallow_if_injected = match head {
            Some(Expect::InjectedQuery) => Route::Swallow,
            _ => Route::Forward,
        };
        let ok = |r| Ok((r, CacheEffect::None));
        match tag {
            // Asynchronous messages may come at any time.
            b::NOTIFICATION => ok(Route::Forward),
            b::PARAMETER_STATUS => ok(Route::Forward),
            b::NOTICE_RESPONSE => ok(swallow_if_injected),
            b::PARSE_COMPLETE => match head {
                Some(Expect::Parse { server_name, .. }) => {
                    self.pop();
                    Ok((
                        Route::Forward,
                        server_name.map_or(CacheEffect::None, CacheEffect::Prepared),
                    ))
                }
                Some(Expect::InjectedParse { server_name }) => {
                    self.pop();
                    Ok((Route::Swallow, CacheEffect::Prepared(server_name)))
                }
                _ => Err(self.unexpected(tag)),
            },
            b::BIND_COMPLETE => self.pop_if(tag, |e| *e == Expect::Bind, Route::Forward),
            b::CLOSE_COMPLETE => match head {
                Some(Expect::Close) => self.pop_if(tag, |_| true, Route::Forward),
                Some(Expect::InjectedClose) => self.pop_if(tag, |_| true, Route::Swallow),
                _ => Err(self.unexpected(tag)),
            },
            b::PARAMETER_DESCRIPTION => match head {
                Some(Expect::DescribeStatement) => ok(Route::Forward),
                _ => Err(self.unexpected(tag)),
            },
            b::ROW_DESCRIPTION | b::NO_DATA => match head {
                Some(Expect::DescribeStatement | Expect::DescribePortal) => {
                    self.pop();
                    ok(Route::Forward)
                }
                Some(Expect::Query | Expect::FunctionCall) => ok(Route::Forward),
                Some(Expect::InjectedQuery) => ok(Route::Swallow),
                _ => Err(self.unexpected(tag)),
            },
            b::COMMAND_COMPLETE | b::EMPTY_QUERY | b::PORTAL_SUSPENDED => match head {
                Some(Expect::Execute) => {
                    self.pop();
                    ok(Route::Forward)
                }
                Some(Expect::Query) => ok(Route::Forward),
                Some(Expect::InjectedQuery) => ok(Route::Swallow),
                _ => Err(self.unexpected(tag)),
            },
            b::COPY_IN | b::COPY_BOTH => match head {
                Some(Expect::Query | Expect::Execute) => {
                    self.enter_copy_in();
                    ok(Route::Forward)
                }
                _ => Err(self.unexpected(tag)),
            },
            b::ERROR_RESPONSE if self.copy_in => {
                // Copy-in ends with the error: Syncs count again.
                self.copy_in = false;
                self.route(tag)
            }
            b::ERROR_RESPONSE => match head {
                Some(Expect::Query | Expect::FunctionCall | Expect::Sync) => ok(Route::Forward),
                Some(Expect::InjectedQuery) => ok(Route::Swallow),
                Some(ref e) if e.is_extended() => {
                    // The server skips every message up to the next Sync, whatever it is. The
                    // error goes to the client even when it answers poolguard's own Parse: the
                    // batch failed.
                    let (mut server, mut client) = (Vec::new(), Vec::new());
                    while let Some(front) = self.queue.front() {
                        if *front == Expect::Sync {
                            break;
                        }
                        match self.pop() {
                            Some(Expect::Parse {
                                server_name,
                                client_name,
                            }) => {
                                server.extend(server_name);
                                client.extend(client_name);
                            }
                            Some(Expect::InjectedParse { server_name: n }) => server.push(n),
                            _ => {}
                        }
                    }
                    // No Sync sent yet: what the client sends until then is skipped too.
                    self.skipping_to_sync = self.queue.is_empty();
                    Ok((Route::Forward, CacheEffect::Failed { server, client }))
                }
                _ => Err(self.unexpected(tag)),
            },
            b::READY_FOR_QUERY => match head {
                Some(Expect::Sync | Expect::Query | Expect::FunctionCall) => {
                    self.pop();
                    ok(Route::Forward)
                }
                Some(Expect::InjectedQuery) => {
                    self.pop();
                    ok(Route::Swallow)
                }
                _ => Err(self.unexpected(tag)),
            },
            // Rows, COPY traffic, function results: part of whatever is at the head.
            _ => match head {
                Some(Expect::InjectedQuery) => ok(Route::Swallow),
                Some(_) => ok(Route::Forward),
                None => Err(self.unexpected(tag)),
            },
        }
    }

    fn pop_if(
        &mut self,
        tag: u8,
        matches: impl Fn(&Expect) -> bool,
        route: Route,
    ) -> Result<(Route, CacheEffect), Unexpected> {
        match self.queue.front() {
            Some(e) if matches(e) => {
                self.pop();
                Ok((route, CacheEffect::None))
            }
            _ => Err(self.unexpected(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_recycled_queue_owes_nothing_and_keeps_its_storage() {
        let mut p = Pending::default();
        for _ in 0..8 {
            p.push(Expect::Query);
        }
        let storage = p.queue.capacity();
        assert_eq!(p.ready_owed(), 8);
        let p = p.recycle();
        assert!(p.is_empty() && p.ready_owed() == 0 && !p.server_skipping());
        assert_eq!(p.queue.capacity(), storage);
    }

    #[test]
    fn synthetic_parse_complete_comes_out_in_order() {
        let mut p = Pending::default();
        p.push(Expect::Bind);
        p.push(Expect::SyntheticParseComplete);
        p.push(Expect::Bind);
        p.push(Expect::Sync);
        assert_eq!(p.take_synthetic(), None, "BindComplete is owed first");
        assert_eq!(p.route(b::BIND_COMPLETE).unwrap().0, Route::Forward);
        assert_eq!(p.take_synthetic(), Some(Synthetic::ParseComplete));
        assert_eq!(p.route(b::BIND_COMPLETE).unwrap().0, Route::Forward);
        assert_eq!(p.ready_owed(), 1);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn injected_parse_is_swallowed_and_confirms_the_cache() {
        let mut p = Pending::default();
        p.push(Expect::InjectedParse {
            server_name: name("s1"),
        });
        p.push(Expect::Bind);
        let (route, effect) = p.route(b::PARSE_COMPLETE).unwrap();
        assert_eq!(route, Route::Swallow);
        assert_eq!(effect, CacheEffect::Prepared(name("s1")));
    }

    #[test]
    fn error_skips_to_sync_and_reports_unprepared_statements() {
        let mut p = Pending::default();
        p.push(Expect::Parse {
            server_name: Some(name("a")),
            client_name: Some(b"c"[..].into()),
        });
        p.push(Expect::InjectedParse {
            server_name: name("b"),
        });
        p.push(Expect::Bind);
        p.push(Expect::SyntheticCloseComplete);
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        let (route, effect) = p.route(b::ERROR_RESPONSE).unwrap();
        assert_eq!(route, Route::Forward);
        assert_eq!(
            effect,
            CacheEffect::Failed {
                server: vec![name("a"), name("b")],
                client: vec![b"c"[..].into()],
            }
        );
        assert_eq!(
            p.take_synthetic(),
            None,
            "skipped by the server, so not answered"
        );
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn requests_sent_after_an_error_and_before_its_sync_are_not_owed_answers() {
        let mut p = Pending::default();
        p.push(Expect::Parse {
            server_name: None,
            client_name: None,
        });
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        assert_eq!(p.route(b::PARSE_COMPLETE).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::BIND_COMPLETE).unwrap().0, Route::Forward);
        // The Execute fails before the client has sent its Sync (pipelined client).
        assert_eq!(p.route(b::ERROR_RESPONSE).unwrap().0, Route::Forward);
        assert!(p.server_skipping());
        // What follows is ignored by the server up to the Sync, and must not be answered.
        p.push(Expect::Parse {
            server_name: None,
            client_name: None,
        });
        p.push(Expect::SyntheticParseComplete);
        p.push(Expect::Query);
        p.push(Expect::Execute);
        assert!(p.is_empty() && p.ready_owed() == 0);
        p.push(Expect::Sync);
        assert!(!p.server_skipping());
        assert_eq!(p.take_synthetic(), None);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty());
        // The next batch is answered normally.
        p.push(Expect::Parse {
            server_name: None,
            client_name: None,
        });
        assert_eq!(p.route(b::PARSE_COMPLETE).unwrap().0, Route::Forward);
    }

    #[test]
    fn injected_query_is_invisible_except_parameter_status() {
        let mut p = Pending::default();
        p.push(Expect::InjectedQuery);
        p.push(Expect::Query);
        assert_eq!(p.ready_owed(), 2);
        assert_eq!(p.route(b::COMMAND_COMPLETE).unwrap().0, Route::Swallow);
        assert_eq!(p.route(b::PARAMETER_STATUS).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Swallow);
        assert_eq!(p.route(b::ROW_DESCRIPTION).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::DATA_ROW).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::COMMAND_COMPLETE).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert_eq!(p.ready_owed(), 0);
    }

    #[test]
    fn describe_statement_takes_two_messages() {
        let mut p = Pending::default();
        p.push(Expect::DescribeStatement);
        p.push(Expect::Sync);
        assert_eq!(p.route(b::PARAMETER_DESCRIPTION).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::ROW_DESCRIPTION).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
    }

    /// libpq and tokio-postgres: Bind, Execute, Sync, then the data, CopyDone, Sync. The
    /// server ignores the first Sync (it arrives in copy-in mode): one ReadyForQuery in all.
    #[test]
    fn extended_copy_in_owes_one_ready_for_the_two_syncs() {
        for data_before_answer in [false, true] {
            let mut p = Pending::default();
            p.push(Expect::Bind);
            p.push(Expect::Execute);
            p.push(Expect::Sync);
            if data_before_answer {
                p.push(Expect::CopyEnd);
                p.push(Expect::Sync);
            }
            assert_eq!(p.route(b::BIND_COMPLETE).unwrap().0, Route::Forward);
            assert_eq!(p.route(b::COPY_IN).unwrap().0, Route::Forward);
            if !data_before_answer {
                p.push(Expect::Sync); // a Flush or Sync among the data: ignored too
                p.push(Expect::CopyEnd);
                p.push(Expect::Sync);
            }
            assert_eq!(p.ready_owed(), 1);
            assert_eq!(p.route(b::COMMAND_COMPLETE).unwrap().0, Route::Forward);
            assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
            assert!(p.is_empty(), "{data_before_answer}: {p:?}");
        }
    }

    #[test]
    fn an_error_during_extended_copy_in_skips_to_the_client_final_sync() {
        let mut p = Pending::default();
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        p.route(b::BIND_COMPLETE).unwrap();
        p.route(b::COPY_IN).unwrap();
        // A bad row: the server errors before the client has finished sending.
        assert_eq!(p.route(b::ERROR_RESPONSE).unwrap().0, Route::Forward);
        assert!(p.server_skipping());
        p.push(Expect::CopyEnd);
        p.push(Expect::Sync);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty());
        // The error arrives after the client's CopyDone and Sync were sent.
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        p.route(b::BIND_COMPLETE).unwrap();
        p.route(b::COPY_IN).unwrap();
        p.push(Expect::CopyEnd);
        p.push(Expect::Sync);
        assert_eq!(p.route(b::ERROR_RESPONSE).unwrap().0, Route::Forward);
        assert!(!p.server_skipping());
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty() && p.ready_owed() == 0);
    }

    #[test]
    fn simple_copy_in_error_answers_at_once_and_later_copy_messages_owe_nothing() {
        let mut p = Pending::default();
        p.push(Expect::Query);
        assert_eq!(p.route(b::COPY_IN).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::ERROR_RESPONSE).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        p.push(Expect::CopyEnd); // the client's CopyDone, after the answer
        assert!(p.is_empty());
        // Success, with CopyDone sent before CommandComplete arrives.
        p.push(Expect::Query);
        p.route(b::COPY_IN).unwrap();
        p.push(Expect::CopyEnd);
        p.push(Expect::Query);
        assert_eq!(p.route(b::COMMAND_COMPLETE).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::ROW_DESCRIPTION).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn copy_out_and_copy_both_follow_their_request() {
        let mut p = Pending::default();
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        for tag in [b::COPY_OUT, b::COPY_DATA, b::COPY_DATA, b::COPY_DONE] {
            assert_eq!(p.route(tag).unwrap().0, Route::Forward);
        }
        // A query failing part-way through COPY TO.
        assert_eq!(p.route(b::ERROR_RESPONSE).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        p.push(Expect::Query);
        assert_eq!(p.route(b::COPY_BOTH).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::COPY_DATA).unwrap().0, Route::Forward);
        p.push(Expect::Sync); // ignored in copy mode
        p.push(Expect::CopyEnd);
        assert_eq!(p.route(b::COMMAND_COMPLETE).unwrap().0, Route::Forward);
        assert_eq!(p.route(b::READY_FOR_QUERY).unwrap().0, Route::Forward);
        assert!(p.is_empty());
        // CopyInResponse with nothing that could start a COPY is refused.
        let mut p = Pending::default();
        p.push(Expect::Bind);
        assert!(p.route(b::COPY_IN).is_err());
    }

    #[test]
    fn out_of_order_messages_are_refused() {
        let mut p = Pending::default();
        p.push(Expect::Bind);
        assert!(p.route(b::PARSE_COMPLETE).is_err());
        let mut empty = Pending::default();
        assert!(empty.route(b::DATA_ROW).is_err());
        assert_eq!(empty.route(b::NOTIFICATION).unwrap().0, Route::Forward);
    }
}
