// mysql2 (Node.js) through poolguard's MySQL door over TLS, verifying its certificate
// against CA. Usage: node mysql_tls.js PORT CA. Prints "tls=<protocol> value=42".
const fs = require('fs');
const mysql = require('mysql2/promise');

const port = Number(process.argv[2]);
const ca = fs.readFileSync(process.argv[3]);

(async () => {
  const c = await mysql.createConnection({
    host: '127.0.0.1', port, user: 'app', password: 'app-secret', database: 'bank',
    ssl: { ca },
  });
  const [[row]] = await c.query('SELECT 40 + 2 AS v');
  console.log(`tls=${c.connection.stream.getProtocol()} value=${row.v}`);
  await c.end();
})().catch((e) => {
  console.error('FAILED:', e.message);
  process.exit(1);
});
