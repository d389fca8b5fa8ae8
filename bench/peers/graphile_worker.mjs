// graphile-worker processing no-op jobs, for side-by-side figures with keel::jobs.
//   node graphile_worker.mjs CONNINFO JOBS CONCURRENCY default|batched
// Prints one JSON line: {"peer":"graphile-worker", "mode", "jobs", "concurrency", "seconds", "jobs_per_second"}.
import { Logger, run, runMigrations } from "graphile-worker";
import pg from "pg";

const [conninfo, jobsText = "20000", concurrencyText = "10", mode = "batched"] = process.argv.slice(2);
const jobs = Number(jobsText);
const concurrency = Number(concurrencyText);
// "batched" is graphile-worker's documented tuning for throughput (local queue, batched
// completions); "default" is what a new user gets.
const tuning =
  mode === "batched"
    ? { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
    : {};
const quiet = new Logger(() => () => {});
const preset = { worker: { connectionString: conninfo, concurrentJobs: concurrency, pollInterval: 1000, ...tuning } };

const client = new pg.Client({ connectionString: conninfo });
await client.connect();
await client.query("DROP SCHEMA IF EXISTS graphile_worker CASCADE");
await runMigrations({ preset, logger: quiet });
// Enqueue in one statement, as the keel benchmark does, before the workers start.
await client.query(
  "SELECT graphile_worker.add_jobs(array_agg(ROW('noop', json_build_object('i', i), NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec)) FROM generate_series(1, $1) i",
  [jobs],
);

let done = 0;
let finished;
const allDone = new Promise((resolve) => (finished = resolve));
const started = process.hrtime.bigint();
const runner = await run({
  preset,
  noHandleSignals: true,
  logger: quiet,
  crontab: "",
  taskList: {
    noop: async () => {
      if (++done === jobs) finished();
    },
  },
});
await allDone;
// Timed like keel's benchmark: until every handler returned. Batched completions are then
// flushed, untimed, and checked.
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
for (;;) {
  const { rows } = await client.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
  if (rows[0].n === 0) break;
  await new Promise((r) => setTimeout(r, 5));
}
await runner.stop();
await client.end();
console.log(JSON.stringify({ peer: "graphile-worker", mode, jobs, concurrency, seconds, jobs_per_second: jobs / seconds }));
