// Run-level helpers: save + rotate + plots at each save step, --resume resolution and
// compatibility, the training RNG, Ctrl-C handling and evaluation metrics.
import assert from "node:assert/strict";
import { type CheckpointData, listCheckpoints } from "../train/checkpoint.ts";
import { preset } from "../train/config.ts";
import { evalAccumulator } from "../train/eval_metrics.ts";
import { createRng, rngFromState, shuffle } from "../base/random.ts";
import {
  checkResumeCompatible,
  isBestStep,
  resolveResume,
  saveRunCheckpoint,
} from "../train/run_checkpoint.ts";
import { schedulerState } from "../train/schedule.ts";
import {
  createTrainerState,
  logEval,
  logTrain,
  type TrainerState,
} from "../train/trainer_state.ts";

function data(step: number, state: TrainerState): CheckpointData {
  return {
    step,
    weights: {
      kind: "full",
      tensors: [{ name: "w", shape: [2], data: new Float32Array([step, 1]) }],
    },
    optimizer: { hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, tensors: [] },
    scheduler: schedulerState({ kind: "linear", lr: 1e-3, warmupSteps: 0, totalSteps: 400 }, step),
    rng: { words: createRng(step).state() },
    trainerState: structuredClone(state),
    trainingArgs: preset("demo"),
  };
}

Deno.test("each save records the best checkpoint, rotates, and refreshes trainer_state.json and the plots", async () => {
  const out = await Deno.makeTempDir();
  const state = createTrainerState({
    maxSteps: 400,
    epochs: 1,
    loggingSteps: 50,
    evalSteps: 100,
    saveSteps: 100,
    batchSize: 2,
  });
  const evals: Record<number, number> = { 100: 2.0, 200: 2.5, 300: 2.2, 400: 2.4 };
  let best: string | null = null;
  for (const step of [100, 200, 300, 400]) {
    logTrain(state, { step, epoch: step / 400, loss: 3 - step / 400, learning_rate: 1e-3 });
    logEval(state, { step, epoch: step / 400, eval_loss: evals[step] });
    const d = data(step, state);
    const r = await saveRunCheckpoint(out, d, { keep: 1 });
    state.best_model_checkpoint = d.trainerState.best_model_checkpoint;
    assert.equal(r.best, step === 100, `step ${step} best?`);
    assert.equal(r.warning, undefined);
    if (r.best) best = r.dir;
  }
  assert.equal(best, `${out}/checkpoint-100`);
  // newest one plus the best one survive
  assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [100, 400]);
  const top = JSON.parse(await Deno.readTextFile(`${out}/trainer_state.json`));
  assert.equal(top.global_step, 400);
  assert.equal(top.best_metric, 2.0);
  assert.equal(top.best_model_checkpoint, `${out}/checkpoint-100`);
  assert.ok((await Deno.stat(`${out}/loss.png`)).size > 0);
  assert.ok((await Deno.stat(`${out}/loss.svg`)).size > 0);
  assert.equal(isBestStep(top, 400), false);
  await Deno.remove(out, { recursive: true });
});

Deno.test("--resume resolution: newest checkpoint, a named one, or a clear error", async () => {
  const out = await Deno.makeTempDir();
  assert.equal(await resolveResume({ resume: null, outputDir: out }), null);
  await assert.rejects(
    () => resolveResume({ resume: "", outputDir: out }),
    /no checkpoint-N folder in .* to resume from/,
  );
  const state = createTrainerState({
    maxSteps: 10,
    epochs: 1,
    loggingSteps: 1,
    evalSteps: 0,
    saveSteps: 5,
    batchSize: 1,
  });
  await saveRunCheckpoint(out, data(5, state), { keep: 0 });
  await saveRunCheckpoint(out, data(10, state), { keep: 0 });
  // an interrupted later save is ignored
  await Deno.mkdir(`${out}/checkpoint-15.tmp-999999999`);
  assert.equal(await resolveResume({ resume: "", outputDir: out }), `${out}/checkpoint-10`);
  assert.equal(
    await resolveResume({ resume: `${out}/checkpoint-5/`, outputDir: out }),
    `${out}/checkpoint-5`,
  );
  await assert.rejects(
    () => resolveResume({ resume: `${out}/nope`, outputDir: out }),
    /--resume .*nope: not a complete checkpoint/,
  );
  await Deno.remove(out, { recursive: true });
});

Deno.test("resume compatibility: shape-changing settings are errors, others are notes", () => {
  const saved = preset("demo");
  const now = { ...preset("demo"), loraR: 32, lr: 1e-4, resume: "" };
  const { errors, notes } = checkResumeCompatible(JSON.parse(JSON.stringify(saved)), now);
  assert.deepEqual(errors, ["loraR: checkpoint 16, now 32"]);
  assert.deepEqual(notes, ["lr: checkpoint 0.01, now 0.0001"]);
  assert.deepEqual(checkResumeCompatible(saved, { ...saved }), { errors: [], notes: [] });
  assert.match(checkResumeCompatible(undefined, now).notes[0], /no training_args\.json/);
});

Deno.test("training RNG: seeded, restorable from its state, unbiased below(), shuffles are permutations", () => {
  const a = createRng(42), b = createRng(42);
  const xs = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(xs, Array.from({ length: 5 }, () => b.nextU32()));
  assert.notDeepEqual(xs, Array.from({ length: 5 }, () => createRng(43).nextU32()));
  const saved = a.state();
  const cont = rngFromState(JSON.parse(JSON.stringify(saved)));
  assert.deepEqual(
    Array.from({ length: 100 }, () => a.next()),
    Array.from({ length: 100 }, () => cont.next()),
  );
  const counts = new Array(3).fill(0);
  const r = createRng(1);
  for (let i = 0; i < 3000; i++) counts[r.below(3)]++;
  assert.ok(counts.every((c) => c > 900 && c < 1100), `below(3) counts ${counts}`);
  const items = Array.from({ length: 50 }, (_, i) => i);
  const shuffled = shuffle([...items], createRng(7));
  assert.notDeepEqual(shuffled, items);
  assert.deepEqual([...shuffled].sort((x, y) => x - y), items);
  assert.deepEqual(shuffle([...items], createRng(7)), shuffled);
  assert.throws(() => rngFromState([0, 0, 0, 0]), /not all zero/);
  assert.throws(() => rngFromState([1, 2, 3]), /four u32 words/);
});

Deno.test("Ctrl-C: the first SIGINT requests a save, the second quits (exit 130)", async () => {
  if (Deno.build.os === "windows") {
    console.log("skipped: POSIX signals are not available on Windows");
    return;
  }
  // in a child process: the test runner itself stops on SIGINT
  const dir = await Deno.makeTempDir();
  const script = `${dir}/child.ts`;
  const url = new URL("../train/interrupt.ts", import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import { watchInterrupt } from ${JSON.stringify(url)};
const say = (s: string) => Deno.stdout.writeSync(new TextEncoder().encode(s + "\\n"));
const w = watchInterrupt({ onFirst: () => say("first " + w.requested) });
say("ready");
setInterval(() => {}, 1000);
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  let seen = "";
  const waitFor = async (text: string) => {
    while (!seen.includes(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += new TextDecoder().decode(value);
    }
    assert.ok(
      seen.includes(text),
      `child printed ${JSON.stringify(text)} (got ${JSON.stringify(seen)})`,
    );
  };
  await waitFor("ready");
  child.kill("SIGINT");
  await waitFor("first true");
  child.kill("SIGINT");
  const status = await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  await child.stderr.cancel();
  assert.equal(status.code, 130);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("evaluation loss is the token-weighted mean; perplexity and rates follow", () => {
  const acc = evalAccumulator();
  acc.add(2.0, 100, 4);
  acc.add(4.0, 300, 4);
  acc.add(NaN, 0, 1); // no supervised tokens: ignored
  const e = acc.entry(50, 0.5, 2);
  assert.equal(e.eval_loss, 3.5);
  assert.equal(e.eval_perplexity, Math.exp(3.5));
  assert.equal(e.eval_tokens_per_second, 200);
  assert.equal(e.eval_samples_per_second, 4);
  assert.equal(e.eval_steps_per_second, 1);
  assert.throws(() => evalAccumulator().entry(1, 0, 1), /no supervised tokens/);
});
