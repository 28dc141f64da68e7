/** The metrics the HTTP front end exports at `GET /metrics`, all named `medglm_*`. */
import type { Engine } from "../engine/types.ts";
import type { Admission } from "./admission.ts";
import { type Counter, createRegistry, type Histogram, type MetricsRegistry } from "./metrics.ts";

export interface ServingMetrics {
  registry: MetricsRegistry;
  /** Requests by route pattern and status code. */
  requests: Counter;
  /** Generation requests refused, by reason (`queue_full`). */
  rejected: Counter;
  /** Finished generations by finish reason (`stop`, `length`, `abort`, `error`). */
  finished: Counter;
  promptTokens: Counter;
  tokensGenerated: Counter;
  /** Sequences decoding together when one more starts decoding. */
  batchSize: Histogram;
  queueWait: Histogram;
  timeToFirstToken: Histogram;
  timePerOutputToken: Histogram;
  requestDuration: Histogram;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128];

export function createServingMetrics(
  admission: Admission,
  engine: () => Engine | undefined,
): ServingMetrics {
  const r = createRegistry();
  const metrics: ServingMetrics = {
    registry: r,
    requests: r.counter("medglm_http_requests_total", "HTTP requests by route and status code."),
    rejected: r.counter(
      "medglm_requests_rejected_total",
      "Generation requests refused with 429 because every slot and queue place was taken.",
    ),
    finished: r.counter(
      "medglm_generations_finished_total",
      "Finished generations by finish reason (stop, length, abort, error).",
    ),
    promptTokens: r.counter("medglm_prompt_tokens_total", "Prompt tokens of admitted requests."),
    tokensGenerated: r.counter("medglm_tokens_generated_total", "Completion tokens generated."),
    batchSize: r.histogram(
      "medglm_batch_size",
      "Sequences decoding together, observed each time a sequence is admitted to decode.",
      BATCH_BUCKETS,
    ),
    queueWait: r.histogram(
      "medglm_queue_wait_seconds",
      "Time admitted requests waited in the queue for a decode slot.",
      LATENCY_BUCKETS,
    ),
    timeToFirstToken: r.histogram(
      "medglm_time_to_first_token_seconds",
      "Time from receiving a request to its first generated text.",
      LATENCY_BUCKETS,
    ),
    timePerOutputToken: r.histogram(
      "medglm_time_per_output_token_seconds",
      "Mean time per generated token after the first, per request.",
      TOKEN_BUCKETS,
    ),
    requestDuration: r.histogram(
      "medglm_request_duration_seconds",
      "Time from receiving a generation request to its last byte.",
      LATENCY_BUCKETS,
    ),
  };
  r.gaugeFn("medglm_queue_length", "Requests waiting for a decode slot.", () => admission.queued);
  r.gaugeFn(
    "medglm_active_sequences",
    "Sequences holding a decode slot (decoding together).",
    () => admission.active,
  );
  r.gaugeFn(
    "medglm_max_concurrent",
    "Decode slots (--max-concurrent).",
    () => admission.maxConcurrent,
  );
  r.gaugeFn("medglm_max_queue", "Queue places (--max-queue).", () => admission.maxQueue);
  r.gaugeFn(
    "medglm_engine_active_sequences",
    "Sequences the engine reports decoding right now.",
    () => engine()?.stats().active ?? 0,
  );
  r.gaugeFn(
    "medglm_engine_ready",
    "1 once the model is loaded, 0 while loading or after a failed load.",
    () => (engine() ? 1 : 0),
  );
  r.gaugeFn(
    "process_resident_memory_bytes",
    "Resident memory of the server process.",
    () => Deno.memoryUsage().rss,
  );
  r.gaugeFn(
    "medglm_heap_used_bytes",
    "JavaScript heap in use.",
    () => Deno.memoryUsage().heapUsed,
  );
  return metrics;
}
