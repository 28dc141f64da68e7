// Checkpoints (train/checkpoint.ts): PEFT layout, optimizer/scheduler/RNG/trainer state round
// trips, newest-checkpoint lookup, rotation, and crash safety (partial temp dirs, SIGKILL mid-save).
import assert from "node:assert/strict";
import {
  type CheckpointData,
  cleanStaleTemps,
  findLatestCheckpoint,
  listCheckpoints,
  loadAdapterStandalone,
  loadCheckpoint,
  rotateCheckpoints,
  saveCheckpoint,
} from "../train/checkpoint.ts";
import { schedulerState } from "../train/schedule.ts";
import { createTrainerState, logEval, logTrain } from "../train/trainer_state.ts";

const ADAPTER = new URL("./fixtures/chatglm6b-tiny/adapter-qkv", import.meta.url).pathname;

async function sample(step: number): Promise<CheckpointData> {
  const adapter = await loadAdapterStandalone(ADAPTER);
  const tensors = [...adapter.modules.values()].flatMap((m) => [
    { name: `${m.module}.lora_A`, shape: [m.r, m.inFeatures], n: m.a.length },
    { name: `${m.module}.lora_B`, shape: [m.outFeatures, m.r], n: m.b.length },
  ]);
  const state = createTrainerState({
    maxSteps: 1000,
    epochs: 3,
    loggingSteps: 10,
    evalSteps: 50,
    saveSteps: 100,
    batchSize: 8,
  });
  for (let s = 10; s <= step; s += 10) {
    logTrain(state, {
      step: s,
      epoch: s / 400,
      loss: 3 - s / 1000,
      learning_rate: 5e-4 * s / 1000,
    });
    if (s % 50 === 0) {
      logEval(state, { step: s, epoch: s / 400, eval_loss: 2.5 + ((s / 50) % 3) / 10 });
    }
  }
  return {
    step,
    weights: { kind: "lora", adapter },
    optimizer: {
      hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
      tensors: tensors.map((t, i) => ({
        name: t.name,
        shape: t.shape,
        step,
        m: Float32Array.from({ length: t.n }, (_, j) => Math.sin(i + j + step)),
        v: Float32Array.from({ length: t.n }, (_, j) => (j % 7) * 1e-6 + step),
      })),
    },
    scheduler: schedulerState(
      { kind: "cosine", lr: 5e-4, warmupSteps: 100, totalSteps: 1000 },
      step,
    ),
    rng: { seed: 42, words: [1, 2, 3, step], epoch: 0, microBatch: step * 8 },
    trainerState: state,
    trainingArgs: { preset: "chatglm-lora-medical", loraR: 8 },
  };
}

Deno.test("a checkpoint holds the PEFT adapter byte for byte and round-trips every state file", async () => {
  const out = await Deno.makeTempDir();
  const data = await sample(100);
  const dir = await saveCheckpoint(out, data);
  assert.equal(dir, `${out}/checkpoint-100`);
  const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  assert.deepEqual(names, [
    "adapter_config.json",
    "adapter_model.safetensors",
    "optimizer.safetensors",
    "rng_state.json",
    "scheduler.json",
    "trainer_state.json",
    "training_args.json",
  ]);
  // same tensors as the fixture → the same bytes as peft wrote (README §7, §9)
  assert.deepEqual(
    await Deno.readFile(`${dir}/adapter_model.safetensors`),
    await Deno.readFile(`${ADAPTER}/adapter_model.safetensors`),
  );
  assert.deepEqual(
    JSON.parse(await Deno.readTextFile(`${dir}/adapter_config.json`)),
    JSON.parse(await Deno.readTextFile(`${ADAPTER}/adapter_config.json`)),
  );
  const back = await loadCheckpoint(dir);
  assert.equal(back.step, 100);
  assert.equal(back.weights.kind, "lora");
  if (back.weights.kind === "lora" && data.weights.kind === "lora") {
    for (const [name, m] of data.weights.adapter.modules) {
      assert.deepEqual(back.weights.adapter.modules.get(name)!.a, m.a);
      assert.deepEqual(back.weights.adapter.modules.get(name)!.b, m.b);
    }
  }
  assert.deepEqual(back.optimizer, data.optimizer);
  assert.deepEqual(back.scheduler, data.scheduler);
  assert.deepEqual(back.rng, data.rng);
  assert.deepEqual(back.trainingArgs, data.trainingArgs);
  assert.deepEqual(back.trainerState, JSON.parse(JSON.stringify(data.trainerState)));
  // HF Trainer's shape
  const ts = JSON.parse(await Deno.readTextFile(`${dir}/trainer_state.json`));
  assert.equal(ts.global_step, 100);
  assert.equal(ts.best_metric, 2.5 + 1 / 10);
  assert.deepEqual(Object.keys(ts.log_history[0]).sort(), [
    "epoch",
    "learning_rate",
    "loss",
    "step",
  ]);
  assert.ok(
    ts.log_history.some((e: Record<string, number>) => e.eval_loss !== undefined && e.step === 50),
  );
  await Deno.remove(out, { recursive: true });
});

Deno.test("full fine-tuning checkpoints write model.safetensors and config.json", async () => {
  const out = await Deno.makeTempDir();
  const base = await sample(10);
  const w = {
    name: "transformer.final_layernorm.weight",
    shape: [4],
    data: new Float32Array([1, 2, 3, 4]),
  };
  const dir = await saveCheckpoint(out, {
    ...base,
    weights: { kind: "full", tensors: [w], modelConfig: { hidden_size: 4 } },
  });
  const back = await loadCheckpoint(dir);
  assert.equal(back.weights.kind, "full");
  if (back.weights.kind === "full") {
    assert.deepEqual(back.weights.tensors, [w]);
    assert.deepEqual(back.weights.modelConfig, { hidden_size: 4 });
  }
  await Deno.remove(out, { recursive: true });
});

async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

Deno.test("a partial temp dir is ignored by the newest-checkpoint lookup and cleaned; rotation keeps the best", async () => {
  const out = await Deno.makeTempDir();
  for (const step of [100, 200, 300]) await saveCheckpoint(out, await sample(step));
  // an interrupted save of step 400 by a process that no longer exists
  const pid = await deadPid();
  const tmp = `${out}/checkpoint-400.tmp-${pid}`;
  await Deno.mkdir(tmp);
  await Deno.writeTextFile(`${tmp}/adapter_config.json`, "{}");
  await Deno.writeFile(`${tmp}/adapter_model.safetensors`, new Uint8Array(10));
  // and a checkpoint dir without trainer_state.json (not complete) is skipped too
  await Deno.mkdir(`${out}/checkpoint-500`);
  assert.equal(await findLatestCheckpoint(out), `${out}/checkpoint-300`);
  assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [100, 200, 300]);
  assert.deepEqual(await cleanStaleTemps(out), [tmp]);
  await assert.rejects(() => Deno.stat(tmp), Deno.errors.NotFound);
  // a live process's temp dir (ours) is left alone
  await Deno.mkdir(`${out}/checkpoint-600.tmp-${Deno.pid}`);
  assert.deepEqual(await cleanStaleTemps(out), []);
  await Deno.remove(`${out}/checkpoint-600.tmp-${Deno.pid}`);

  await saveCheckpoint(out, await sample(400));
  // keep the newest 2 plus the best (step 100)
  const removed = await rotateCheckpoints(out, 2, `${out}/checkpoint-100`);
  assert.deepEqual(removed, [`${out}/checkpoint-200`]);
  assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [100, 300, 400]);
  assert.deepEqual(await rotateCheckpoints(out, 0, null), [], "0 keeps everything");
  // re-saving an existing step replaces it
  const again = await sample(400);
  again.rng = { replaced: true };
  await saveCheckpoint(out, again);
  assert.deepEqual((await loadCheckpoint(`${out}/checkpoint-400`)).rng, { replaced: true });
  assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [100, 300, 400]);
  await Deno.remove(out, { recursive: true });
});

Deno.test("bad checkpoint files are refused with the file named", async () => {
  const out = await Deno.makeTempDir();
  const dir = await saveCheckpoint(out, await sample(100));
  await Deno.writeTextFile(`${dir}/scheduler.json`, '{"kind": "cosine"}');
  await assert.rejects(() => loadCheckpoint(dir), /scheduler\.json: lr must be a finite number/);
  await Deno.writeTextFile(`${dir}/trainer_state.json`, "not json");
  await assert.rejects(() => loadCheckpoint(dir), /trainer_state\.json: not valid JSON/);
  await assert.rejects(
    () => loadCheckpoint(`${out}/nope`),
    /nope\/trainer_state\.json: not found/,
  );
  await Deno.remove(out, { recursive: true });
});

Deno.test("SIGKILL in the middle of a save leaves the previous checkpoint intact", async () => {
  const out = await Deno.makeTempDir();
  const first = await sample(100);
  await saveCheckpoint(out, first);
  const script = `${out}/child.ts`;
  const checkpointUrl = new URL("../train/checkpoint.ts", import.meta.url).href;
  const testUrl = import.meta.url;
  await Deno.writeTextFile(
    script,
    `import { saveCheckpoint } from ${JSON.stringify(checkpointUrl)};
const { sampleForChild } = await import(${JSON.stringify(testUrl)} + "?child");
await saveCheckpoint(${JSON.stringify(out)}, await sampleForChild(200), {
  async afterFile(name) {
    if (name === "optimizer.safetensors") {
      await Deno.stdout.write(new TextEncoder().encode("MID\\n"));
      await new Promise(() => {}); // hang here until killed
    }
  },
});
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--no-check", script],
    stdout: "piped",
    stderr: "inherit",
    env: { MEDGLM_CHECKPOINT_CHILD: "1" },
  }).spawn();
  const reader = child.stdout.getReader();
  let seen = "";
  while (!seen.includes("MID")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += new TextDecoder().decode(value);
  }
  assert.ok(seen.includes("MID"), "the child reached the middle of its save");
  child.kill("SIGKILL");
  const status = await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  assert.equal(status.signal, "SIGKILL");
  const temps = (await Array.fromAsync(Deno.readDir(out))).map((e) => e.name).filter((n) =>
    n.includes(".tmp-")
  );
  assert.deepEqual(
    temps,
    [`checkpoint-200.tmp-${child.pid}`],
    "the half-written save is a temp dir",
  );
  assert.equal(await findLatestCheckpoint(out), `${out}/checkpoint-100`);
  const back = await loadCheckpoint(`${out}/checkpoint-100`);
  assert.deepEqual(back.optimizer, first.optimizer);
  assert.deepEqual(await cleanStaleTemps(out), [`${out}/checkpoint-200.tmp-${child.pid}`]);
  await Deno.remove(out, { recursive: true });
});

/** Used by the child process of the SIGKILL test. */
export function sampleForChild(step: number): Promise<CheckpointData> {
  return sample(step);
}
