/**
 * An `Engine` over several OpenAI-compatible model servers (one per GPU, say). Each question goes
 * to the least busy healthy server; one that refuses (429, 503) or fails before the first token
 * hands the question to the next server, so the user never sees the hiccup. After the first token
 * the question is not moved here (that would splice two answers): the pool throws a `retryable`
 * error and the bot writes a fresh answer over the broken one. A server whose `/health` fails, or
 * that failed a request, is skipped until its `/health` says ready again.
 */
import {
  type Engine,
  type EngineInfo,
  type GenerationDelta,
  type GenerationRequest,
  PromptTooLongError,
} from "../serve/mod.ts";
import {
  connectOpenAIEngine,
  createOpenAIEngine,
  EndpointHttpError,
  healthUrl,
  type OpenAIEngineOptions,
} from "./openai_engine.ts";

export interface EndpointPoolOptions extends Omit<OpenAIEngineOptions, "endpoint"> {
  endpoints: string[];
  /** How often every server's `/health` is asked; default 5000 ms. */
  healthIntervalMs?: number;
  /** A `/health` that takes longer counts as failed; default 2000 ms. */
  healthTimeoutMs?: number;
  log?: (level: "info" | "warn" | "error", msg: string) => void;
}

/** A server broke off after the answer had begun: the question may be answered again elsewhere. */
export class ServerBrokeOffError extends Error {
  readonly retryable = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ServerBrokeOffError";
  }
}

export interface PoolMemberStatus {
  endpoint: string;
  healthy: boolean;
  /** Questions this bot has running there. */
  active: number;
  /** The server's own `active + queued` at its last health check (all its clients). */
  load: number;
  answered: number;
}

interface Member extends PoolMemberStatus {
  engine: Engine;
  health: string;
}

/** Splits `--endpoint` values: repeated flags and comma-separated lists, blanks dropped. */
export function splitEndpoints(values: string[]): string[] {
  return values.flatMap((v) => v.split(",")).map((s) => s.trim()).filter(Boolean);
}

export function createEndpointPool(opts: EndpointPoolOptions): Engine & {
  members(): PoolMemberStatus[];
  checkHealth(): Promise<void>;
} {
  if (opts.endpoints.length === 0) throw new Error("--endpoint: give at least one URL");
  const doFetch = opts.fetch ?? fetch;
  const log = opts.log ?? (() => {});
  const members: Member[] = opts.endpoints.map((endpoint) => ({
    endpoint,
    health: healthUrl(endpoint),
    engine: createOpenAIEngine({ ...opts, endpoint }),
    // Until the first check says otherwise: the bot can start before its servers.
    healthy: true,
    active: 0,
    load: 0,
    answered: 0,
  }));
  const first = members[0].engine.info;
  const info: EngineInfo = {
    ...first,
    backendReason: `pool of ${members.length} OpenAI-compatible servers: ` +
      members.map((m) => m.endpoint).join(", "),
  };
  let next = 0;
  let closed = false;

  async function checkOne(m: Member): Promise<void> {
    let ok = false;
    let load = 0;
    try {
      const res = await doFetch(m.health, {
        signal: AbortSignal.timeout(opts.healthTimeoutMs ?? 2000),
        headers: opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {},
      });
      const body = await res.json().catch(() => undefined);
      ok = res.ok;
      if (typeof body?.active === "number") load += body.active;
      if (typeof body?.queued === "number") load += body.queued;
    } catch { /* unreachable: not healthy */ }
    if (ok !== m.healthy) {
      log(ok ? "info" : "warn", `model server ${m.endpoint} is ${ok ? "back" : "not ready"}`);
    }
    m.healthy = ok;
    m.load = ok ? load : 0;
  }
  const checkHealth = async () => {
    await Promise.all(members.map(checkOne));
  };
  const timer = setInterval(() => {
    if (!closed) checkHealth();
  }, opts.healthIntervalMs ?? 5000);
  Deno.unrefTimer(timer);

  /** The least busy healthy server not tried yet (round robin among equals). */
  function pick(tried: Set<Member>): Member | undefined {
    let best: Member | undefined;
    let bestScore = Infinity;
    for (let i = 0; i < members.length; i++) {
      const m = members[(next + i) % members.length];
      if (tried.has(m) || !m.healthy) continue;
      const score = m.active + m.load;
      if (score < bestScore) [best, bestScore] = [m, score];
    }
    next = (next + 1) % members.length;
    return best;
  }

  async function* generate(req: GenerationRequest): AsyncGenerator<GenerationDelta> {
    if (closed) throw new Error("the engine is closed");
    const tried = new Set<Member>();
    let lastError: unknown;
    for (;;) {
      const m = pick(tried);
      if (!m) {
        if (lastError) throw lastError;
        throw new EndpointHttpError(
          `no model server is ready (${members.map((x) => x.endpoint).join(", ")})`,
          503,
        );
      }
      tried.add(m);
      m.active++;
      let started = false;
      const stream = m.engine.generate(req)[Symbol.asyncIterator]();
      try {
        for (;;) {
          let step: IteratorResult<GenerationDelta>;
          try {
            step = await stream.next();
          } catch (err) {
            if (req.signal?.aborted || !isServerFault(err)) throw err;
            const refused = err instanceof EndpointHttpError &&
              (err.status === 429 || err.status === 503);
            // A refusal is the server's choice (busy, loading); a failure benches it until
            // its /health says ready again.
            if (!refused) m.healthy = false;
            const why = (err as Error).message;
            if (started) {
              throw new ServerBrokeOffError(`${m.endpoint} broke off mid-answer: ${why}`, {
                cause: err,
              });
            }
            log("warn", `${m.endpoint}: ${why}; moving the question to another server`);
            lastError = err;
            break;
          }
          if (step.done) {
            m.answered++;
            return;
          }
          if (step.value.text) started = true;
          yield step.value;
        }
      } finally {
        m.active--;
        await stream.return?.(undefined)?.catch(() => {});
      }
    }
  }

  return {
    info,
    generate,
    countPromptTokens: members[0].engine.countPromptTokens,
    stats() {
      const all = members.map((m) => m.engine.stats());
      return {
        active: all.reduce((n, s) => n + s.active, 0),
        queued: 0,
        tokensGenerated: all.reduce((n, s) => n + s.tokensGenerated, 0),
      };
    },
    members: () =>
      members.map(({ endpoint, healthy, active, load, answered }) => ({
        endpoint,
        healthy,
        active,
        load,
        answered,
      })),
    checkHealth,
    async close() {
      closed = true;
      clearInterval(timer);
      await Promise.all(members.map((m) => m.engine.close()));
    },
  };
}

/**
 * The pool after a first health check, with the model name from the first server that lists one
 * when `model` is not given.
 */
export async function connectEndpointPool(opts: EndpointPoolOptions): Promise<Engine> {
  let model = opts.model;
  if (!model) {
    const errors: string[] = [];
    for (const endpoint of opts.endpoints) {
      try {
        model = (await connectOpenAIEngine({ ...opts, endpoint })).info.model;
        break;
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    if (!model) throw new Error(`no model server answered /v1/models: ${errors.join("; ")}`);
  }
  const pool = createEndpointPool({ ...opts, model });
  await pool.checkHealth();
  return pool;
}

/** Worth another server: refusals, 5xx, network failures, broken streams; not bad requests. */
function isServerFault(err: unknown): boolean {
  if (err instanceof PromptTooLongError || (err as Error)?.name === "PromptTooLongError") {
    return false;
  }
  if (err instanceof EndpointHttpError) return err.status === 429 || err.status >= 500;
  return true;
}
