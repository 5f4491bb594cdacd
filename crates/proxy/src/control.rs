//! Operator actions on a running proxy: PAUSE/RESUME, RELOAD, KILL_CLIENT and the drain on
//! shutdown. The admin console (`pg::console`), `POST /api/reload`, SIGHUP and SIGTERM all come
//! here, so each action has one implementation.
//!
//! Every action answers with a one-line summary an operator can read, or a `ProxyError` that
//! says what was refused and why; none of them drops a client that is not named.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::ProxyError;
use crate::state::Shared;

impl Shared {
    /// Remember where the configuration came from, so RELOAD and SIGHUP can read it again.
    pub fn set_config_path(&self, path: PathBuf) {
        *self.config_path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// PAUSE [db]: hold new transactions on every pool (or the pools of `database`), and return
    /// once the transactions already running have ended.
    pub async fn pause(&self, database: Option<&str>) -> Result<String, ProxyError> {
        let _ = database;
        Err(ProxyError::FeatureNotSupported(
            "PAUSE is not available yet".into(),
        ))
    }

    /// RESUME [db]: let held transactions go on.
    pub fn resume(&self, database: Option<&str>) -> Result<String, ProxyError> {
        let _ = database;
        Err(ProxyError::FeatureNotSupported(
            "RESUME is not available yet".into(),
        ))
    }

    /// RELOAD: read the configuration file again and apply it without dropping clients. A bad
    /// file is refused and the running configuration kept.
    pub fn reload(self: &Arc<Self>) -> Result<String, ProxyError> {
        Err(ProxyError::FeatureNotSupported(
            "RELOAD is not available yet".into(),
        ))
    }
}
