//! An acquire's future does not grow with its connector's connect.
//!
//! Callers box an acquire per wait (a client waits for a server about once per transaction
//! when clients outnumber the pool), and moving a future into its box copies all of it. A
//! connector's connect (TCP, TLS, the server's login) is kilobytes of state that few acquires
//! ever run, so the pool boxes it where it is awaited.

use super::{cfg, holder};
use crate::{Budget, CloseReason, Connector, Pool};

/// A connector whose connect keeps 16 KiB across an await.
struct Heavy;

impl Connector for Heavy {
    type Conn = ();
    type Error = std::io::Error;

    async fn connect(&self) -> Result<(), std::io::Error> {
        let scratch = [7u8; 16 * 1024];
        tokio::task::yield_now().await;
        std::hint::black_box(&scratch);
        Ok(())
    }

    fn close(&self, _conn: (), _reason: CloseReason) {}
}

#[test]
fn an_acquire_is_not_sized_for_the_connect() {
    let connect = std::mem::size_of_val(&Heavy.connect());
    assert!(connect > 16 * 1024, "the heavy connect: {connect} bytes");
    let pool = Pool::new(cfg("p", 1, 0), Heavy, Budget::new(1));
    let acquire = std::mem::size_of_val(&pool.acquire(holder("c")));
    // 1 KiB: the wait (its channel, the pause watch, a timer) and the grant, with room.
    assert!(acquire <= 1024, "an acquire's future: {acquire} bytes");
}
