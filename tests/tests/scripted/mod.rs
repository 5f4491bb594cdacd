//! A client program driven one line at a time (shared by the admin_mysql and dashboard_browser
//! tests): its stdout lines arrive on a channel, commands go to its stdin, and it is killed on
//! drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

pub struct Scripted {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Scripted {
    /// Starts `cmd` with piped stdin and stdout (stderr goes to the test's own).
    pub fn spawn(cmd: &mut Command) -> Scripted {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the client program");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Scripted {
            child,
            stdin,
            lines,
        }
    }

    /// The program's next line, waiting at most `limit`; panics with `hint` if none comes.
    pub fn line(&self, limit: Duration, hint: &str) -> String {
        self.lines.recv_timeout(limit).unwrap_or_else(|e| {
            panic!("the client program stopped without answering ({e}); {hint}")
        })
    }

    /// Writes one line to the program.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the client program is gone");
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
