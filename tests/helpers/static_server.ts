/**
 * Serves a folder over HTTP on 127.0.0.1 (port 0) with the content types Deno needs to import
 * modules by URL: `.ts` must be `application/typescript`, or Deno parses it as JavaScript.
 */
const TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "application/javascript; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
};

export interface StaticServer {
  url: string;
  requests: string[];
  close(): Promise<void>;
}

export function serveFolder(root: string): StaticServer {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    requests.push(path);
    if (path.split("/").includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(root + path);
      const ext = path.slice(path.lastIndexOf("."));
      return new Response(body, {
        headers: { "content-type": TYPES[ext] ?? "application/octet-stream" },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${addr.port}`,
    requests,
    close: () => server.shutdown(),
  };
}
