/**
 * A model server for bot tests: serve's real Hono app (`createApp`) over an engine, on 127.0.0.1,
 * with faults a test can switch on: refuse chat requests with 503 (as an overloaded or loading
 * server does), cut the answer stream after a few events (as a server that dies mid-answer does),
 * or fail `/health`.
 */
import { createApp } from "../../serve/mod.ts";
import type { Engine } from "../../serve/engine/types.ts";

export interface ModelServerFaults {
  /** Chat requests get 503. */
  refuse?: boolean;
  /** The answer stream stops after this many chunks, unfinished. */
  cutAfterChunks?: number;
  /** `/health` answers 503. */
  healthDown?: boolean;
}

export interface TestModelServer {
  url: string;
  faults: ModelServerFaults;
  /** Chat requests that reached the server, and those answered in full. */
  readonly requests: number;
  readonly completed: number;
  close(): Promise<void>;
}

export function startModelServer(engine: Engine, faults: ModelServerFaults = {}): TestModelServer {
  const app = createApp(engine, { page: false });
  let requests = 0;
  let completed = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/health" && faults.healthDown) {
        return Response.json({ status: "down" }, { status: 503 });
      }
      if (path !== "/v1/chat/completions") return await app.fetch(req);
      requests++;
      if (faults.refuse) {
        await req.body?.cancel();
        return Response.json(
          { error: { message: "server busy", type: "server_error", code: "overloaded" } },
          { status: 503 },
        );
      }
      const res = await app.fetch(req);
      const cut = faults.cutAfterChunks;
      if (!res.body) return res;
      let chunks = 0;
      const body = res.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, ctl) {
            if (cut !== undefined && chunks >= cut) {
              // The stream stops short, without finish_reason or [DONE]: as the client sees a
              // server that died (a dropped connection would also be logged here as an error).
              ctl.terminate();
              return;
            }
            chunks++;
            ctl.enqueue(chunk);
          },
          flush() {
            completed++;
          },
        }),
      );
      return new Response(body, { status: res.status, headers: res.headers });
    },
  );
  return {
    url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    faults,
    get requests() {
      return requests;
    },
    get completed() {
      return completed;
    },
    close: () => server.shutdown(),
  };
}
