/**
 * Number flags of the command-line tools, checked one way everywhere: absent gives undefined, a
 * value that is not a number (an integer where one is asked for) or out of range throws a
 * {@link FlagError} naming the flag, the rule and what was given.
 */

/** A bad command-line flag; CLIs print it with their usage and exit 2. */
export class FlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

/** `raw` as a finite number passing `check`, whose rule `rule` ("a number > 0") the error quotes. */
export function numberFlag(
  name: string,
  raw: string | undefined,
  check: (value: number) => boolean,
  rule: string,
): number | undefined {
  if (raw === undefined) return undefined;
  const value = raw.trim() === "" ? NaN : Number(raw);
  if (!Number.isFinite(value) || !check(value)) {
    throw new FlagError(`--${name}: expected ${rule} (got "${raw}")`);
  }
  return value;
}

/** `raw` as a decimal integer in [min, max]. */
export function intFlag(
  name: string,
  raw: string | undefined,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  const rule = max === Number.MAX_SAFE_INTEGER
    ? `an integer >= ${min}`
    : `an integer from ${min} to ${max}`;
  if (raw !== undefined && !/^\s*-?\d+\s*$/.test(raw)) {
    throw new FlagError(`--${name}: expected ${rule} (got "${raw}")`);
  }
  return numberFlag(name, raw, (v) => Number.isSafeInteger(v) && v >= min && v <= max, rule);
}
