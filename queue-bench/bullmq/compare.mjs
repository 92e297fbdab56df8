// Reads the results of scripts/bench-bullmq.sh from one folder and prints the comparison:
//   bullmq-<run>.json  one line from bench.mjs: {"enqueue_per_s", "e2e_per_s", "jobs", …}
//   plain-<run>.json   queue-bench --json: {"workload": "...", "results": [Row]}, where
//   status-<run>.json  Row = {backend, framework: Run, raw: Run, e2e_ratio, send_ratio} and
//                      Run = {send_per_sec, e2e_per_sec, p50_ms, …} (queue-bench/src/main.rs)
// Each figure is the median of its runs, taken figure by figure.
//
//   node compare.mjs DIR [--json OUT]

import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [dir, ...rest] = process.argv.slice(2);
if (!dir) {
  console.error("usage: node compare.mjs DIR [--json OUT]");
  process.exit(2);
}
const jsonOut = rest[0] === "--json" ? rest[1] : undefined;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function read(file) {
  const text = readFileSync(join(dir, file), "utf8").trim();
  // bench.mjs prints one line; take the last non-empty one in case anything else got in.
  return JSON.parse(file.startsWith("bullmq-") ? text.split("\n").filter(Boolean).pop() : text);
}

function queueBench(j, file) {
  const row = (j.results ?? []).find((r) => r.backend === "redis");
  if (!row?.framework) {
    throw new Error(`no redis row in "results" (was it run with --framework-only? that writes no rows)`);
  }
  return {
    enqueue: row.framework.send_per_sec,
    e2e: row.framework.e2e_per_sec,
    raw_e2e: row.raw?.e2e_per_sec,
    p50_ms: row.framework.p50_ms,
    p99_ms: row.framework.p99_ms,
  };
}

const sides = { bullmq: [], plain: [], status: [] };
for (const f of readdirSync(dir).sort()) {
  const m = /^(bullmq|plain|status)-(\d+)\.json$/.exec(f);
  if (!m) continue;
  try {
    const j = read(f);
    sides[m[1]].push(
      m[1] === "bullmq"
        ? { enqueue: j.enqueue_per_s, e2e: j.e2e_per_s, e2e_started: j.e2e_started_per_s, version: j.bullmq, kept: j.kept_in_redis }
        : queueBench(j, f),
    );
  } catch (e) {
    console.error(`compare.mjs: ${join(dir, f)}: ${e.message}`);
    process.exit(1);
  }
}
for (const [k, v] of Object.entries(sides)) {
  if (!v.length) {
    console.error(`compare.mjs: no ${k}-*.json in ${dir}`);
    process.exit(1);
  }
}

const med = (side, key) => median(sides[side].map((r) => r[key]).filter((x) => typeof x === "number"));
const b = { enqueue: med("bullmq", "enqueue"), e2e: med("bullmq", "e2e") };
const rows = [
  ["bullmq", `BullMQ${sides.bullmq[0].version ? " " + sides.bullmq[0].version : ""} (keeps job state)`],
  ["plain", "queue (plain)"],
  ["status", "queue + job status (Redis)"],
].map(([side, label]) => {
  const enqueue = med(side, "enqueue");
  const e2e = med(side, "e2e");
  return {
    side,
    label,
    runs: sides[side].length,
    enqueue_per_s: enqueue,
    e2e_per_s: e2e,
    enqueue_vs_bullmq: enqueue / b.enqueue,
    e2e_vs_bullmq: e2e / b.e2e,
    e2e_each: sides[side].map((r) => r.e2e),
  };
});

const n0 = (x) => Math.round(x).toLocaleString("en-US");
const r2 = (x) => x.toFixed(2);
const w = Math.max(...rows.map((r) => r.label.length));
console.log(`${"".padEnd(w)}  ${"enqueue jobs/s".padStart(14)}  ${"e2e jobs/s".padStart(10)}  ${"enqueue ÷ BullMQ".padStart(16)}  ${"e2e ÷ BullMQ".padStart(12)}`);
for (const r of rows) {
  console.log(
    `${r.label.padEnd(w)}  ${n0(r.enqueue_per_s).padStart(14)}  ${n0(r.e2e_per_s).padStart(10)}  ${r2(r.enqueue_vs_bullmq).padStart(16)}  ${r2(r.e2e_vs_bullmq).padStart(12)}`,
  );
}
console.log("");
for (const r of rows) console.log(`  e2e of each run, ${r.side}: ${r.e2e_each.map(n0).join(" / ")}`);
const started = med("bullmq", "e2e_started");
if (Number.isFinite(started)) {
  console.log(`  BullMQ e2e to the last job's processor call (where queue-bench stops its clock): ${n0(started)} jobs/s`);
}
const raw = med("plain", "raw_e2e");
if (Number.isFinite(raw)) console.log(`  for scale, raw Redis lists (LPUSH / RPOP n, no lease or ack), e2e: ${n0(raw)} jobs/s`);

if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ rows, runs: sides }, null, 2) + "\n");
