/**
 * `deno task serve`: flags → engine (loading in the background, so the port opens at once and
 * /health says 503 until the model is ready) → the HTTP server. The engine decodes up to
 * `--max-concurrent` sequences together (continuous batching); the app's admission control queues
 * the rest.
 */

import { EngineLoadError, loadEngine } from "./engine/load.ts";
import type { Engine } from "./engine/types.ts";
import { FlagError, parseServeFlags, SERVE_USAGE, type ServeFlags } from "./http/flags.ts";
import { runServer } from "./http/run_server.ts";
import { printDryRun } from "./dry_run.ts";

/** Starts loading the engine the flags describe; says which backend it took and why. */
export function startEngine(
  flags: ServeFlags,
  log: (line: string) => void = (l) => console.error(l),
): Promise<Engine> {
  return loadEngine({
    model: flags.model,
    adapter: flags.adapter,
    backend: flags.backend,
    dtype: flags.dtype,
    quantize: flags.quantize,
    promptTemplate: flags.promptTemplate,
    enableThinking: flags.enableThinking,
    maxBatch: flags.maxConcurrent,
    log,
  }).then((engine) => {
    const { info } = engine;
    log(
      `model ${info.model}${info.architecture ? ` (${info.architecture})` : ""}${
        info.demo ? " (the demo model: for trying things out only)" : ""
      }; ` +
        `backend ${info.backend}${info.backendReason ? ` (${info.backendReason})` : ""}`,
    );
    return engine;
  });
}

export async function main(args: string[]): Promise<number> {
  let flags: ServeFlags;
  try {
    flags = parseServeFlags(args);
  } catch (err) {
    if (err instanceof FlagError) {
      console.error(`error: ${err.message}`);
      return 2;
    }
    throw err;
  }
  if (flags.help) {
    console.log(SERVE_USAGE);
    return 0;
  }
  if (flags.dryRun) {
    return await printDryRun(flags.model, {
      batch: flags.maxConcurrent,
      dtype: flags.dtype,
      quantize: flags.quantize,
    }, {
      out: (s) => Deno.stdout.writeSync(new TextEncoder().encode(s)),
      err: (s) => Deno.stderr.writeSync(new TextEncoder().encode(s)),
    });
  }
  const engine = startEngine(flags);
  // A model that fails to load stops the server with the loader's message (it says the fix).
  const failed = new AbortController();
  let loadError: unknown = null;
  engine.catch((err) => {
    loadError = err;
    failed.abort();
  });
  await runServer(engine, flags, { signal: failed.signal });
  if (loadError) {
    const msg = loadError instanceof EngineLoadError
      ? loadError.message
      : (loadError as Error)?.message ?? String(loadError);
    console.error(`error: ${msg}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
