/** Optional bearer API key for the `/v1` routes, compared in constant time. */
import type { MiddlewareHandler } from "npm:hono@4.13.19";
import { HttpError } from "./errors.ts";

export function bearerAuth(apiKey: string): MiddlewareHandler {
  const expected = new TextEncoder().encode(apiKey);
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!match) {
      throw new HttpError(
        401,
        "authorization: missing API key; send the header 'Authorization: Bearer <key>'",
        {
          param: "authorization",
          code: "invalid_api_key",
          headers: { "WWW-Authenticate": 'Bearer realm="medglm"' },
        },
      );
    }
    if (!sameBytes(new TextEncoder().encode(match[1]), expected)) {
      throw new HttpError(
        401,
        "authorization: incorrect API key",
        {
          param: "authorization",
          code: "invalid_api_key",
          headers: { "WWW-Authenticate": 'Bearer realm="medglm", error="invalid_token"' },
        },
      );
    }
    await next();
  };
}

/** Constant-time for equal lengths, so the key cannot be guessed byte by byte from timings. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i % Math.max(a.length, 1)] ?? 0) ^ b[i];
  return diff === 0;
}
