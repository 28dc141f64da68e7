/**
 * The body of `deno task serve` once flags are parsed and the engine is loading: builds the app,
 * listens, and on SIGINT/SIGTERM (or the given signal) stops accepting, lets in-flight answers
 * finish (a second signal exits at once), then closes the engine. The port opens at once, so `/health` reports 503 while the
 * model loads.
 */
import type { Engine } from "../engine/types.ts";
import { createApp } from "./app.ts";
import type { ServeFlags } from "./flags.ts";
import { startServer } from "./server.ts";

export interface RunServerOptions {
  /** Aborting it shuts the server down as SIGINT would. */
  signal?: AbortSignal;
  /** Called with the URL once listening (default: prints it). */
  onListen?: (url: string) => void;
  /** Listen for SIGINT/SIGTERM (default true). */
  handleSignals?: boolean;
}

export async function runServer(
  engine: Engine | Promise<Engine>,
  flags:
    & Pick<
      ServeFlags,
      "host" | "port" | "apiKey" | "maxConcurrent" | "maxQueue" | "maxBodyBytes"
    >
    & Partial<Pick<ServeFlags, "bodyTimeoutMs">>,
  options: RunServerOptions = {},
): Promise<void> {
  const stop = new AbortController();
  const onStop = () => stop.abort();
  options.signal?.addEventListener("abort", onStop, { once: true });
  if (options.signal?.aborted) stop.abort();
  const signals: Deno.Signal[] = (options.handleSignals ?? true)
    ? (Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"])
    : [];
  // The first signal drains in-flight answers; a second one stops at once.
  const onSignal = () => {
    if (stop.signal.aborted) {
      console.error("stopping now, without waiting for in-flight answers");
      Deno.exit(130);
    }
    console.error("stopping: finishing in-flight answers (send the signal again to stop now)");
    stop.abort();
  };
  for (const s of signals) Deno.addSignalListener(s, onSignal);

  const app = createApp(engine, {
    apiKey: flags.apiKey,
    maxConcurrent: flags.maxConcurrent,
    maxQueue: flags.maxQueue,
    maxBodyBytes: flags.maxBodyBytes,
    bodyTimeoutMs: flags.bodyTimeoutMs,
  });
  const server = startServer(app, {
    host: flags.host,
    port: flags.port,
    signal: stop.signal,
    onListen: options.onListen,
  });
  try {
    await server.finished;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    options.signal?.removeEventListener("abort", onStop);
    // The engine may still be loading when asked to stop; close it once it exists.
    const loaded = await Promise.resolve(engine).catch(() => undefined);
    await loaded?.close();
  }
}
