// node-postgres named queries (prepared statements) through poolguard: a pg.Pool of 50 on a
// poolguard pool of 2 servers. Prints OK on success, exits 1 otherwise.
const { Pool } = require('pg');

const url = process.argv[2];
const pool = new Pool({ connectionString: url, max: 50 });

async function worker(i) {
  const client = await pool.connect();
  try {
    for (let r = 0; r < 20; r++) {
      // Every client uses the same names; texts differ per client for "mine".
      const mine = await client.query({ name: 'mine', text: `SELECT $1::int * ${i} AS v`, values: [r] });
      if (mine.rows[0].v !== r * i) throw new Error(`client ${i} round ${r}: got ${mine.rows[0].v}`);
      const shared = await client.query({ name: 'shared', text: 'SELECT $1::text AS v', values: [`x${i}`] });
      if (shared.rows[0].v !== `x${i}`) throw new Error(`shared: ${shared.rows[0].v}`);
    }
  } finally {
    client.release();
  }
}

const timer = setTimeout(() => { console.error('timed out'); process.exit(1); }, 60000);
Promise.all(Array.from({ length: 50 }, (_, i) => worker(i)))
  .then(async () => { await pool.end(); clearTimeout(timer); console.log('OK'); })
  .catch((e) => { console.error(e); process.exit(1); });
