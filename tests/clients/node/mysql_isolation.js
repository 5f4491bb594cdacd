// Prepared statements of two mysql2 connections sharing one server connection through
// poolguard's transaction mode (pool_size 1): each connection's statement ids are its own,
// executes land on statements with the right text, and parameter types bound by one client's
// execute never leak into another's. Usage: node mysql_isolation.js PORT
const mysql = require('mysql2/promise');

const port = Number(process.argv[2]);
const cfg = { host: '127.0.0.1', port, user: 'app', password: 'app-secret', database: 'bank' };

function check(cond, what) {
  if (!cond) {
    console.error('FAILED:', what);
    process.exit(1);
  }
}

(async () => {
  const c1 = await mysql.createConnection(cfg);
  const c2 = await mysql.createConnection(cfg);
  // Both get poolguard's id 1 for their first statement; on the server they differ.
  const [a] = await c1.execute("SELECT 'one' AS v, ? AS p", ['x']);
  const [b] = await c2.execute("SELECT 'two' AS v, ? + 1 AS p", [41]);
  check(a[0].v === 'one' && a[0].p === 'x', `c1 first: ${JSON.stringify(a)}`);
  check(b[0].v === 'two' && Number(b[0].p) === 42, `c2 first: ${JSON.stringify(b)}`);
  // Interleaved executes of cached statements, with different parameter types.
  for (let i = 0; i < 20; i++) {
    const [r1] = await c1.execute("SELECT 'one' AS v, ? AS p", [`s${i}`]);
    const [r2] = await c2.execute("SELECT 'two' AS v, ? + 1 AS p", [i]);
    check(r1[0].v === 'one' && r1[0].p === `s${i}`, `c1 loop ${i}: ${JSON.stringify(r1)}`);
    check(r2[0].v === 'two' && Number(r2[0].p) === i + 1, `c2 loop ${i}: ${JSON.stringify(r2)}`);
  }
  // The same text from both clients shares the server statement, with each client's types.
  const same = 'SELECT ? AS v';
  const [s1] = await c1.execute(same, ['text']);
  const [s2] = await c2.execute(same, [7]);
  const [s3] = await c1.execute(same, ['again']);
  check(s1[0].v === 'text' && Number(s2[0].v) === 7 && s3[0].v === 'again',
    `shared text: ${JSON.stringify([s1, s2, s3])}`);
  // Statements inside transactions, and LAST_INSERT_ID per client.
  await c1.query('CREATE TABLE IF NOT EXISTS ps_ids (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(5))');
  await c1.beginTransaction();
  const [i1] = await c1.execute('INSERT INTO ps_ids (who) VALUES (?)', ['c1']);
  await c1.commit();
  const [i2] = await c2.execute('INSERT INTO ps_ids (who) VALUES (?)', ['c2']);
  const [l1] = await c1.execute('SELECT LAST_INSERT_ID() AS id');
  const [l2] = await c2.execute('SELECT LAST_INSERT_ID() AS id');
  check(Number(l1[0].id) === i1.insertId && Number(l2[0].id) === i2.insertId && i1.insertId !== i2.insertId,
    `LAST_INSERT_ID: ${JSON.stringify([i1.insertId, i2.insertId, l1, l2])}`);
  // Closing a statement is local; the other client's same text keeps working.
  await c1.unprepare(same);
  const [s4] = await c2.execute(same, ['still']);
  check(s4[0].v === 'still', `after unprepare: ${JSON.stringify(s4)}`);
  // An error in one client's statement does not disturb the other.
  let failed = false;
  try { await c1.execute('SELECT * FROM no_such_table WHERE id = ?', [1]); } catch (e) { failed = e.errno === 1146; }
  check(failed, 'missing table is reported as 1146');
  const [ok] = await c2.execute("SELECT 'two' AS v, ? + 1 AS p", [1]);
  check(ok[0].v === 'two', 'c2 after c1 error');
  await c1.end();
  await c2.end();
  console.log('OK');
})().catch((e) => {
  console.error('ERROR', e);
  process.exit(1);
});
