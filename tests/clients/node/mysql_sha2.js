// mysql2 (Node.js) logging in to poolguard's MySQL door with caching_sha2_password in
// plaintext: full authentication asks for poolguard's RSA key and encrypts with RSA-OAEP.
// Usage: node mysql_sha2.js PORT PASSWORD. Prints "value=42", or "error=<errno>".
const mysql = require('mysql2/promise');

const port = Number(process.argv[2]);
const password = process.argv[3];

(async () => {
  let c;
  try {
    c = await mysql.createConnection({
      host: '127.0.0.1', port, user: 'app', password, database: 'bank',
    });
  } catch (e) {
    console.log(`error=${e.errno}`);
    return;
  }
  const [[row]] = await c.query('SELECT 40 + 2 AS v');
  console.log(`value=${row.v}`);
  await c.end();
})().catch((e) => {
  console.error('FAILED:', e.message);
  process.exit(1);
});
