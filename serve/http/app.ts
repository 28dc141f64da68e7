/**
 * The Hono app: OpenAI-compatible chat and plain completions and model list, health, Prometheus metrics
 * and the web chat page, over any `Engine`. The engine may still be loading (a promise): until it
 * resolves `/health` says 503 and model routes answer 503 in OpenAI's error shape.
 */
import { Hono } from "npm:hono@4.13.19";
import type { Engine } from "../engine/types.ts";
import { CHAT_PAGE_HTML, CHAT_PAGE_SECURITY_POLICY } from "../page/chat_page.ts";
import { createAdmission } from "./admission.ts";
import { bearerAuth } from "./auth.ts";
import { handleChatCompletion } from "./chat_completions.ts";
import { handleCompletion } from "./completions.ts";
import { HttpError } from "./errors.ts";
import { CLIENT_CLOSED, type GenerationDeps, modelNotFound } from "./generation_run.ts";
import { ClientGoneError, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES } from "./json_body.ts";
import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";
import { createServingMetrics } from "./serving_metrics.ts";

export interface AppOptions {
  /** When set, `/v1/*` routes need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Sequences decoding together (default 4). */
  maxConcurrent?: number;
  /** Requests waiting beyond those; more get 429 (default 16). */
  maxQueue?: number;
  /** Largest accepted request body (default 1 MiB). */
  maxBodyBytes?: number;
  /** Milliseconds a request body may take to arrive (default 30 000); slower ones get 408. */
  bodyTimeoutMs?: number;
  /** Model name in answers and `/v1/models` (default: the engine's `info.model`). */
  modelName?: string;
  /** Serve the web chat page at `/` (default true). */
  page?: boolean;
}

export const DEFAULT_MAX_CONCURRENT = 4;
export const DEFAULT_MAX_QUEUE = 16;

type EngineState =
  | { kind: "loading" }
  | { kind: "ready"; engine: Engine }
  | { kind: "failed"; error: unknown };

const KNOWN_ROUTES = [
  "/",
  "/health",
  "/metrics",
  "/v1/models",
  "/v1/chat/completions",
  "/v1/completions",
];

export function createApp(engine: Engine | Promise<Engine>, options: AppOptions = {}): Hono {
  if (options.apiKey !== undefined && options.apiKey === "") {
    throw new RangeError("apiKey must not be empty (leave it out to turn authentication off)");
  }
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw new RangeError(`maxBodyBytes must be a positive integer (got ${maxBodyBytes})`);
  }
  const bodyTimeoutMs = options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
  if (!(bodyTimeoutMs > 0)) {
    throw new RangeError(`bodyTimeoutMs must be positive (got ${bodyTimeoutMs})`);
  }
  const admission = createAdmission({
    maxConcurrent: options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT,
    maxQueue: options.maxQueue ?? DEFAULT_MAX_QUEUE,
  });

  let state: EngineState = { kind: "loading" };
  if (isPromiseLike(engine)) {
    Promise.resolve(engine).then(
      (e) => state = { kind: "ready", engine: e },
      (error) => {
        state = { kind: "failed", error };
        console.error("model failed to load:", error);
      },
    );
  } else {
    state = { kind: "ready", engine };
  }
  const readyEngine = () => (state.kind === "ready" ? state.engine : undefined);
  const metrics = createServingMetrics(admission, readyEngine);
  const modelName = () => options.modelName ?? readyEngine()?.info.model ?? "medglm";

  /** The engine, or a 503 telling the client why there is none. */
  const requireEngine = (): Engine => {
    if (state.kind === "ready") return state.engine;
    if (state.kind === "loading") {
      throw new HttpError(
        503,
        "the model is still loading; retry shortly",
        { type: "server_error", code: "model_loading", headers: { "Retry-After": "5" } },
      );
    }
    throw new HttpError(
      503,
      `the model failed to load: ${errorText(state.error)}`,
      { type: "server_error", code: "model_load_failed" },
    );
  };

  const app = new Hono();

  app.use("*", async (c, next) => {
    await next();
    const path = c.req.path;
    const route = KNOWN_ROUTES.includes(path)
      ? path
      : path.startsWith("/v1/models/")
      ? "/v1/models/:id"
      : "unmatched";
    metrics.requests.inc({ route, status: String(c.res.status) });
  });

  if (options.apiKey !== undefined) app.use("/v1/*", bearerAuth(options.apiKey));

  if (options.page ?? true) {
    app.get("/", (c) => {
      c.header("Content-Security-Policy", CHAT_PAGE_SECURITY_POLICY);
      c.header("Cache-Control", "no-cache");
      return c.html(CHAT_PAGE_HTML);
    });
    app.all("/", () => methodNotAllowed("GET"));
  }

  app.get("/health", (c) => {
    if (state.kind === "ready") {
      const { info } = state.engine;
      return c.json({
        status: "ok",
        model: modelName(),
        backend: info.backend,
        ...(info.architecture ? { architecture: info.architecture } : {}),
        demo: info.demo,
        maxContext: info.maxContext,
        ...(info.weights ? { weights: info.weights } : {}),
        active: admission.active,
        queued: admission.queued,
      });
    }
    if (state.kind === "loading") return c.json({ status: "loading" }, 503);
    return c.json({ status: "failed", error: errorText(state.error) }, 503);
  });
  app.all("/health", () => methodNotAllowed("GET"));

  app.get("/metrics", (c) => {
    return c.body(metrics.registry.render(), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE });
  });
  app.all("/metrics", () => methodNotAllowed("GET"));

  app.get("/v1/models", (c) => {
    requireEngine();
    return c.json({ object: "list", data: [modelCard(modelName(), requireEngine())] });
  });
  app.all("/v1/models", () => methodNotAllowed("GET"));
  app.get("/v1/models/:id{.+}", (c) => {
    requireEngine();
    const id = c.req.param("id");
    if (id !== modelName()) throw modelNotFound(id, modelName());
    return c.json(modelCard(id, requireEngine()));
  });

  const generationDeps = (): GenerationDeps => ({
    engine: requireEngine(),
    admission,
    metrics,
    modelName: modelName(),
    maxBodyBytes,
    bodyTimeoutMs,
  });
  app.post("/v1/chat/completions", (c) => handleChatCompletion(c, generationDeps()));
  app.all("/v1/chat/completions", () => methodNotAllowed("POST"));
  app.post("/v1/completions", (c) => handleCompletion(c, generationDeps()));
  app.all("/v1/completions", () => methodNotAllowed("POST"));

  app.notFound((c) => {
    const error = new HttpError(
      404,
      `no route for ${c.req.method} ${c.req.path}`,
      { code: "not_found" },
    );
    return c.json(error.body(), 404);
  });

  app.onError((err, c) => {
    if (err instanceof HttpError) return err.response();
    // A client that hung up mid-body: nobody to answer, nothing went wrong here.
    if (err instanceof ClientGoneError) return new Response(null, { status: CLIENT_CLOSED });
    console.error(`${c.req.method} ${c.req.path} failed:`, err);
    const error = new HttpError(
      500,
      `internal error: ${errorText(err)}`,
      { type: "server_error", code: "internal_error" },
    );
    return error.response();
  });

  return app;
}

function modelCard(id: string, engine: Engine) {
  const { backend, weights, architecture } = engine.info;
  const card = { id, object: "model", created: 0, owned_by: "medglm" };
  // Our extension, where the engine knows its model: the backend, the architecture (config.json's
  // model_type) and the weights' bits and size.
  if (!weights && !architecture) return card;
  return { ...card, medglm: { backend, ...(architecture ? { architecture } : {}), weights } };
}

function methodNotAllowed(allow: string): never {
  throw new HttpError(
    405,
    `method not allowed; use ${allow}`,
    { code: "method_not_allowed", headers: { Allow: allow } },
  );
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function isPromiseLike(value: unknown): value is PromiseLike<Engine> {
  return typeof (value as PromiseLike<Engine> | null)?.then === "function";
}
