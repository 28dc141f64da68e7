/** Errors in OpenAI's JSON shape: `{ error: { message, type, param, code } }`. */

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export interface HttpErrorOptions {
  /** OpenAI's error type (default `invalid_request_error`; `server_error` for 5xx causes). */
  type?: string;
  /** The request field at fault, or null. */
  param?: string | null;
  /** A machine-readable code; every error this server sends has one. */
  code: string;
  /** Extra response headers (`Retry-After`, `Allow`, `WWW-Authenticate`). */
  headers?: Record<string, string>;
}

/** An error that becomes an HTTP response with OpenAI's error body. */
export class HttpError extends Error {
  readonly status: number;
  readonly type: string;
  readonly param: string | null;
  readonly code: string;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, options: HttpErrorOptions) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.type = options.type ?? "invalid_request_error";
    this.param = options.param ?? null;
    this.code = options.code;
    this.headers = options.headers ?? {};
  }

  body(): OpenAIErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }

  response(): Response {
    return Response.json(this.body(), { status: this.status, headers: this.headers });
  }
}

/** A 400 for a request field: `param` names the field, and the message starts with it. */
export function invalidParam(param: string, problem: string, code = "invalid_value"): HttpError {
  return new HttpError(400, `${param}: ${problem}`, { param, code });
}
