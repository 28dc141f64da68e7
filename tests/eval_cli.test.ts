// The eval CLI's flag checks and error exits (no model needed).
import { deepEqual, equal, match } from "node:assert/strict";
import { main, parseEvalArgs } from "../eval/cli.ts";

const DATA = new URL("./fixtures/datasets", import.meta.url).pathname;

Deno.test("CLI flags: clear errors, --help", async () => {
  const err = (args: string[]) => {
    try {
      parseEvalArgs(args);
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  match(err(["--tasks", "cmmlu:x"]), /--model DIR is required/);
  match(err(["--model", "m"]), /--tasks is required/);
  match(err(["--model", "m", "--tasks", "cmmlu:x", "--scorer", "bleu"]), /--scorer: expected/);
  match(
    err(["--model", "m", "--tasks", "cmmlu:x", "--shots=-1"]),
    /--shots: expected an integer/,
  );
  match(err(["--model", "m", "--tasks", "foo:x"]), /unknown task kind "foo"/);
  match(err(["--model", "m", "--tasks", "cmmlu:x", "--adapter", "a/base"]), /named "base"/);
  match(err(["--model", "m", "--tasks", "cmmlu:x", "--bogus"]), /bogus/);
  const o = parseEvalArgs(["--model", "m", "--tasks", "cmmlu:x,heldout:b", "--resume"])!;
  deepEqual(o.heldout, ["b"]);
  equal(o.settings.resume, true);
  equal(o.settings.scorer, "loglik");
  equal(parseEvalArgs(["-h"]), null);
  equal(await main(["--model", "/nonexistent", "--tasks", `cmmlu:${DATA}/eval/cmmlu`]), 1);
  equal(await main(["--scorer"]), 2);
});
