/** The HTTP front end: the Hono app over an engine, its server, flags and building blocks. */
export { type AppOptions, createApp, DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_QUEUE } from "./app.ts";
export { type RunningServer, type ServerOptions, startServer } from "./server.ts";
export { FlagError, parseServeFlags, SERVE_USAGE, type ServeFlags } from "./flags.ts";
export {
  type Admission,
  type AdmissionOptions,
  createAdmission,
  QueueFullError,
  type Release,
} from "./admission.ts";
export { createRegistry, type MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";
export { HttpError, type HttpErrorOptions, type OpenAIErrorBody } from "./errors.ts";
export {
  type ChatCompletionParams,
  type GenerationParams,
  parseChatRequest,
} from "./chat_request.ts";
export {
  type CompletionParams,
  DEFAULT_COMPLETION_MAX_TOKENS,
  parseCompletionRequest,
} from "./completion_request.ts";
export {
  ClientGoneError,
  DEFAULT_BODY_TIMEOUT_MS,
  DEFAULT_MAX_BODY_BYTES,
  requireJsonContentType,
} from "./json_body.ts";
export { runServer, type RunServerOptions } from "./run_server.ts";
