#!/usr/bin/env node
// node-postgres through poolguard in transaction mode: a pg.Pool as a Node.js service uses it.
//
// Usage: node pg_basic.js URL
//
// Queries carry no `name:` (named prepared statements across transactions are a later issue),
// so parameterised queries are unnamed Parse/Bind/Execute. Prints OK and exits 0 on success;
// any failed check exits 1 with the reason. A watchdog bounds the whole run.

'use strict';

const assert = require('assert');
const { Pool } = require('pg');

const url = process.argv[2];
if (!url) {
  console.error('usage: node pg_basic.js URL');
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error('pg_basic.js: watchdog: did not finish within 90 s');
  process.exit(3);
}, 90_000);

async function main() {
  const pool = new Pool({
    connectionString: url,
    max: 20,
    connectionTimeoutMillis: 20_000,
    idleTimeoutMillis: 10_000,
  });
  const poolErrors = [];
  pool.on('error', (e) => poolErrors.push(`${e.code || ''} ${e.message}`));

  try {
    // Parameterised queries.
    let r = await pool.query('SELECT $1::int + $2::int AS s', [40, 2]);
    assert.strictEqual(r.rows[0].s, 42);
    r = await pool.query('SELECT current_user AS u, current_database() AS d');
    assert.deepStrictEqual(r.rows[0], { u: 'app', d: 'bank' });

    await pool.query('DROP TABLE IF EXISTS node_accounts');
    await pool.query('CREATE TABLE node_accounts (id int PRIMARY KEY, owner text, balance int NOT NULL)');
    for (let i = 1; i <= 10; i++) {
      await pool.query('INSERT INTO node_accounts VALUES ($1, $2, $3)', [i, `owner-${i}`, 100]);
    }
    r = await pool.query('SELECT owner, balance FROM node_accounts WHERE id = $1', [7]);
    assert.deepStrictEqual(r.rows, [{ owner: 'owner-7', balance: 100 }]);
    r = await pool.query('SELECT $1::text IS NULL AS n, $2::text AS u', [null, 'zürich ✓ 🐘']);
    assert.deepStrictEqual(r.rows[0], { n: true, u: 'zürich ✓ 🐘' });

    // A transaction that commits: a transfer.
    let c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('UPDATE node_accounts SET balance = balance - $1 WHERE id = $2', [30, 1]);
      await c.query('UPDATE node_accounts SET balance = balance + $1 WHERE id = $2', [30, 2]);
      r = await c.query('SELECT balance FROM node_accounts WHERE id = $1', [1]);
      assert.strictEqual(r.rows[0].balance, 70, 'own write visible inside the transaction');
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    r = await pool.query('SELECT id, balance FROM node_accounts WHERE id IN (1, 2) ORDER BY id');
    assert.deepStrictEqual(r.rows, [{ id: 1, balance: 70 }, { id: 2, balance: 130 }]);

    // A transaction that rolls back.
    c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('UPDATE node_accounts SET balance = 0 WHERE id = $1', [3]);
      await c.query('INSERT INTO node_accounts VALUES ($1, $2, $3)', [99, 'ghost', 1]);
      await c.query('ROLLBACK');
    } finally {
      c.release();
    }
    r = await pool.query('SELECT (SELECT balance FROM node_accounts WHERE id = 3) AS b, (SELECT count(*)::int FROM node_accounts WHERE id = 99) AS n');
    assert.deepStrictEqual(r.rows[0], { b: 100, n: 0 }, 'rollback undid the update and the insert');

    // An error inside a transaction, then ROLLBACK, and the client is fine.
    c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('UPDATE node_accounts SET balance = 1 WHERE id = $1', [4]);
      await assert.rejects(c.query('SELECT 1 / $1::int', [0]), (e) => e.code === '22012');
      await assert.rejects(c.query('SELECT 1'), (e) => e.code === '25P02');
      await c.query('ROLLBACK');
      r = await c.query('SELECT balance FROM node_accounts WHERE id = $1', [4]);
      assert.strictEqual(r.rows[0].balance, 100);
    } finally {
      c.release();
    }

    // 200 concurrent small queries over the 20-client pool, each answered with its own value.
    const N = 200;
    const results = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        pool.query('SELECT $1::int * 3 AS v, $2::text AS tag', [i, `q${i}`]).then((res) => res.rows[0]),
      ),
    );
    results.forEach((row, i) => assert.deepStrictEqual(row, { v: i * 3, tag: `q${i}` }));

    // Concurrent transfers in transactions: the total balance is conserved.
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const from = (i % 10) + 1;
        const to = ((i + 3) % 10) + 1;
        const cl = await pool.connect();
        try {
          await cl.query('BEGIN');
          await cl.query('UPDATE node_accounts SET balance = balance - 1 WHERE id = $1', [from]);
          await cl.query('UPDATE node_accounts SET balance = balance + 1 WHERE id = $1', [to]);
          await cl.query('COMMIT');
        } catch (e) {
          await cl.query('ROLLBACK').catch(() => {});
          throw e;
        } finally {
          cl.release();
        }
      }),
    );
    r = await pool.query('SELECT sum(balance)::int AS total FROM node_accounts');
    assert.strictEqual(r.rows[0].total, 1000, 'balance conserved across concurrent transfers');

    // An error query outside a transaction is rejected with its SQLSTATE; the pool stays healthy.
    await assert.rejects(pool.query('SELECT 1 / 0'), (e) => e.code === '22012' && /division by zero/.test(e.message));
    await assert.rejects(pool.query('SELECT * FROM no_such_table_here'), (e) => e.code === '42P01');
    const after = await Promise.all(
      Array.from({ length: 40 }, (_, i) => pool.query('SELECT $1::int AS v', [i]).then((res) => res.rows[0].v)),
    );
    assert.deepStrictEqual(after, Array.from({ length: 40 }, (_, i) => i));

    await pool.query('DROP TABLE node_accounts');
    assert.deepStrictEqual(poolErrors, [], 'no idle-client errors on the pool');
  } finally {
    await pool.end();
  }
}

main().then(
  () => {
    clearTimeout(watchdog);
    console.log('OK');
    process.exit(0);
  },
  (e) => {
    console.error('pg_basic.js failed:', e && e.stack ? e.stack : e);
    process.exit(1);
  },
);
