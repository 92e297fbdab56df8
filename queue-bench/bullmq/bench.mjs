// One run of queue-bench's throughput workload with BullMQ, on the same Redis, for
// scripts/bench-bullmq.sh (which alternates it with queue-bench and prints the ratios).
//
//   node bench.mjs --jobs 30000 --batch 1000 --concurrency 50 --payload 100 \
//       --redis redis://127.0.0.1:6379
//
// What it does, mirroring queue-bench's framework side (queue-bench/src/main.rs):
// - a fresh queue name per run; one Worker (concurrency C, a no-op processor) started and
//   connected before the clock starts, as queue-bench starts its worker before producing;
// - the clock starts, one producer enqueues N jobs with `queue.addBulk` in batches of B,
//   one batch after another (queue-bench --producers 1); "enqueue" is that whole loop;
// - "e2e" runs from the same start until the worker has emitted 'completed' for the N-th
//   job (BullMQ has moved it to the completed state). queue-bench counts a job when its
//   handler starts; the time to the N-th processor call is printed beside it as
//   e2e_started_per_s, so the two definitions can be compared;
// - then the worker is closed, the queue obliterated (every key it made is deleted) and
//   one JSON line printed on stdout: {"enqueue_per_s":…, "e2e_per_s":…, "jobs":N, …}.
// The whole run is bounded by --timeout seconds (120 by default): past it, it cleans up
// what it can and exits 1.
//
// Job state: BullMQ always keeps every job's state in Redis while the job lives (a hash per
// job, and the wait/active/completed lists and sets). What happens on completion is
// `removeOnComplete`, and its default is false: a completed job's hash and its entry in the
// completed set stay until something removes them. We keep that default. The point of the
// comparison is what a BullMQ user gets with no option set (the docs suggest setting
// removeOnComplete/removeOnFail for production, but it is opt-in), and it is the like-for-
// like partner of this project's `--status` run, which also keeps every finished job's
// record (for a day by default). Redis memory stays bounded here because each run's queue
// is obliterated at its end (30,000 jobs of 100 bytes are a few tens of MB meanwhile).
// `--remove-on-complete` measures the other common setting (removeOnComplete: true).
//
// Sends traffic only to loopback: a Redis URL whose host is not 127.0.0.0/8, ::1 or
// localhost is refused.

import { Queue, Worker } from "bullmq";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require("bullmq/package.json").version;

function usage(msg) {
  if (msg) console.error(`bench.mjs: ${msg}`);
  console.error(
    "usage: node bench.mjs [--jobs N] [--batch B] [--concurrency C] [--payload BYTES]\n" +
      "                      [--redis redis://127.0.0.1:6379] [--timeout SECONDS] [--remove-on-complete]",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    jobs: 30000,
    batch: 1000,
    concurrency: 50,
    payload: 100,
    redis: "redis://127.0.0.1:6379",
    timeout: 120,
    removeOnComplete: false,
  };
  const ints = { "--jobs": "jobs", "--batch": "batch", "--concurrency": "concurrency", "--payload": "payload", "--timeout": "timeout" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") usage();
    else if (a === "--remove-on-complete") o.removeOnComplete = true;
    else if (a === "--redis") {
      if (i + 1 >= argv.length) usage("--redis needs a URL");
      o.redis = argv[++i];
    } else if (a in ints) {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) usage(`${a} needs a positive integer`);
      o[ints[a]] = v;
    } else usage(`unknown argument ${a}`);
  }
  return o;
}

// ioredis options for a redis:// URL on loopback (BullMQ wants maxRetriesPerRequest null
// on the worker's connections; the queue's may have it too).
function connectionFor(urlText) {
  let u;
  try {
    u = new URL(urlText);
  } catch {
    usage(`bad Redis URL ${urlText}`);
  }
  if (u.protocol !== "redis:") usage("only redis:// URLs (no TLS: loopback only)");
  const host = u.hostname.replace(/^\[|\]$/g, "");
  if (!(host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host))) {
    usage(`refusing non-loopback Redis host ${host}: this benchmark only targets a local Redis`);
  }
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  return {
    host,
    port: u.port ? Number(u.port) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    db: Number.isInteger(db) ? db : 0,
    maxRetriesPerRequest: null,
  };
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

const o = parseArgs(process.argv.slice(2));
const connection = connectionFor(o.redis);
const name = `bench-bullmq-${process.pid}-${Date.now()}`;
// ~payload bytes of job data once JSON-encoded: {"p":"xxx…"} is 8 bytes plus the string.
const data = { p: "x".repeat(Math.max(0, o.payload - 8)) };
const jobOpts = o.removeOnComplete ? { removeOnComplete: true } : {};

let queue;
let worker;
let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  // The worker first (obliterate refuses a queue with active jobs unless forced; closing
  // the worker lets its active jobs finish and stops it fetching more).
  if (worker) await worker.close(true).catch(() => {});
  if (queue) {
    await queue.obliterate({ force: true }).catch((e) => console.error(`bench.mjs: obliterate ${name}: ${e.message}`));
    await queue.close().catch(() => {});
  }
}

async function fail(msg) {
  console.error(`bench.mjs: ${msg}`);
  await withTimeout(cleanup(), 15000, "cleanup").catch((e) => console.error(`bench.mjs: ${e.message}`));
  process.exit(1);
}

const deadline = setTimeout(() => fail(`run not finished within ${o.timeout} s`), o.timeout * 1000);

try {
  queue = new Queue(name, { connection });
  queue.on("error", (e) => console.error(`bench.mjs: queue: ${e.message}`));
  await withTimeout(queue.waitUntilReady(), 10000, `Redis at ${connection.host}:${connection.port}`);

  let started = 0;
  let completed = 0;
  let tLastStart = 0;
  let resolveDone;
  let rejectDone;
  const done = new Promise((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });

  worker = new Worker(
    name,
    async () => {
      // No-op, as queue-bench's `--handler none`.
      if (++started === o.jobs) tLastStart = performance.now();
    },
    { connection, concurrency: o.concurrency },
  );
  worker.on("completed", () => {
    if (++completed === o.jobs) resolveDone(performance.now());
  });
  worker.on("failed", (job, err) => rejectDone(new Error(`job ${job?.id} failed: ${err?.message}`)));
  worker.on("error", (e) => console.error(`bench.mjs: worker: ${e.message}`));
  await withTimeout(worker.waitUntilReady(), 10000, "worker connection");

  const t0 = performance.now();
  for (let left = o.jobs; left > 0; ) {
    const k = Math.min(left, o.batch);
    const batch = new Array(k);
    for (let i = 0; i < k; i++) batch[i] = { name: "noop", data, opts: jobOpts };
    await queue.addBulk(batch);
    left -= k;
  }
  const tEnqueued = performance.now();
  const tDone = await done;

  // Outside the timing: what BullMQ kept in Redis for this run's jobs.
  const counts = await queue.getJobCounts("completed", "failed", "wait", "active", "delayed");
  await cleanup();
  clearTimeout(deadline);

  const s = (ms) => ms / 1000;
  const round = (x) => Math.round(x * 10) / 10;
  console.log(
    JSON.stringify({
      enqueue_per_s: round(o.jobs / s(tEnqueued - t0)),
      e2e_per_s: round(o.jobs / s(tDone - t0)),
      jobs: o.jobs,
      e2e_started_per_s: round(o.jobs / s(tLastStart - t0)),
      enqueue_s: s(tEnqueued - t0),
      e2e_s: s(tDone - t0),
      batch: o.batch,
      concurrency: o.concurrency,
      payload: o.payload,
      remove_on_complete: o.removeOnComplete,
      kept_in_redis: counts,
      bullmq: BULLMQ_VERSION,
      node: process.version,
    }),
  );
  process.exit(0);
} catch (e) {
  await fail(e?.message ?? String(e));
}
