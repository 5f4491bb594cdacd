//! What a run does: groups of workers (traffic, leakers, slow queries), each active in a time
//! window, and the parsers for the CLI's `--spike 10x@30s+20s` and `--slow N:5s` notation.
//!
//! A plan is pure data; [`crate::engine`] executes it. Spikes are extra traffic groups, so the
//! per-group counts in a report are the per-phase counts of a spike.

use std::time::Duration;

use crate::SimError;

/// The statements one request runs.
#[derive(Clone, Debug)]
pub enum Workload {
    /// One indexed point read on the seeded rows.
    Read,
    /// `BEGIN; INSERT; COMMIT` (each committed transaction adds one row tagged with the run id).
    Write,
    /// `BEGIN; SELECT; INSERT; COMMIT`, the shape of a typical web request.
    Mixed,
    /// Statements from a file, run in order as one request.
    Sql(Vec<String>),
}

impl Workload {
    /// `read`, `write` or `mixed`.
    pub fn parse(name: &str) -> Result<Workload, SimError> {
        match name {
            "read" => Ok(Workload::Read),
            "write" => Ok(Workload::Write),
            "mixed" => Ok(Workload::Mixed),
            other => Err(SimError::Usage(format!(
                "unknown workload {other:?}: use read, write, mixed or --sql FILE"
            ))),
        }
    }

    /// Statements separated by `;` (quotes are not parsed: keep `;` out of literals).
    pub fn from_sql(text: &str) -> Result<Workload, SimError> {
        let stmts: Vec<String> = text
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if stmts.is_empty() {
            return Err(SimError::Usage("the SQL file holds no statement".into()));
        }
        Ok(Workload::Sql(stmts))
    }

    /// Whether each successful request commits exactly one row tagged with the run id.
    pub fn writes_one_row(&self) -> bool {
        matches!(self, Workload::Write | Workload::Mixed)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Mixed => "mixed",
            Workload::Sql(_) => "sql",
        }
    }
}

/// What a group's workers do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Requests in a loop; their outcomes are the run's figures.
    Traffic,
    /// Connect, run `SELECT 1`, then hold the connection idle until the end.
    LeakIdle,
    /// Connect, `BEGIN` and insert a row, then hold the open transaction until the end.
    LeakInTx,
    /// A sleeping query of this length, in a loop.
    Slow(Duration),
}

impl Role {
    pub fn label(&self) -> &'static str {
        match self {
            Role::Traffic => "traffic",
            Role::LeakIdle => "leak-idle",
            Role::LeakInTx => "leak-in-tx",
            Role::Slow(_) => "slow",
        }
    }

    pub fn is_leak(&self) -> bool {
        matches!(self, Role::LeakIdle | Role::LeakInTx)
    }
}

/// Workers with one role, active in `[start, end)`.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub role: Role,
    pub workers: u32,
    pub start: Duration,
    pub end: Duration,
    /// Open a new connection for every request (a fresh process, a drained client pool).
    pub reconnect: bool,
    /// Per-worker interval between request starts (rate mode); `None` = back to back.
    pub pace: Option<Duration>,
    pub workload: Workload,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub title: String,
    /// The URL the workers connect to (postgres:// or mysql://).
    pub url: String,
    /// The monitoring connection's URL, straight to the server; `None` = no server sampling.
    pub server_url: Option<String>,
    pub groups: Vec<Group>,
    pub duration: Duration,
    /// Stop after this many requests in total (all traffic groups).
    pub max_requests: Option<u64>,
    /// A request (or a connect) taking longer fails with code `timeout`.
    pub request_timeout: Duration,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// `10x@30s+20s`: `factor` times the base load, from `at` for `length`.
#[derive(Clone, Debug, PartialEq)]
pub struct Spike {
    pub factor: u32,
    pub at: Duration,
    pub length: Duration,
}

impl std::str::FromStr for Spike {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Spike, SimError> {
        let bad = || SimError::Usage(format!("bad spike {s:?}: expected e.g. 10x@30s+20s"));
        let (factor, rest) = s.split_once("x@").ok_or_else(bad)?;
        let (at, length) = rest.split_once('+').ok_or_else(bad)?;
        let factor: u32 = factor.trim().parse().map_err(|_| bad())?;
        if factor < 2 {
            return Err(SimError::Usage(format!(
                "spike {s:?}: the factor must be 2 or more"
            )));
        }
        Ok(Spike {
            factor,
            at: parse_duration(at)?,
            length: parse_duration(length)?,
        })
    }
}

/// `N:5s`: N workers running a query that sleeps 5 s, in a loop.
#[derive(Clone, Debug, PartialEq)]
pub struct Slow {
    pub workers: u32,
    pub sleep: Duration,
}

impl std::str::FromStr for Slow {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Slow, SimError> {
        let bad = || SimError::Usage(format!("bad slow spec {s:?}: expected e.g. 4:5s"));
        let (n, d) = s.split_once(':').ok_or_else(bad)?;
        Ok(Slow {
            workers: n.trim().parse().map_err(|_| bad())?,
            sleep: parse_duration(d)?,
        })
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, SimError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| SimError::Usage(format!("bad duration {s:?}: {e}")))
}

/// The `spike` subcommand's options, turned into a [`Plan`] by [`SpikeOptions::plan`].
#[derive(Clone, Debug)]
pub struct SpikeOptions {
    pub url: String,
    pub server_url: Option<String>,
    pub workload: Workload,
    pub concurrency: Option<u32>,
    pub rate: Option<f64>,
    pub spikes: Vec<Spike>,
    pub leak_idle: u32,
    pub leak_in_tx: u32,
    pub slow: Option<Slow>,
    pub duration: Duration,
    pub max_requests: Option<u64>,
    pub reconnect: bool,
    pub request_timeout: Duration,
    pub progress: bool,
}

/// No more workers than this in one group, so a typo cannot fork-bomb the machine.
pub const MAX_WORKERS: u32 = 5_000;

impl SpikeOptions {
    pub fn plan(&self) -> Result<Plan, SimError> {
        // Rate mode: enough workers that each one paces at most 50 requests per second.
        let base = match (self.concurrency, self.rate) {
            (Some(c), _) => c,
            (None, Some(r)) => ((r / 50.0).ceil() as u32).max(1),
            (None, None) => 8,
        };
        if base == 0 || base > MAX_WORKERS {
            return Err(SimError::Usage(format!(
                "concurrency must be between 1 and {MAX_WORKERS}"
            )));
        }
        let pace = match self.rate {
            Some(r) if r > 0.0 => Some(Duration::from_secs_f64(f64::from(base) / r)),
            Some(_) => return Err(SimError::Usage("--rate must be positive".into())),
            None => None,
        };
        let traffic = |name: String, workers: u32, start: Duration, end: Duration| Group {
            name,
            role: Role::Traffic,
            workers,
            start,
            end,
            reconnect: self.reconnect,
            pace,
            workload: self.workload.clone(),
        };
        let mut groups = vec![traffic("base".into(), base, Duration::ZERO, self.duration)];
        for (i, s) in self.spikes.iter().enumerate() {
            let extra = base.saturating_mul(s.factor - 1);
            if extra > MAX_WORKERS {
                return Err(SimError::Usage(format!(
                    "spike {}x of {base} needs {extra} extra workers (limit {MAX_WORKERS})",
                    s.factor
                )));
            }
            let end = (s.at + s.length).min(self.duration);
            groups.push(traffic(
                format!("spike{} {}x", i + 1, s.factor),
                extra,
                s.at,
                end,
            ));
        }
        let mut other = |name: &str, role: Role, workers: u32| {
            if workers > 0 {
                let mut g = traffic(name.into(), workers, Duration::ZERO, self.duration);
                g.role = role;
                g.pace = None;
                g.reconnect = false;
                groups.push(g);
            }
        };
        other("leak-idle", Role::LeakIdle, self.leak_idle);
        other("leak-in-tx", Role::LeakInTx, self.leak_in_tx);
        if let Some(slow) = &self.slow {
            other("slow", Role::Slow(slow.sleep), slow.workers);
        }
        Ok(Plan {
            title: format!("spike {}", crate::driver::redact(&self.url)),
            url: self.url.clone(),
            server_url: self.server_url.clone().or_else(|| Some(self.url.clone())),
            groups,
            duration: self.duration,
            max_requests: self.max_requests,
            request_timeout: self.request_timeout,
            progress: self.progress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spike_notation() {
        let s: Spike = "10x@30s+20s".parse().unwrap();
        assert_eq!(s.factor, 10);
        assert_eq!(s.at, Duration::from_secs(30));
        assert_eq!(s.length, Duration::from_secs(20));
        assert!("1x@1s+1s".parse::<Spike>().is_err());
        assert!("10@1s".parse::<Spike>().is_err());
        let slow: Slow = "4:5s".parse().unwrap();
        assert_eq!(slow.workers, 4);
        assert_eq!(slow.sleep, Duration::from_secs(5));
    }

    #[test]
    fn spikes_become_groups() {
        let o = SpikeOptions {
            url: "postgres://a:b@127.0.0.1:1/x".into(),
            server_url: None,
            workload: Workload::Write,
            concurrency: Some(3),
            rate: None,
            spikes: vec!["4x@2s+3s".parse().unwrap()],
            leak_idle: 2,
            leak_in_tx: 0,
            slow: None,
            duration: Duration::from_secs(10),
            max_requests: None,
            reconnect: false,
            request_timeout: Duration::from_secs(5),
            progress: false,
        };
        let p = o.plan().unwrap();
        assert_eq!(p.groups.len(), 3);
        assert_eq!(p.groups[1].workers, 9);
        assert_eq!(p.groups[1].end, Duration::from_secs(5));
        assert_eq!(p.groups[2].role, Role::LeakIdle);
        assert!(!p.title.contains(":b@"));
    }
}
