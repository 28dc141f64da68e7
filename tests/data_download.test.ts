// --download against servers that misbehave: one that accepts and never answers, one that stalls
// mid-body, and a refused connection. Each must end in a bounded time with an error naming the URL.
import assert from "node:assert/strict";
import { downloadSources } from "../data/sources/download.ts";

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "medglm-download-test-" });
}

Deno.test("download: a server that accepts and never answers times out, naming the URL", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const c of listener) conns.push(c); // accept, read nothing, answer nothing
    } catch { /* closed */ }
  })();
  const dir = await tempDir();
  const url = `http://127.0.0.1:${listener.addr.port}/big.json`;
  const lines: string[] = [];
  try {
    const t0 = performance.now();
    await assert.rejects(
      () =>
        downloadSources([{ url, path: "big.json" }], dir, {
          connectTimeoutMs: 600,
          waitNoticeMs: 150,
          log: (l) => lines.push(l),
        }),
      (err: Error) => {
        assert.ok(err.message.includes(url), err.message);
        assert.match(err.message, /no response within 0\.6 s \(connect timeout\)/);
        return true;
      },
    );
    assert.ok(performance.now() - t0 < 5000, "gave up in bounded time");
    assert.ok(lines.some((l) => l.includes(`waiting for ${url}`)), "says it is waiting");
  } finally {
    for (const c of conns) c.close();
    listener.close();
    await accepting;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("download: a body that stalls is cut by the idle timeout; the part file is kept", async () => {
  let release: () => void = () => {};
  const stalled = new Promise<void>((r) => (release = r));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    const body = new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(new TextEncoder().encode('[{"instruction":"a",'));
        await stalled;
        c.close();
      },
    });
    return new Response(body, { headers: { "content-length": "1000" } });
  });
  const dir = await tempDir();
  const url = `http://127.0.0.1:${server.addr.port}/x.json`;
  try {
    await assert.rejects(
      () => downloadSources([{ url, path: "x.json" }], dir, { idleTimeoutMs: 300 }),
      (err: Error) => {
        assert.ok(err.message.includes(url), err.message);
        assert.match(err.message, /stalled: no data for 0\.3 s after 20 bytes/);
        return true;
      },
    );
    assert.equal((await Deno.stat(`${dir}/x.json.part`)).size, 20, "resumable part kept");
  } finally {
    release();
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("download: a refused connection names the URL", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  const dir = await tempDir();
  const url = `http://127.0.0.1:${port}/gone.json`;
  try {
    await assert.rejects(
      () => downloadSources([{ url, path: "gone.json" }], dir),
      (err: Error) => {
        assert.ok(err.message.startsWith(`download of ${url} failed:`), err.message);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
