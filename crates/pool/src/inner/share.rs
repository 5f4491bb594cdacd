//! Fair shares: how many connections each key holds, and which waiter the dispatch serves next.
//!
//! Invariants (under the pool's lock):
//! - `Shares` counts a holder's *units*: a lease, or a slot granted to open one. It is counted
//!   where the grant is made (`serve_locked` for an idle connection, `grant_slot`) and
//!   uncounted where the unit leaves its holder (checkin, discard, a slot abandoned or connected
//!   into a closed pool), so the counts always equal what the holders have, whatever the
//!   current [`FairShare`].
//! - Both groupings (application and address) are kept, so changing `FairShare::by` at run time
//!   needs no recount.
//! - Counting costs two hash-map updates per lease, so it runs only while a fair share is set:
//!   [`Shares::set_enabled`] turns it on (recounting from the current leases; a connect already
//!   under way is not counted until its next lease) and off (forgetting the counts).
//! - Without a fair share, or when every live waiter's key is at or above its share, the front
//!   waiter is served: lenient shares only reorder, they never leave a connection unused. A
//!   strict share serves nobody then: its waiters wait (and time out, told why) rather than
//!   take a key past its share.

use std::collections::HashMap;

use super::{State, Waiter};
use crate::config::{FairShare, ShareKey};
use crate::error::OverShare;
use crate::{Connector, Holder};

/// Units held per application and per address.
#[derive(Debug, Default)]
pub(super) struct Shares {
    /// Counting at all (a fair share is configured).
    enabled: bool,
    by_application: HashMap<String, usize>,
    by_address: HashMap<String, usize>,
}

impl Shares {
    /// Count from now on (recounting `holders`, the current leases), or stop and forget.
    pub(super) fn set_enabled<'a>(
        &mut self,
        enabled: bool,
        holders: impl Iterator<Item = &'a Holder>,
    ) {
        if enabled == self.enabled {
            return;
        }
        self.by_application.clear();
        self.by_address.clear();
        self.enabled = enabled;
        if enabled {
            holders.for_each(|h| self.add(h));
        }
    }

    fn map(&mut self, by: ShareKey) -> &mut HashMap<String, usize> {
        match by {
            ShareKey::Application => &mut self.by_application,
            ShareKey::Address => &mut self.by_address,
        }
    }

    /// `holder` was granted a unit.
    pub(super) fn add(&mut self, holder: &Holder) {
        if !self.enabled {
            return;
        }
        for by in [ShareKey::Application, ShareKey::Address] {
            let key = by.of(holder);
            let map = self.map(by);
            match map.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    map.insert(key.to_owned(), 1);
                }
            }
        }
    }

    /// A unit of `holder`'s went back; keys that hold nothing are forgotten.
    pub(super) fn remove(&mut self, holder: &Holder) {
        if !self.enabled {
            return;
        }
        for by in [ShareKey::Application, ShareKey::Address] {
            let key = by.of(holder);
            let map = self.map(by);
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// Units `holder`'s key holds under `by`.
    pub(super) fn held(&self, by: ShareKey, holder: &Holder) -> usize {
        let map = match by {
            ShareKey::Application => &self.by_application,
            ShareKey::Address => &self.by_address,
        };
        map.get(by.of(holder)).copied().unwrap_or(0)
    }
}

impl<C: Connector> State<C> {
    /// The index of the waiter to serve next: the front, unless a fair share is set and the
    /// front's key is at its share while a later live waiter's key is under its own. Call with
    /// a live waiter at the front (`prune_dead_front`).
    /// `None`: a strict share holds back every live waiter.
    pub(super) fn next_waiter(&mut self) -> Option<usize> {
        let Some(share) = self.admission.fair_share else {
            return Some(0);
        };
        let under = self
            .waiters
            .iter()
            .position(|w| w.alive() && self.shares.held(share.by, &w.holder) < share.max);
        match under {
            Some(i) => Some(i),
            None if share.strict => {
                for w in self.waiters.iter_mut().filter(|w| w.alive()) {
                    w.over_share = Some(Box::new(over_share(share, &self.shares, &w.holder)));
                }
                None
            }
            None => Some(0),
        }
    }

    /// Take waiter `index` out of the queue to serve it; the live waiters ahead of it were
    /// over their share (see `next_waiter`) and are told so.
    pub(super) fn take_waiter(&mut self, index: usize) -> Option<Waiter<C>> {
        if let Some(share) = self.admission.fair_share {
            for ahead in self.waiters.iter_mut().take(index).filter(|w| w.alive()) {
                ahead.over_share = Some(Box::new(over_share(share, &self.shares, &ahead.holder)));
            }
        }
        self.waiters.remove(index)
    }
}

fn over_share(share: FairShare, shares: &Shares, holder: &Holder) -> OverShare {
    OverShare {
        by: share.by,
        key: share.by.of(holder).to_owned(),
        held: shares.held(share.by, holder),
        max: share.max,
    }
}
