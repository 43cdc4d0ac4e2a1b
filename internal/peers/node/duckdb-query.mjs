// duckdb-query.mjs: runs one SQL query with DuckDB (npm @duckdb/node-api)
// over a walletsync Parquet archive, for Go tests that want an independent
// reader of the archive, and for analysts.
//
//   node duckdb-query.mjs ARCHIVE_DIR (SQL_FILE | SQL | -) [name=value …]
//
// The second argument is a file when one exists at that path, standard
// input when it is "-", else the SQL text itself (several statements may
// be given; the rows printed are the last one's). Each name=value is set
// first as a DuckDB variable, a VARCHAR: SET VARIABLE name = 'value', read
// in the query as getvariable('name') (getvariable('from_day')::DATE), just
// as an analyst would in the DuckDB CLI.
//
// Before the query runs, two views are defined over the archive:
//   events  read_parquet(<the complete files under ARCHIVE_DIR/events/day=*/>, hive_partitioning = true, union_by_name = true)
//   status  the same over ARCHIVE_DIR/status/day=*/
// "Complete" is the archive's own rule (sinks/parquet): files named
// p<partition>-<first>-<last>-<k>of<n>.parquet whose range has all its n
// files; .tmp- files and the files of a range a crash cut short are left
// out, so the query never sees half a roll. The hive column day is a DATE.
// A dataset with no complete file yet is an empty view with its columns.
//
// stdout: one JSON object per result row, keys the column names, in the
// query's order. Integers (TINYINT … HUGEINT, UBIGINT, UHUGEINT) are JSON
// numbers when |v| <= 2^53-1, else decimal strings; DECIMAL is a string;
// DATE is "YYYY-MM-DD"; TIMESTAMP and TIMESTAMPTZ are DuckDB's text
// ("2026-01-01 00:15:00.123+00" for a TIMESTAMPTZ, in the session's
// TimeZone); lists are arrays and structs objects (their integers as
// strings). Errors go to stderr with exit status 1; bad usage exits 2.
//
// DuckDB's TimeZone is left at its default, the process's local zone (TZ),
// as in the DuckDB CLI: a query that wants UTC days must say so, e.g.
// (occurred_at AT TIME ZONE 'UTC')::DATE, since occurred_at is a
// TIMESTAMPTZ and a plain ::DATE cast takes the local day.
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DuckDBInstance, DuckDBTypeId } from '@duckdb/node-api';

function usage(msg) {
  process.stderr.write(`duckdb-query: ${msg}\nusage: node duckdb-query.mjs ARCHIVE_DIR (SQL_FILE | SQL | -) [name=value ...]\n`);
  process.exit(2);
}

const [dirArg, sqlArg, ...paramArgs] = process.argv.slice(2);
if (!dirArg || !sqlArg) usage('want an archive directory and a query');
const dir = resolve(dirArg);
if (!existsSync(dir) || !statSync(dir).isDirectory()) usage(`${dirArg} is not a directory`);
let sql;
if (sqlArg === '-') sql = readFileSync(0, 'utf8');
else if (existsSync(sqlArg) && statSync(sqlArg).isFile()) sql = readFileSync(sqlArg, 'utf8');
else sql = sqlArg;
const params = {};
for (const p of paramArgs) {
  const i = p.indexOf('=');
  if (i <= 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(p.slice(0, i))) usage(`parameter ${JSON.stringify(p)} is not name=value`);
  params[p.slice(0, i)] = p.slice(i + 1);
}

const FILE_RE = /^p(\d+)-(\d+)-(\d+)-(\d+)of(\d+)\.parquet$/;

// completeFiles lists a dataset's files whose offset range has all its files.
function completeFiles(dataset) {
  const root = join(dir, dataset);
  if (!existsSync(root)) return [];
  const ranges = new Map(); // "part-first-last-n" → {n, paths}
  for (const d of readdirSync(root, { withFileTypes: true })) {
    if (!d.isDirectory() || !d.name.startsWith('day=')) continue;
    for (const f of readdirSync(join(root, d.name))) {
      const m = FILE_RE.exec(f);
      if (!m) continue; // .tmp- files and anything else
      const key = `${m[1]}-${m[2]}-${m[3]}-${m[5]}`;
      if (!ranges.has(key)) ranges.set(key, { n: Number(m[5]), paths: [] });
      ranges.get(key).paths.push(join(root, d.name, f));
    }
  }
  const out = [];
  for (const r of ranges.values()) {
    if (r.paths.length === r.n) out.push(...r.paths);
  }
  return out.sort();
}

// The archive's columns (sinks/parquet/rows.go) as DuckDB reads them, for
// a dataset with no file yet.
const EMPTY = {
  events: `event_id VARCHAR, type VARCHAR, platform VARCHAR, customer_id VARCHAR, pass_id VARCHAR, pass_type VARCHAR,
    occurred_at TIMESTAMPTZ, installed BOOLEAN, installed_at TIMESTAMPTZ, source VARCHAR, has_registration BOOLEAN,
    medium VARCHAR, origin VARCHAR, user_agent VARCHAR, tags VARCHAR[], registration_active_count BIGINT,
    registration_total_count BIGINT, kafka_partition INTEGER, kafka_offset BIGINT, day DATE`,
  status: `customer_id VARCHAR, version BIGINT, wallet_status VARCHAR, apple_wallet_installed_at TIMESTAMPTZ,
    google_wallet_installed_at TIMESTAMPTZ, wallet_last_changed_at TIMESTAMPTZ, wallet_last_event VARCHAR,
    kafka_partition INTEGER, kafka_offset BIGINT, first_installed_at TIMESTAMPTZ, pass_issued_at TIMESTAMPTZ, day DATE`,
};

const quote = (s) => `'${s.replaceAll("'", "''")}'`;

function viewSQL(dataset) {
  const files = completeFiles(dataset);
  if (files.length === 0) {
    const cols = EMPTY[dataset].split(',').map((c) => c.trim().split(/\s+/));
    return `CREATE VIEW ${dataset} AS SELECT ${cols.map(([n, t]) => `NULL::${t} AS ${n}`).join(', ')} WHERE false`;
  }
  return `CREATE VIEW ${dataset} AS SELECT * FROM read_parquet([${files.map(quote).join(', ')}], hive_partitioning = true, union_by_name = true)`;
}

const INTEGER_TYPES = new Set([
  DuckDBTypeId.TINYINT, DuckDBTypeId.SMALLINT, DuckDBTypeId.INTEGER, DuckDBTypeId.BIGINT, DuckDBTypeId.HUGEINT,
  DuckDBTypeId.UTINYINT, DuckDBTypeId.USMALLINT, DuckDBTypeId.UINTEGER, DuckDBTypeId.UBIGINT, DuckDBTypeId.UHUGEINT,
]);

function integer(v) {
  if (typeof v !== 'string') return v;
  const b = BigInt(v);
  return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : v;
}

async function main() {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  try {
    await conn.run(viewSQL('events'));
    await conn.run(viewSQL('status'));
    for (const [name, value] of Object.entries(params)) {
      await conn.run(`SET VARIABLE ${name} = ${quote(value)}`);
    }
    const reader = await conn.streamAndReadAll(sql); // runs every statement, reads the last
    const names = reader.columnNames();
    const ints = reader.columnTypes().map((t) => INTEGER_TYPES.has(t.typeId));
    const out = [];
    for (const row of reader.getRowsJson()) {
      const obj = {};
      row.forEach((v, i) => {
        obj[names[i]] = ints[i] ? integer(v) : v;
      });
      out.push(JSON.stringify(obj) + '\n');
    }
    process.stdout.write(out.join(''));
  } finally {
    conn.closeSync();
    instance.closeSync();
  }
}

main().catch((err) => {
  process.stderr.write(`duckdb-query: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
