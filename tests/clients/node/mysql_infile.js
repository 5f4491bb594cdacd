// LOAD DATA LOCAL INFILE of a 300 KB file through mysql2, which sends a file stream in
// packets as large as the stream's chunks (64 KiB): poolguard must relay packets longer than
// what it buffers from a busy client. Usage: node mysql_infile.js PORT. Prints the row count.
const fs = require('fs');
const os = require('os');
const path = require('path');
const mysql = require('mysql2/promise');

const port = Number(process.argv[2]);
const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'infile-')), 'rows.txt');
const rows = 30000;
fs.writeFileSync(file, Array.from({ length: rows }, (_, i) => `${i}\trow number ${i}\n`).join(''));

(async () => {
  const c = await mysql.createConnection({
    host: '127.0.0.1', port, user: 'app', password: 'app-secret', database: 'bank',
    infileStreamFactory: () => fs.createReadStream(file),
  });
  await c.query('CREATE TABLE IF NOT EXISTS infile_rows (id INT, label VARCHAR(40))');
  await c.query('DELETE FROM infile_rows');
  await c.query(`LOAD DATA LOCAL INFILE '${file}' INTO TABLE infile_rows`);
  const [r] = await c.query('SELECT COUNT(*) AS n FROM infile_rows');
  console.log(String(r[0].n));
  await c.end();
})().catch((e) => {
  console.error('FAILED:', e.message);
  process.exit(1);
});
