//! tokio-postgres helpers for tests that drive many clients from one process: connect, read one
//! value, and the SQLSTATE of an error.

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Connects with a libpq-style string; the connection task runs on the current runtime.
pub async fn connect_to(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The first column of the first row, as text.
pub async fn scalar(c: &Client, sql: &str) -> Result<Option<String>, tokio_postgres::Error> {
    for m in c.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).map(str::to_owned));
        }
    }
    Ok(None)
}

/// The SQLSTATE of a server (or poolguard) error, empty for others.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// The message of a server (or poolguard) error, else the error's own text.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}
