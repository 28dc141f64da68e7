/**
 * Starts the app on `Deno.serve`. Port 0 asks the system for a free port; the bound address
 * comes back, so tests and benchmarks can talk to the real server on 127.0.0.1.
 */

export interface ServerOptions {
  /** Interface to bind (default 127.0.0.1: only local clients unless asked otherwise). */
  host?: string;
  /** Port, or 0 for any free one (default 8000). */
  port?: number;
  /** Aborting it stops accepting connections and lets in-flight responses finish. */
  signal?: AbortSignal;
  /** Called once listening (default: prints the URL). */
  onListen?: (url: string) => void;
}

export interface RunningServer {
  hostname: string;
  port: number;
  /** `http://host:port` (IPv6 hosts in brackets). */
  url: string;
  /** Settles when the server has stopped. */
  finished: Promise<void>;
  /** Stops accepting and waits for in-flight responses. */
  shutdown(): Promise<void>;
}

export function startServer(
  app: { fetch: (req: Request) => Response | Promise<Response> },
  options: ServerOptions = {},
): RunningServer {
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 8000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`port must be an integer from 0 to 65535 (got ${port})`);
  }
  // Deno.serve's own `signal` drops in-flight responses; shutdown() lets them finish.
  const server = Deno.serve({ hostname: host, port, onListen: () => {} }, (req) => app.fetch(req));
  const stop = () => void server.shutdown();
  if (options.signal?.aborted) stop();
  options.signal?.addEventListener("abort", stop, { once: true });
  const forget = () => options.signal?.removeEventListener("abort", stop);
  server.finished.then(forget, forget);
  const addr = server.addr as Deno.NetAddr;
  const shownHost = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `http://${shownHost}:${addr.port}`;
  (options.onListen ?? ((u: string) => console.log(`medglm listening on ${u}`)))(url);
  return {
    hostname: addr.hostname,
    port: addr.port,
    url,
    finished: server.finished,
    shutdown: () => server.shutdown(),
  };
}
