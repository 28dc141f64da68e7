/**
 * Reads a JSON request body with bounded work:
 * - only `Content-Type: application/json` (or `application/*+json`): a cross-site page can send
 *   `text/plain` bodies without a CORS preflight, but not JSON ones, so this keeps other sites
 *   from making the server generate when no API key is set;
 * - a size limit checked against Content-Length first and again while reading, so a client cannot
 *   make the server buffer an unbounded body by lying about (or omitting) its length;
 * - a time limit for the whole body, so half-sent requests cannot hold the server;
 * - a client that hangs up mid-body ends the request quietly ({@link ClientGoneError}).
 */
import { HttpError } from "./errors.ts";

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/** Time allowed for the whole request body to arrive. */
export const DEFAULT_BODY_TIMEOUT_MS = 30_000;

export interface ReadJsonBodyOptions {
  maxBytes: number;
  timeoutMs: number;
}

/** The client went away before its request body was read: nobody is left to answer. */
export class ClientGoneError extends Error {
  constructor() {
    super("the client closed the connection before sending the whole request body");
    this.name = "ClientGoneError";
  }
}

const JSON_MEDIA_TYPE = /^application\/(?:[\w.+-]+\+)?json$/;

/** Refuses a request whose body is not declared as JSON (415 `unsupported_media_type`). */
export function requireJsonContentType(req: Request): void {
  const header = req.headers.get("content-type");
  const media = header?.split(";")[0].trim().toLowerCase() ?? "";
  if (JSON_MEDIA_TYPE.test(media)) return;
  throw new HttpError(
    415,
    `content-type: the request body must be JSON sent with 'Content-Type: application/json' (${
      header === null ? "the header is missing" : `got '${header}'`
    })`,
    { param: "content-type", code: "unsupported_media_type" },
  );
}

export async function readJsonBody(req: Request, options: ReadJsonBodyOptions): Promise<unknown> {
  const { maxBytes, timeoutMs } = options;
  requireJsonContentType(req);
  const tooLarge = (size: string) =>
    new HttpError(
      413,
      `body: the request body is ${size}, over the limit of ${maxBytes} bytes`,
      { param: "body", code: "request_too_large" },
    );
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(`${declared} bytes`);
  const empty = () =>
    new HttpError(400, "body: a JSON body is required", { param: "body", code: "empty_body" });
  if (!req.body) throw empty();

  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    while (true) {
      let step: ReadableStreamReadResult<Uint8Array> | "timeout";
      try {
        step = await Promise.race([reader.read(), timedOut]);
      } catch {
        // The connection broke mid-body (the client hung up): not a server error.
        throw new ClientGoneError();
      }
      if (step === "timeout") {
        await reader.cancel().catch(() => {});
        throw new HttpError(
          408,
          `body: the request body did not arrive within ${timeoutMs / 1000} s`,
          { param: "body", code: "request_timeout", headers: { Connection: "close" } },
        );
      }
      if (step.done) break;
      size += step.value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(`more than ${maxBytes} bytes`);
      }
      chunks.push(step.value);
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }

  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "body: the request body is not valid UTF-8", {
      param: "body",
      code: "invalid_encoding",
    });
  }
  if (text.trim() === "") throw empty();
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `body: malformed JSON (${(e as Error).message})`, {
      param: "body",
      code: "invalid_json",
    });
  }
}
