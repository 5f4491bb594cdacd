// MariaDB's JSON columns through mysql2: with MariaDB's extended type information (which
// mysql2 asks for when the greeting offers it) a JSON column is described as JSON, and mysql2
// parses its values, as on a direct connection; prepared statements (execute) alike, and a
// second client without the choice shares nothing with the first's server connections.
// Usage: node mysql_json.js PORT. Prints the column's type and the value's JavaScript type.
const mysql = require('mysql2/promise');

const port = Number(process.argv[2]);
const cfg = { host: '127.0.0.1', port, user: 'app', password: 'app-secret', database: 'bank' };

(async () => {
  const c = await mysql.createConnection(cfg);
  await c.query('CREATE TABLE IF NOT EXISTS js (id INT PRIMARY KEY, doc JSON)');
  await c.query('REPLACE INTO js VALUES (1, \'{"test": true}\')');
  const [rows, fields] = await c.query('SELECT doc FROM js WHERE id = 1');
  const [erows, efields] = await c.execute('SELECT doc FROM js WHERE id = ?', [1]);
  console.log(JSON.stringify({
    query: [fields[0].type, typeof rows[0].doc],
    execute: [efields[0].type, typeof erows[0].doc],
  }));
  await c.end();
})().catch((e) => {
  console.error('FAILED:', e.message);
  process.exit(1);
});
