// rate-limiter-flexible (RateLimiterRedis on ioredis) deciding over 10,000 keys, for side-by-side
// figures with keel::ratelimit's Redis backend.
//   node rate_limiter_flexible.mjs REDIS_PORT DECISIONS IN_FLIGHT
// Prints one JSON line: {"peer":"rate-limiter-flexible", "decisions", "in_flight", "seconds", "decisions_per_second"}.
import Redis from "ioredis";
import { RateLimiterRedis } from "rate-limiter-flexible";

const [portText, decisionsText = "200000", inFlightText = "128"] = process.argv.slice(2);
const decisions = Number(decisionsText);
const inFlight = Number(inFlightText);
// One connection, pipelining whatever is in flight: ioredis's fastest configuration.
const redis = new Redis({ host: "127.0.0.1", port: Number(portText), enableAutoPipelining: true });
const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: "peer", points: 1_000_000, duration: 60 });

let issued = 0;
let next = 1;
const worker = async () => {
  while (issued < decisions) {
    issued++;
    next = (next * 1103515245 + 12345) % 2147483648;
    await limiter.consume(`user:${next % 10000}`, 1).catch(() => {});
  }
};
await limiter.consume("warm-up", 1);
const started = process.hrtime.bigint();
await Promise.all(Array.from({ length: inFlight }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
redis.disconnect();
console.log(JSON.stringify({ peer: "rate-limiter-flexible", decisions, in_flight: inFlight, seconds, decisions_per_second: decisions / seconds }));
