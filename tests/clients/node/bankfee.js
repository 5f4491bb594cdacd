#!/usr/bin/env node
// The bank-fee incident, replayed: a Node.js service using pg-pool checks connections out and
// never releases them, some of them in the middle of a transaction. Beside the leaky code, a
// healthy request loop keeps asking for a fresh connection and a short write every ~100 ms.
//
// Usage:
//   node bankfee.js URL --leak-idle N --leak-in-tx M --healthy-seconds S [--late-commit]
//
//   --leak-idle N      check out N clients with pool.connect(), run one query, never release them
//   --leak-in-tx M     check out M clients, BEGIN; INSERT a 'leaked-tx' ledger row; never COMMIT
//                      and never release them
//   --healthy-seconds  how long the healthy loop runs (it starts with the in-transaction leaks)
//                      (a refused checkout is retried every ~100 ms until the healthy loop ends,
//                      as the leaky service keeps receiving requests)
//   --late-commit      at the end, the leaky code finally sends COMMIT on its in-transaction
//                      clients (as buggy code often does, much later); reports what got through
//
// The ledger table `bankfee_ledger(kind, n)` is created first. Healthy requests INSERT a
// 'healthy' row (autocommit) and check the id comes back, so a caller can count them afterwards.
// Prints one JSON line with the figures and exits by itself: a watchdog bounds the whole run.

'use strict';

const { Client, Pool } = require('pg');

function parseArgs(argv) {
  const opts = { url: null, leakIdle: 0, leakInTx: 0, healthySeconds: 5, lateCommit: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a} needs a non-negative integer`);
      return v;
    };
    if (a === '--leak-idle') opts.leakIdle = num();
    else if (a === '--leak-in-tx') opts.leakInTx = num();
    else if (a === '--healthy-seconds') opts.healthySeconds = num();
    else if (a === '--late-commit') opts.lateCommit = true;
    else if (!a.startsWith('--') && !opts.url) opts.url = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.url) throw new Error('usage: bankfee.js URL --leak-idle N --leak-in-tx M --healthy-seconds S [--late-commit]');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const CONNECT_TIMEOUT_MS = 3000;
const QUERY_TIMEOUT_MS = 10_000;

const report = {
  // Clients leaked, and checkout attempts refused (each is retried), per kind of leak.
  leaked_idle_ok: 0,
  leaked_idle_failed: 0,
  leaked_tx_ok: 0,
  leaked_tx_failed: 0,
  // Errors the leaked clients received later, while sitting checked out (e.g. 25P03 when the
  // proxy reclaims an idle transaction), by SQLSTATE.
  leaked_kicked: {},
  healthy_ok: 0,
  healthy_failed: 0,
  // Healthy-loop failures by SQLSTATE (or message when there is none), and one message each.
  errors: {},
  error_messages: {},
  late_commit_ok: 0,
  late_commit_failed: 0,
  setup_error: null,
  watchdog: false,
};

function codeOf(e) {
  return (e && (e.code || e.message)) || String(e);
}

function count(map, key) {
  map[key] = (map[key] || 0) + 1;
}

function finish(exitCode) {
  console.log(JSON.stringify(report));
  process.exit(exitCode);
}

// Bounded: leaks settle within connect + query timeouts, the healthy loop has its own end.
const watchdog = setTimeout(() => {
  report.watchdog = true;
  finish(3);
}, (opts.healthySeconds + 60) * 1000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function setup() {
  const c = new Client({ connectionString: opts.url, connectionTimeoutMillis: 20_000, query_timeout: QUERY_TIMEOUT_MS });
  await c.connect();
  try {
    await c.query(
      'CREATE TABLE IF NOT EXISTS bankfee_ledger (id bigserial PRIMARY KEY, kind text NOT NULL, n int NOT NULL, at timestamptz NOT NULL DEFAULT now())',
    );
  } finally {
    await c.end();
  }
}

// The leaky service: one big pool, as the incident's service had.
const leakyPool = new Pool({
  connectionString: opts.url,
  max: 50,
  connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  query_timeout: QUERY_TIMEOUT_MS,
});
// Errors on idle pooled clients (none should be idle, but never crash on them).
leakyPool.on('error', (e) => count(report.leaked_kicked, codeOf(e)));

function watchLeaked(client) {
  // A checked-out client that the server or proxy disconnects emits 'error' on the client.
  client.on('error', (e) => count(report.leaked_kicked, codeOf(e)));
}

// A leak is a request that keeps coming back (the service keeps receiving requests that leak):
// a refused checkout is retried every ~100 ms until it succeeds or the run's leak deadline.
let leakDeadline = 0;

async function leakWithRetry(attempt, okKey, failedKey) {
  while (true) {
    const c = await attempt().catch(() => null);
    if (c) {
      report[okKey]++;
      return c; // never released
    }
    report[failedKey]++;
    if (Date.now() >= leakDeadline) return null;
    await sleep(100);
  }
}

async function leakIdle(i) {
  return leakWithRetry(
    async () => {
      const c = await leakyPool.connect();
      watchLeaked(c);
      try {
        await c.query('SELECT $1::int AS n', [i]);
      } catch (e) {
        c.release(true);
        throw e;
      }
      return c;
    },
    'leaked_idle_ok',
    'leaked_idle_failed',
  );
}

async function leakInTx(i) {
  return leakWithRetry(
    async () => {
      const c = await leakyPool.connect();
      watchLeaked(c);
      try {
        await c.query('BEGIN');
        await c.query("INSERT INTO bankfee_ledger (kind, n) VALUES ('leaked-tx', $1)", [i]);
      } catch (e) {
        c.release(true);
        throw e;
      }
      return c; // never committed
    },
    'leaked_tx_ok',
    'leaked_tx_failed',
  );
}

async function healthyOnce(n) {
  const c = new Client({
    connectionString: opts.url,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    query_timeout: QUERY_TIMEOUT_MS,
  });
  c.on('error', () => {});
  try {
    await c.connect();
    const r = await c.query("INSERT INTO bankfee_ledger (kind, n) VALUES ('healthy', $1) RETURNING n", [n]);
    if (r.rows.length !== 1 || r.rows[0].n !== n) throw new Error(`wrong answer ${JSON.stringify(r.rows)}`);
    report.healthy_ok++;
  } catch (e) {
    report.healthy_failed++;
    const key = codeOf(e);
    count(report.errors, key);
    if (!report.error_messages[key]) report.error_messages[key] = String(e && e.message);
  } finally {
    await c.end().catch(() => {});
  }
}

async function main() {
  try {
    await setup();
  } catch (e) {
    report.setup_error = `${codeOf(e)} ${e && e.message}`;
    finish(2);
  }

  leakDeadline = Date.now() + opts.healthySeconds * 1000;
  // First the idle leaks: requests that checked a client out, used it, and forgot release().
  await Promise.all(Array.from({ length: opts.leakIdle }, (_, i) => leakIdle(i)));

  // Then a burst of requests that leak in the middle of a transaction, while the healthy
  // traffic runs beside them: a fresh connection and a short write every ~100 ms.
  const inTx = Promise.all(Array.from({ length: opts.leakInTx }, (_, i) => leakInTx(i)));
  const end = Date.now() + opts.healthySeconds * 1000;
  let n = 0;
  while (Date.now() < end) {
    await healthyOnce(n++);
    await sleep(100);
  }
  const txClients = (await inTx).filter(Boolean);

  if (opts.lateCommit) {
    await Promise.all(
      txClients.map((c) =>
        c.query('COMMIT').then(
          (r) => {
            // A COMMIT on an aborted transaction answers ROLLBACK, not an error.
            if (r.command === 'COMMIT') report.late_commit_ok++;
            else report.late_commit_failed++;
          },
          () => report.late_commit_failed++,
        ),
      ),
    );
  }

  clearTimeout(watchdog);
  finish(0);
}

main().catch((e) => {
  report.setup_error = `unexpected: ${e && e.stack ? e.stack : e}`;
  finish(1);
});
