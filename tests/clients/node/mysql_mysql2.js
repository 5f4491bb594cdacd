// mysql2 (Node.js) through poolguard: a mysql2 pool of 10 running 40 concurrent transactions
// with prepared statements (execute), queries, COM_CHANGE_USER and COM_PING.
// Usage: node mysql_mysql2.js PORT. Prints OK.
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
  const pool = mysql.createPool({ ...cfg, connectionLimit: 10 });
  await pool.query('CREATE TABLE js_counter (id INT PRIMARY KEY, n INT)');
  await pool.execute('INSERT INTO js_counter VALUES (?, ?)', [1, 0]);
  const work = [];
  for (let i = 0; i < 40; i++) {
    work.push((async () => {
      const c = await pool.getConnection();
      try {
        await c.beginTransaction();
        const [rows] = await c.execute('SELECT n FROM js_counter WHERE id = ? FOR UPDATE', [1]);
        await c.execute('UPDATE js_counter SET n = ? WHERE id = ?', [rows[0].n + 1, 1]);
        await c.commit();
      } finally {
        c.release();
      }
    })());
  }
  await Promise.all(work);
  const [[row]] = await pool.execute('SELECT n FROM js_counter WHERE id = ?', [1]);
  check(row.n === 40, `counter ${row.n}`);

  const c = await mysql.createConnection(cfg);
  await c.ping();
  await c.query('SET SESSION time_zone = ?', ['+02:00']);
  await c.changeUser({ user: 'app', password: 'app-secret', database: 'bank' });
  const [[tz]] = await c.query('SELECT @@time_zone AS tz');
  check(tz.tz === 'SYSTEM', `COM_CHANGE_USER resets the session: ${tz.tz}`);
  const [[v]] = await c.execute('SELECT ? AS v', ['after change user']);
  check(v.v === 'after change user', 'execute after change user');
  let refused = false;
  try {
    await c.changeUser({ user: 'app', password: 'wrong', database: 'bank' });
  } catch (e) {
    refused = e.errno === 1045;
  }
  check(refused, 'COM_CHANGE_USER with a wrong password gets 1045');
  c.destroy();
  await pool.end();
  console.log('OK');
})().catch((e) => {
  console.error('ERROR', e);
  process.exit(1);
});
