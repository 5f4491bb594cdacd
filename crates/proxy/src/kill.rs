//! KILL_CLIENT: an operator closes one client connection, PostgreSQL or MySQL, by the id the
//! admin console shows (SHOW CLIENTS `ptr`, SHOW LEAKS `client_id`).
//!
//! The socket is shut down (found through the client list, without a descriptor of its own:
//! see [`crate::clients`] for why that cannot reach another connection), so the session reads
//! EOF and leaves by its ordinary "client vanished" path: an open transaction is rolled back,
//! the lease goes back to the pool or the server is discarded, the slot is freed. Nothing here
//! touches a pool or a server directly, so no path can leak one.

use crate::clients::Unreachable;
use crate::error::ProxyError;
use crate::state::Shared;

impl Shared {
    /// Closes the client with this id; a one-line summary of who it was, or why not.
    pub fn kill_client(&self, id: u64) -> Result<String, ProxyError> {
        let (protocol, holder, done) = self.observe.clients.disconnect(id).ok_or_else(|| {
            ProxyError::Protocol(format!(
                "KILL_CLIENT: no client with id {id} (see SHOW CLIENTS, column ptr)"
            ))
        })?;
        match done {
            Ok(()) => {}
            Err(Unreachable::AlreadyClosing) => {
                return Ok(format!("client {id} is already disconnecting"))
            }
            Err(e) => {
                return Err(ProxyError::Protocol(format!(
                    "KILL_CLIENT {id}: cannot close the connection: {e}"
                )))
            }
        }
        tracing::warn!(
            id,
            client = %holder.client,
            protocol,
            user = %holder.user,
            database = %holder.database,
            application = %holder.application,
            "client killed from the admin console"
        );
        Ok(format!(
            "client {id} ({protocol} {}, user {}, database {}, application {:?}) disconnected",
            holder.client, holder.user, holder.database, holder.application
        ))
    }
}
