/**
 * Reads a JSON request body with a size limit. The limit is checked against Content-Length
 * first and again while reading, so a client cannot make the server buffer an unbounded body by
 * lying about (or omitting) its length.
 */
import { HttpError } from "./errors.ts";

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

export async function readJsonBody(req: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = (size: string) =>
    new HttpError(
      413,
      `body: the request body is ${size}, over the limit of ${maxBytes} bytes`,
      "invalid_request_error",
      "body",
      "request_too_large",
    );
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(`${declared} bytes`);
  if (!req.body) throw new HttpError(400, "body: a JSON body is required", undefined, "body");

  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(`more than ${maxBytes} bytes`);
      }
      chunks.push(value);
    }
  } finally {
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
    throw new HttpError(400, "body: the request body is not valid UTF-8", undefined, "body");
  }
  if (text.trim() === "") {
    throw new HttpError(400, "body: a JSON body is required", undefined, "body");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(
      400,
      `body: malformed JSON (${(e as Error).message})`,
      "invalid_request_error",
      "body",
      "invalid_json",
    );
  }
}
