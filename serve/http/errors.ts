/** Errors in OpenAI's JSON shape: `{ error: { message, type, param, code } }`. */

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** An error that becomes an HTTP response with OpenAI's error body. */
export class HttpError extends Error {
  constructor(
    public readonly status: number,
    message: string,
    public readonly type = "invalid_request_error",
    public readonly param: string | null = null,
    public readonly code: string | null = null,
    public readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
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
  return new HttpError(400, `${param}: ${problem}`, "invalid_request_error", param, code);
}
