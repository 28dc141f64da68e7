/**
 * HTTP layer load benchmark: the real server on 127.0.0.1 (port 0) over the *scripted* test
 * engine, so it measures the web front end (SSE framing, admission, queueing), not a model.
 * Phase 1: N concurrent streaming clients, against the same engine driven directly (no HTTP) as
 * the baseline. Phase 2: a burst past slots + queue: every admitted request must complete, the
 * rest get 429, nothing 500. Memory is compared before and after (with a forced GC).
 * The client side (`streamChat`, `runLoad`) is shared with tests/http_load.test.ts.
 */
import v8 from "node:v8";
import vm from "node:vm";
import { createApp, type Engine, startServer } from "../serve/mod.ts";
import { createScriptedEngine } from "../tests/helpers/scripted_engine.ts";

export interface StreamResult {
  status: number;
  /** Milliseconds from sending to the first content delta (NaN if none). */
  ttftMs: number;
  totalMs: number;
  content: string;
  /** Saw `data: [DONE]`. */
  done: boolean;
  finishReason: string | null;
  retryAfter: string | null;
  /** Transport failure or an in-band error event. */
  error?: string;
}

/** One streaming chat request, reading the SSE events as they come. */
export async function streamChat(
  baseUrl: string,
  body: Record<string, unknown>,
  signal?: AbortSignal,
): Promise<StreamResult> {
  const start = performance.now();
  const result: StreamResult = {
    status: 0,
    ttftMs: NaN,
    totalMs: NaN,
    content: "",
    done: false,
    finishReason: null,
    retryAfter: null,
  };
  try {
    const res = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
      signal,
    });
    result.status = res.status;
    result.retryAfter = res.headers.get("retry-after");
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      return result;
    }
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const bytes of res.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6))
          .join("\n");
        if (data === "[DONE]") {
          result.done = true;
          continue;
        }
        const chunk = JSON.parse(data);
        if (chunk.error) result.error = chunk.error.message;
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) {
          if (Number.isNaN(result.ttftMs)) result.ttftMs = performance.now() - start;
          result.content += choice.delta.content;
        }
        if (choice?.finish_reason) result.finishReason = choice.finish_reason;
      }
    }
  } catch (e) {
    result.error = (e as Error).message;
  } finally {
    result.totalMs = performance.now() - start;
  }
  return result;
}

/** `clients` streaming requests at once; each asks its own numbered question. */
export function runLoad(
  baseUrl: string,
  clients: number,
  question = "最近总是头痛，应该怎么办？",
  signal?: AbortSignal,
): Promise<StreamResult[]> {
  return Promise.all(
    Array.from({ length: clients }, (_, i) =>
      streamChat(baseUrl, {
        messages: [{ role: "user", content: `${question} #${i}` }],
        // Greedy on both paths, so they generate the same tokens (sampling is the default).
        temperature: 0,
        stream_options: { include_usage: true },
      }, signal)),
  );
}

export function percentile(values: number[], p: number): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** A forced full GC, through V8's flag (Deno honours `node:v8` setFlagsFromString). */
export function collectGarbage(): void {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  gc();
  gc();
}

/** Heap in use after a full GC, in bytes. */
export function settledHeap(): number {
  collectGarbage();
  return Deno.memoryUsage().heapUsed;
}

/** The benchmark's engine: a long enough scripted answer streamed in small pieces. */
export function benchEngine(delayMs = 4): ReturnType<typeof createScriptedEngine> {
  return createScriptedEngine({
    answer: (m) =>
      `关于“${m[m.length - 1].content}”：${"建议规律作息，清淡饮食，适量运动。".repeat(4)}`,
    chunkChars: 2,
    delayMs,
  });
}

/** The same clients' work straight on the engine, without HTTP: the baseline. */
async function direct(engine: Engine, clients: number, question: string) {
  const ttft: number[] = [];
  const t0 = performance.now();
  let chars = 0;
  await Promise.all(Array.from({ length: clients }, async (_, i) => {
    const start = performance.now();
    let first = true;
    for await (
      const d of engine.generate({
        messages: [{ role: "user", content: `${question} #${i}` }],
        temperature: 0,
      })
    ) {
      if (d.text && first) {
        ttft.push(performance.now() - start);
        first = false;
      }
      chars += [...d.text].length;
    }
  }));
  return { seconds: (performance.now() - t0) / 1000, ttft, chars };
}

export async function bench(): Promise<void> {
  const clients = 32;
  const question = "最近总是头痛，应该怎么办？";
  const deadline = AbortSignal.timeout(60_000);

  // Phase 1: 32 concurrent streams, all admitted at once; the engine paced (4 ms per piece, like
  // a slow model) and unpaced (0 ms: what the HTTP layer itself sustains).
  const rows: string[][] = [];
  let heapStart = 0;
  for (const delayMs of [4, 0]) {
    const server = startServer(
      createApp(benchEngine(delayMs), { maxConcurrent: clients, maxQueue: clients }),
      { host: "127.0.0.1", port: 0, onListen: () => {} },
    );
    try {
      await runLoad(server.url, 4, question, deadline); // warm-up: JIT, connections
      if (heapStart === 0) heapStart = settledHeap();
      const baseline = await direct(benchEngine(delayMs), clients, question);
      const t0 = performance.now();
      const results = await runLoad(server.url, clients, question, deadline);
      const seconds = (performance.now() - t0) / 1000;
      const ok = results.filter((r) => r.status === 200 && r.done);
      const chars = ok.reduce((n, r) => n + [...r.content].length, 0);
      const ttft = ok.map((r) => r.ttftMs);
      rows.push([
        `${clients} streams, HTTP, ${delayMs} ms/piece`,
        `${ok.length}/${clients}`,
        (ok.length / seconds).toFixed(1),
        (chars / seconds).toFixed(0),
        percentile(ttft, 50).toFixed(1),
        percentile(ttft, 95).toFixed(1),
        "-",
        (baseline.seconds / seconds).toFixed(2),
      ]);
      rows.push([
        `${clients} streams, engine direct, ${delayMs} ms/piece (baseline)`,
        `${clients}/${clients}`,
        (clients / baseline.seconds).toFixed(1),
        (baseline.chars / baseline.seconds).toFixed(0),
        percentile(baseline.ttft, 50).toFixed(1),
        percentile(baseline.ttft, 95).toFixed(1),
        "-",
        "1.00",
      ]);
    } finally {
      await server.shutdown();
    }
  }

  // Phase 2: a burst of 3x (slots + queue) against a small server.
  const burstEngine = benchEngine(8);
  const maxConcurrent = 8, maxQueue = 16, burst = 3 * (maxConcurrent + maxQueue);
  const small = startServer(createApp(burstEngine, { maxConcurrent, maxQueue }), {
    host: "127.0.0.1",
    port: 0,
    onListen: () => {},
  });
  let burstRow: string[];
  let failures = 0;
  try {
    const t0 = performance.now();
    const results = await runLoad(small.url, burst, question, deadline);
    const seconds = (performance.now() - t0) / 1000;
    const admitted = results.filter((r) => r.status === 200);
    const completed = admitted.filter((r) => r.done && r.finishReason === "stop");
    const rejected = results.filter((r) => r.status === 429).length;
    failures = results.length - completed.length - rejected;
    const ttft = completed.map((r) => r.ttftMs);
    burstRow = [
      `burst ${burst} (slots ${maxConcurrent} + queue ${maxQueue})`,
      `${completed.length}/${admitted.length} admitted, ${rejected}x429, ${failures} other`,
      (completed.length / seconds).toFixed(1),
      (completed.reduce((n, r) => n + [...r.content].length, 0) / seconds).toFixed(0),
      percentile(ttft, 50).toFixed(1),
      percentile(ttft, 95).toFixed(1),
      String(rejected),
      "-",
    ];
  } finally {
    await small.shutdown();
  }
  rows.push(burstRow);
  const heapEnd = settledHeap();

  const header = [
    "case (scripted engine: HTTP layer only)",
    "completed",
    "req/s",
    "chars/s",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "429s",
    "speed vs direct",
  ];
  printTable(header, rows);
  console.log(
    `heap after GC (after warm-up → after both phases): start ${
      (heapStart / 2 ** 20).toFixed(1)
    } MiB, end ${(heapEnd / 2 ** 20).toFixed(1)} MiB (${
      ((heapEnd - heapStart) / 2 ** 20).toFixed(1)
    } MiB difference); ` +
      `unexpected outcomes in the burst: ${failures}`,
  );
}

function printTable(header: string[], rows: string[][]) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join(" | ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("-|-"));
  for (const r of rows) console.log(line(r));
}

if (import.meta.main) await bench();
