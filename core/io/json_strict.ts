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
