/**
 * A strict JSON parser for untrusted file headers. Unlike `JSON.parse` it refuses duplicate object
 * keys (a safetensors header naming one tensor twice must not silently keep the last entry) and
 * returns objects without a prototype, so a key like `__proto__` is just a key.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Parses `text`; throws `SyntaxError` with the character position on bad or duplicate input. */
export function parseJsonStrict(text: string): JsonValue {
  let pos = 0;

  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at character ${pos}`);
  };
  const skipWs = () => {
    while (pos < text.length) {
      const c = text.charCodeAt(pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) pos++;
      else break;
    }
  };

  const parseString = (): string => {
    const start = pos;
    pos++; // opening quote
    let simple = true;
    while (pos < text.length) {
      const c = text.charCodeAt(pos);
      if (c === 0x22) break;
      if (c < 0x20) fail("control character in string");
      if (c === 0x5c) {
        simple = false;
        pos += 2;
      } else pos++;
    }
    if (pos >= text.length) fail("unterminated string");
    pos++;
    const raw = text.slice(start, pos);
    if (simple) return raw.slice(1, -1);
    try {
      return JSON.parse(raw) as string; // escapes are JSON's own; the slice is one string token
    } catch {
      return fail("bad escape in string");
    }
  };

  const parseNumber = (): number => {
    const m = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/.exec(
      text.slice(pos, pos + 64),
    );
    if (!m) return fail("unexpected character");
    pos += m[0].length;
    return Number(m[0]);
  };

  const parseValue = (depth: number): JsonValue => {
    if (depth > 64) fail("nesting too deep");
    skipWs();
    const c = text[pos];
    if (c === "{") {
      pos++;
      const obj = Object.create(null) as JsonObject;
      skipWs();
      if (text[pos] === "}") {
        pos++;
        return obj;
      }
      for (;;) {
        skipWs();
        if (text[pos] !== '"') fail("expected a string key");
        const keyPos = pos;
        const key = parseString();
        if (Object.hasOwn(obj, key)) {
          pos = keyPos;
          fail(`duplicate key ${JSON.stringify(key)}`);
        }
        skipWs();
        if (text[pos] !== ":") fail("expected ':'");
        pos++;
        obj[key] = parseValue(depth + 1);
        skipWs();
        if (text[pos] === ",") pos++;
        else if (text[pos] === "}") {
          pos++;
          return obj;
        } else fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      pos++;
      const arr: JsonValue[] = [];
      skipWs();
      if (text[pos] === "]") {
        pos++;
        return arr;
      }
      for (;;) {
        arr.push(parseValue(depth + 1));
        skipWs();
        if (text[pos] === ",") pos++;
        else if (text[pos] === "]") {
          pos++;
          return arr;
        } else fail("expected ',' or ']'");
      }
    }
    if (c === '"') return parseString();
    if (text.startsWith("true", pos)) {
      pos += 4;
      return true;
    }
    if (text.startsWith("false", pos)) {
      pos += 5;
      return false;
    }
    if (text.startsWith("null", pos)) {
      pos += 4;
      return null;
    }
    if (pos >= text.length) fail("unexpected end of input");
    return parseNumber();
  };

  const value = parseValue(0);
  skipWs();
  if (pos !== text.length) fail("unexpected data after the JSON value");
  return value;
}

/** True for a parsed JSON object (not an array, not null). */
export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// --- JSON files ---------------------------------------------------------------------------------

/**
 * Largest config-like JSON file read (`config.json`, `adapter_config.json`,
 * `generation_config.json`, `tokenizer_config.json`): real ones are a few KiB, so this is far
 * above anything real, yet small enough that a hostile file is refused before it is read.
 */
export const MAX_CONFIG_JSON_BYTES = 16 * 1024 * 1024;
/** Largest shard index (`*.index.json`): about 10 MiB for the largest public checkpoints. */
export const MAX_INDEX_JSON_BYTES = 64 * 1024 * 1024;

export interface ReadJsonFileOptions {
  /** Refuse files larger than this (default {@link MAX_CONFIG_JSON_BYTES}). */
  maxBytes?: number;
  /** Appended to the "not found" error: what the reader needed the file for. */
  notFoundHint?: string;
  /**
   * Parse with {@link parseJsonStrict} (duplicate keys refused, prototype-free objects; default)
   * or with `JSON.parse` (files our own tools wrote).
   */
  strict?: boolean;
}

/**
 * Reads and parses one JSON file with bounded work: the size is checked before reading (a sparse
 * 2 GiB file is refused at once) and again while reading (a file that grows, or a device that
 * reports no size), and every error names the file: not found, too large, not UTF-8, not JSON.
 */
export async function readJsonFile(
  path: string,
  options: ReadJsonFileOptions = {},
): Promise<JsonValue> {
  const maxBytes = options.maxBytes ?? MAX_CONFIG_JSON_BYTES;
  const tooLarge = (size: string) =>
    new Error(
      `${path}: the file is ${size}, over the limit of ${maxBytes} bytes for this JSON file ` +
        "(real ones are far smaller; is it the right file?)",
    );
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        `${path}: not found${options.notFoundHint ? ` (${options.notFoundHint})` : ""}`,
      );
    }
    throw new Error(`${path}: cannot be read (${(err as Error).message})`);
  }
  let bytes: Uint8Array;
  try {
    const info = await file.stat();
    if (info.isDirectory) throw new Error(`${path}: is a directory, not a JSON file`);
    if (info.size > maxBytes) throw tooLarge(`${info.size} bytes`);
    // Read at most maxBytes + 1: the stat size may be wrong (a pipe, a file being written).
    const buf = new Uint8Array(Math.min(maxBytes + 1, Math.max(info.size, 0) + 1));
    let got = 0;
    let grow = buf;
    for (;;) {
      if (got === grow.length) {
        if (grow.length > maxBytes) throw tooLarge(`more than ${maxBytes} bytes`);
        const next = new Uint8Array(Math.min(maxBytes + 1, grow.length * 2));
        next.set(grow);
        grow = next;
      }
      const n = await file.read(grow.subarray(got));
      if (n === null) break;
      got += n;
    }
    bytes = grow.subarray(0, got);
  } finally {
    file.close();
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new Error(`${path}: not valid UTF-8 (a JSON file must be UTF-8 text)`);
  }
  try {
    return options.strict === false ? JSON.parse(text) : parseJsonStrict(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}
