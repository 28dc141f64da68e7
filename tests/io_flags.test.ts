// The one number-flag parser of the command-line tools: absent → undefined, bad → a FlagError
// naming the flag, the rule and the value given.
import assert from "node:assert/strict";
import { FlagError, intFlag, numberFlag } from "../base/flags.ts";

Deno.test("intFlag: decimal integers in range; the error names flag, rule and value", () => {
  assert.equal(intFlag("port", undefined, 0, 65535), undefined);
  assert.equal(intFlag("port", "8080", 0, 65535), 8080);
  assert.equal(intFlag("shots", " 3 ", 0), 3);
  assert.equal(intFlag("shots", "-2", -5), -2);
  for (const bad of ["", "x", "1.5", "1e3", "0x10", "70000"]) {
    assert.throws(
      () => intFlag("port", bad, 0, 65535),
      (e: Error) =>
        e instanceof FlagError &&
        e.message === `--port: expected an integer from 0 to 65535 (got "${bad}")`,
    );
  }
  assert.throws(() => intFlag("shots", "-1", 0), /--shots: expected an integer >= 0 \(got "-1"\)/);
});

Deno.test("numberFlag: finite numbers passing the check", () => {
  const ratio = (raw?: string) =>
    numberFlag("valid-ratio", raw, (r) => r >= 0 && r < 1, "a number in [0, 1)");
  assert.equal(ratio(undefined), undefined);
  assert.equal(ratio("0.25"), 0.25);
  for (const bad of ["1", "-0.1", "NaN", "Infinity", " ", "abc"]) {
    assert.throws(() => ratio(bad), /--valid-ratio: expected a number in \[0, 1\) \(got "/);
  }
});
