// Learning-rate schedules (HF formulas) and the trainer config: presets, file, flags, validation.
import assert from "node:assert/strict";
import { lrAt, lrFactor, parseSchedulerState, schedulerState } from "../train/schedule.ts";
import {
  loadTrainConfig,
  parseTrainFlags,
  preset,
  PRESETS,
  resolveTrainConfig,
  trainHelp,
} from "../train/config.ts";

const near = (a: number, b: number, what: string) =>
  assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

Deno.test("cosine schedule with warm-up follows get_cosine_schedule_with_warmup", () => {
  const c = { kind: "cosine" as const, lr: 5e-4, warmupSteps: 1000, totalSteps: 10000 };
  near(lrAt(c, 0), 0, "step 0");
  near(lrAt(c, 1), 5e-7, "step 1");
  near(lrAt(c, 500), 2.5e-4, "mid warm-up");
  near(lrAt(c, 1000), 5e-4, "end of warm-up");
  near(lrFactor(c, 3250), 0.5 * (1 + Math.cos(Math.PI / 4)), "quarter of the decay");
  near(lrFactor(c, 5500), 0.5, "half of the decay");
  near(lrAt(c, 10000), 0, "end");
  near(
    lrAt(c, 12000),
    lrAt(c, 8000),
    "past the end the cosine wave comes back up (HF clamps only at 0)",
  );
  assert.ok(lrAt(c, 2000) > lrAt(c, 3000), "decays");
});

Deno.test("linear and constant schedules with warm-up", () => {
  const l = { kind: "linear" as const, lr: 1e-3, warmupSteps: 10, totalSteps: 110 };
  near(lrAt(l, 5), 5e-4, "warm-up");
  near(lrAt(l, 10), 1e-3, "peak");
  near(lrAt(l, 60), 5e-4, "half way");
  near(lrAt(l, 110), 0, "end");
  near(lrAt(l, 200), 0, "clamped at 0");
  const k = { kind: "constant" as const, lr: 2e-4, warmupSteps: 4, totalSteps: 0 };
  near(lrAt(k, 2), 1e-4, "constant warm-up");
  near(lrAt(k, 4), 2e-4, "constant");
  near(lrAt(k, 10_000), 2e-4, "constant forever");
  near(lrAt({ ...k, warmupSteps: 0 }, 0), 2e-4, "no warm-up: full lr from step 0");
  const st = schedulerState(l, 60);
  assert.deepEqual(parseSchedulerState(JSON.parse(JSON.stringify(st)), "s.json"), st);
  assert.throws(() => parseSchedulerState({ ...st, kind: "step" }, "s.json"), /s\.json: kind/);
});

Deno.test("the chatglm-lora-medical preset holds the seed's settings", () => {
  const p = preset("chatglm-lora-medical");
  assert.equal(p.loraR, 8);
  assert.equal(p.loraAlpha, 32);
  assert.equal(p.loraDropout, 0.1);
  assert.deepEqual(p.targetModules, ["query_key_value"]);
  assert.equal(p.lr, 5e-4);
  assert.equal(p.scheduler, "cosine");
  assert.equal(p.warmupSteps, 1000);
  assert.equal(p.batchSize, 8);
  assert.equal(p.gradAccumulation, 8);
  assert.equal(p.evalSteps, 50);
  assert.equal(p.saveSteps, 100);
  assert.equal(p.maxLength, 512);
  assert.equal(p.dtype, "f16");
  assert.equal(p.full, false);
  assert.ok(PRESETS.demo.maxSteps! > 0);
  // presets are copies
  p.targetModules.push("dense");
  assert.deepEqual(preset("chatglm-lora-medical").targetModules, ["query_key_value"]);
  assert.throws(
    () => preset("nope"),
    /unknown preset "nope" \(known: chatglm-lora-medical, medical-lora, demo\)/,
  );
});

Deno.test("flags override the file, the file overrides the preset", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/run.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({ preset: "demo", lr: 1e-4, loraR: 4, targetModules: ["dense"], resume: true }),
  );
  const { config, sources } = await loadTrainConfig([
    "--config",
    path,
    "--model",
    "m",
    "--data",
    "d",
    "--lora-r",
    "16",
    "--target-modules",
    "query_key_value, dense_h_to_4h",
    "--max-steps",
    "7",
  ]);
  assert.equal(config.preset, "demo");
  assert.equal(config.lr, 1e-4); // file
  assert.equal(sources.lr, path);
  assert.equal(config.loraR, 16); // flag over file
  assert.equal(sources.loraR, "--lora-r");
  assert.deepEqual(config.targetModules, ["query_key_value", "dense_h_to_4h"]);
  assert.equal(config.maxSteps, 7);
  assert.equal(config.warmupSteps, PRESETS.demo.warmupSteps); // preset
  assert.equal(config.resume, ""); // true in a file = newest checkpoint
  assert.equal(config.model, "m");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--resume with and without a directory, --full, --dry-run", () => {
  assert.equal(parseTrainFlags(["--resume"]).values.resume, "");
  assert.equal(parseTrainFlags(["--resume", "--full"]).values.resume, "");
  assert.equal(
    parseTrainFlags(["--resume", "runs/x/checkpoint-100"]).values.resume,
    "runs/x/checkpoint-100",
  );
  const f = parseTrainFlags(["--full", "--dry-run"]).values;
  assert.equal(f.full, true);
  assert.equal(f.dryRun, true);
  const { config } = resolveTrainConfig({ dryRun: true }, null);
  assert.equal(config.model, null, "a dry run needs no model directory");
});

Deno.test("bad flags and bad files get errors naming the flag or the file and field", async () => {
  assert.throws(
    () => parseTrainFlags(["--lora-r", "x"]),
    /--lora-r: must be an integer \(got "x"\)/,
  );
  assert.throws(() => parseTrainFlags(["--lora-r", "0"]), /--lora-r: must be >= 1/);
  assert.throws(() => parseTrainFlags(["--lr=-1"]), /--lr: must be > 0/);
  assert.throws(() => parseTrainFlags(["--lora-dropout", "1"]), /--lora-dropout: must be < 1/);
  assert.throws(
    () => parseTrainFlags(["--scheduler", "step"]),
    /--scheduler: must be one of cosine, linear, constant/,
  );
  assert.throws(() => parseTrainFlags(["--target-modules", "a,,b"]), /--target-modules/);
  assert.throws(() => parseTrainFlags(["--bogus", "1"]), /bogus/);
  assert.throws(() => parseTrainFlags(["positional"]), /positional/);
  assert.throws(
    () => resolveTrainConfig({ dryRun: false, data: "d" }, null),
    /--model is required/,
  );
  assert.throws(() => resolveTrainConfig({ model: "m" }, null), /--data is required/);
  assert.throws(
    () => resolveTrainConfig({ model: "m", data: "d", full: true, adapterInit: "a" }, null),
    /--adapter-init .* cannot be combined with --full/,
  );
  const file = (json: unknown) => ({ path: "cfg.json", json });
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file({ lora_r: 8 })),
    /cfg\.json: unknown field "lora_r" \(did you mean "loraR"\?\)/,
  );
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file({ loraR: "8" })),
    /cfg\.json: field "loraR" must be an integer/,
  );
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file({ batchSize: 2.5 })),
    /field "batchSize" must be an integer/,
  );
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file({ targetModules: "query_key_value" })),
    /field "targetModules" must be a non-empty list/,
  );
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file({ warmupSteps: -3 })),
    /field "warmupSteps" must be >= 0/,
  );
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file([1, 2])),
    /cfg\.json: expected a JSON object/,
  );
  assert.throws(
    () => resolveTrainConfig({ dryRun: true }, file({ preset: "x" })),
    /unknown preset "x"/,
  );
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/bad.json`, "{ lr: 1 }");
  await assert.rejects(
    () => loadTrainConfig(["--config", `${dir}/bad.json`]),
    /bad\.json: not valid JSON/,
  );
  await assert.rejects(
    () => loadTrainConfig(["--config", `${dir}/missing.json`]),
    /--config .*missing\.json: cannot read it/,
  );
  await Deno.remove(dir, { recursive: true });
  assert.match(trainHelp(), /--target-modules VALUE\s+default \["query_key_value"\]/);
});
