// The builder end to end over the dataset fixtures: counts, warnings, byte-identical rebuilds,
// split disjointness, token shards that match their JSONL records, config errors, the CLI and
// the opt-in download against a local HTTP server.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  buildDataset,
  type DatasetConfig,
  loadConfig,
  readManifest,
  readTokenShard,
  resolveConfig,
  streamTokenShard,
  tokenizeRecord,
  tokenShardPaths,
  validateConfig,
} from "../data/build/mod.ts";
import { createTally, exactKey } from "../data/clean/mod.ts";
import { downloadSources } from "../data/sources/mod.ts";
import { loadChatGLMTokenizer as loadTokenizer } from "../data/tokenizer/mod.ts";
import { main as cli } from "../data/cli.ts";

const ROOT = new URL("./fixtures/datasets", import.meta.url).pathname;
const TOK_DIR = new URL("./fixtures/chatglm-tokenizer", import.meta.url).pathname;
const expected = JSON.parse(await Deno.readTextFile(`${ROOT}/expected.json`));

const THREE_DIRS = ["其他中文问题补充", "翻译后的中文数据", "医学领域数据"].map((d) =>
  `alpaca_chinese_dataset/${d}/*.json`
);

function fixtureConfig(extra: Partial<DatasetConfig> = {}): DatasetConfig {
  return {
    name: "fx",
    root: ROOT,
    sources: [
      { name: "alpaca_zh", paths: THREE_DIRS },
      { name: "med_chatglm", paths: ["med-chatglm/data/*.txt"] },
      { name: "huatuo", paths: ["huatuo-llama-med-chinese"] },
      { name: "cot", paths: ["alpaca-cot/data/formatted_cot_data/*.json"], weight: 0.5 },
      { name: "dialogue", paths: ["chinese-medical-dialogue-data/*.csv"], weight: 2 },
      { name: "extra", paths: ["alpaca_chinese_dataset/data/*.json", "eval/**"] },
    ],
    split: { validRatio: 0.1 },
    tokens: { tokenizer: TOK_DIR, maxSeqLength: 200 },
    ...extra,
  };
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "medglm-data-test-" });
}

async function filesOf(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile) continue;
    out.set(
      e.name,
      createHash("sha256").update(await Deno.readFile(`${dir}/${e.name}`)).digest("hex"),
    );
  }
  return out;
}

async function readJsonl(path: string) {
  const text = await Deno.readTextFile(path);
  return text.trimEnd().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

const quiet = { progress: false } as const;

Deno.test("build: byte-identical rebuilds, disjoint split, manifest counts", async () => {
  const a = await tempDir(), b = await tempDir();
  try {
    const r1 = await buildDataset(fixtureConfig(), { ...quiet, out: a });
    const r2 = await buildDataset(fixtureConfig(), { ...quiet, out: b });
    const fa = await filesOf(a), fb = await filesOf(b);
    assert.deepEqual([...fa.keys()].sort(), [
      "manifest.json",
      "train-00000.bin",
      "train-00000.jsonl",
      "valid-00000.bin",
      "valid-00000.jsonl",
    ]);
    assert.deepEqual(fa, fb, "same inputs, same bytes");
    // a rebuild into the same folder changes nothing either
    await buildDataset(fixtureConfig(), { ...quiet, out: a });
    assert.deepEqual(await filesOf(a), fa);
    assert.equal(r1.manifest.contentHash, r2.manifest.contentHash);
    // a different seed gives a different order
    const c = await tempDir();
    await buildDataset(fixtureConfig({ seed: 7 }), { ...quiet, out: c });
    assert.notEqual((await filesOf(c)).get("train-00000.jsonl"), fa.get("train-00000.jsonl"));
    await Deno.remove(c, { recursive: true });

    const m = r1.manifest;
    const train = await readJsonl(`${a}/train-00000.jsonl`);
    const valid = await readJsonl(`${a}/valid-00000.jsonl`);
    assert.equal(valid.length, m.split.valid);
    assert.equal(train.length, m.split.trainExamples);
    const key = (r: { origin: string }) => r.origin;
    const validKeys = new Set(valid.map(key));
    assert.ok(valid.length > 0 && train.every((r) => !validKeys.has(key(r))), "disjoint by record");
    const validText = new Set(valid.map((r) => exactKey(r)));
    assert.ok(train.every((r) => !validText.has(exactKey(r))), "disjoint by content");
    // weights: dialogue x2, cot x0.5, others x1
    const s = m.sources;
    assert.equal(s.dialogue.trainExamples, 2 * s.dialogue.train);
    assert.equal(s.cot.trainExamples, Math.round(0.5 * s.cot.train));
    assert.equal(s.alpaca_zh.trainExamples, s.alpaca_zh.train);
    for (const st of Object.values(s)) assert.equal(st.kept, st.train + st.valid);
    // reading counts: the original three folders give 296 usable records (lenient policy)
    const lenient = expected.original_target_dirs_summary.lenient_trailing_comma;
    assert.equal(s.alpaca_zh.usable, lenient.usable_records);
    // files: the ones that gave records; the others are counted as skipped
    assert.equal(s.alpaca_zh.files, lenient.files_contributing);
    assert.equal(s.alpaca_zh.files + s.alpaca_zh.skipped, lenient.files_globbed);
    // read: every item of those files, the ones dropped on reading included (expected.json items)
    const itemsOf = (names: string[]) =>
      expected.files.filter((f: { path: string }) => names.includes(f.path)).reduce(
        (n: number, f: { items?: number }) => n + (f.items ?? 0),
        0,
      );
    const contributing = m.files.filter((f) => f.source === "alpaca_zh" && f.records > 0).map((
      f,
    ) => f.file);
    assert.equal(s.alpaca_zh.read, itemsOf(contributing));
    assert.ok(s.alpaca_zh.read > s.alpaca_zh.usable, "dropped empty items are part of read");
    assert.equal(m.counts["repaired-trailing-comma"], 1);
    assert.equal(m.counts["bad-line"], 2);
    assert.ok(m.counts["duplicate-exact"] > 0);
    assert.ok(m.counts["repaired-literal-newline"] > 0);
    // every file that gave nothing has a warning naming it
    for (const f of m.files.filter((f) => f.records === 0)) {
      assert.ok(
        m.warnings.some((w) => w.file === f.file && w.action.startsWith("skipped")),
        f.file,
      );
    }
    for (
      const name of expected.original_target_dirs_summary.lenient_trailing_comma
        .files_contributing_nothing_must_warn
    ) {
      assert.ok(m.warnings.some((w) => w.file === `alpaca_chinese_dataset/${name}`), name);
    }
    assert.ok(m.languages.zh > m.languages.en && m.languages.en > 0);
    assert.equal(
      Object.values(m.languages).reduce((x, y) => x + y, 0),
      m.split.train + m.split.valid,
    );
    assert.ok(
      m.tokens &&
        m.tokens.histogram.reduce((n, h) => n + h.count, 0) === train.length + valid.length,
    );
    assert.ok(!JSON.stringify(m).includes(a), "no output path in the manifest");
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("build: token shards match their JSONL records", async () => {
  const out = await tempDir();
  try {
    const cfg = fixtureConfig();
    await buildDataset(cfg, { ...quiet, out });
    const tok = await loadTokenizer(TOK_DIR);
    const t = resolveConfig(cfg, "/").tokens!;
    for (const split of ["train", "valid"]) {
      const records = await readJsonl(`${out}/${split}-00000.jsonl`);
      const shard = await readTokenShard(`${out}/${split}-00000.bin`);
      assert.equal(shard.count, records.length);
      const seen = new Set<number>();
      let prev = 0;
      for (let i = 0; i < shard.count; i++) {
        const ex = shard.example(i);
        seen.add(ex.recordIndex);
        const r = records[ex.recordIndex];
        const want = tokenizeRecord(tok, { ...r, lang: "zh" }, t, createTally())!;
        assert.deepEqual([...ex.inputIds], want.inputIds);
        assert.deepEqual([...ex.labels], want.labels);
        assert.ok(ex.inputIds.length <= 200);
        assert.equal(ex.labels.slice(0, ex.seqLen - 1).every((l) => l === -100), true);
        if (i % 1024 !== 0) assert.ok(ex.inputIds.length >= prev, "bucketed by length");
        prev = ex.inputIds.length;
      }
      assert.equal(seen.size, records.length, "every record has exactly one example");
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("build: strict policy, by-file split, cap, language filter, shard size, stale shards", async () => {
  const out = await tempDir();
  try {
    const strict = await buildDataset(
      fixtureConfig({ trailingComma: "strict", tokens: null, shard: { records: 40 } }),
      { ...quiet, out },
    );
    const strictSummary = expected.original_target_dirs_summary.strict;
    assert.equal(strict.manifest.sources.alpaca_zh.usable, strictSummary.usable_records);
    // the file skipped by strict JSON is not counted in files
    assert.equal(strict.manifest.sources.alpaca_zh.files, strictSummary.files_contributing);
    assert.equal(
      strict.manifest.sources.alpaca_zh.skipped,
      strictSummary.files_globbed - strictSummary.files_contributing,
    );
    assert.ok(strict.manifest.outputs.length > 3);
    assert.ok(strict.manifest.outputs.every((o) => o.file.endsWith(".jsonl")));
    for (const o of strict.manifest.outputs) assert.ok(o.records <= 40);
    // fewer shards now: the old ones are removed
    const byFile = await buildDataset(
      fixtureConfig({
        tokens: null,
        split: { by: "file", validRatio: 0.2 },
        clean: { languages: ["zh"] },
        sources: [
          { name: "a", paths: THREE_DIRS, cap: 50 },
          { name: "b", paths: ["huatuo-llama-med-chinese/data/*.json"] },
        ],
      }),
      { ...quiet, out },
    );
    const names = [...(await filesOf(out)).keys()].sort();
    assert.deepEqual(names, ["manifest.json", "train-00000.jsonl", "valid-00000.jsonl"]);
    const m = byFile.manifest;
    assert.equal(m.sources.a.kept, 50);
    assert.ok(m.counts.capped > 0);
    assert.ok(m.counts["dropped-language"] > 0);
    assert.deepEqual(Object.keys(m.languages), ["zh"]);
    const train = await readJsonl(`${out}/train-00000.jsonl`);
    const valid = await readJsonl(`${out}/valid-00000.jsonl`);
    const fileOf = (r: { origin: string }) => r.origin.replace(/:\d+(#\d+)?$/, "");
    const validFiles = new Set(valid.map(fileOf));
    assert.ok(validFiles.size > 0);
    assert.ok(train.every((r) => !validFiles.has(fileOf(r))), "no file on both sides");
    assert.ok(valid.length >= 0.2 * (train.length + valid.length));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("build: 20k synthetic records with tokens", async () => {
  const dir = await tempDir();
  try {
    const recs = [];
    for (let i = 0; i < 20000; i++) {
      recs.push(JSON.stringify({
        instruction: `第${i}个问题：经常${["头痛", "失眠", "咳嗽", "胃痛"][i % 4]}怎么办？`,
        input: i % 5 === 0 ? `持续${i % 9}天` : "",
        output: `建议注意休息，症状持续或加重时及时就医（编号${i}）。`,
      }));
    }
    await Deno.writeTextFile(`${dir}/syn.jsonl`, recs.join("\n") + "\n");
    const res = await buildDataset({
      name: "syn",
      sources: [{ name: "syn", paths: ["syn.jsonl"] }],
      shard: { records: 7000 },
      tokens: { tokenizer: TOK_DIR },
    }, { ...quiet, baseDir: dir, out: `${dir}/out` });
    const m = res.manifest;
    assert.equal(m.counts.read, 20000);
    assert.equal(m.split.valid, 400);
    assert.equal(m.split.train, 19600);
    assert.deepEqual(m.outputs.filter((o) => o.file.endsWith(".bin")).map((o) => o.records), [
      7000,
      7000,
      5600,
      400,
    ]);
    const back = await readManifest(`${dir}/out`);
    assert.equal(back.contentHash, m.contentHash);
    const shards = await tokenShardPaths(`${dir}/out`, "train");
    assert.deepEqual(shards.map((p) => p.slice(p.lastIndexOf("/") + 1)), [
      "train-00000.bin",
      "train-00001.bin",
      "train-00002.bin",
    ]);
    let streamed = 0;
    for (const p of shards) for await (const _ of streamTokenShard(p)) streamed++;
    assert.equal(streamed, 19600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: bad fields are named; missing paths fail unless optional", async () => {
  assert.throws(
    () => validateConfig({ name: "x", sources: [] }),
    /config\.sources: expected a non-empty list/,
  );
  assert.throws(
    () => validateConfig({ name: "x", sources: [{ name: "a", paths: ["p"], weight: -1 }] }),
    /config\.sources\[0\]\.weight: expected a number >= 0/,
  );
  assert.throws(
    () => validateConfig({ name: "x", sources: [{ name: "a", paths: ["p"], wieght: 1 }] }),
    /config\.sources\[0\]\.wieght: unknown field/,
  );
  assert.throws(
    () =>
      validateConfig({
        name: "x",
        sources: [{ name: "a", paths: ["p"] }],
        split: { validRatio: 1 },
      }),
    /split\.validRatio/,
  );
  const out = await tempDir();
  try {
    await assert.rejects(
      () =>
        buildDataset({ name: "x", root: ROOT, sources: [{ name: "a", paths: ["nope.json"] }] }, {
          ...quiet,
          out,
        }),
      /source "a": source path not found: .*nope\.json/,
    );
    const res = await buildDataset({
      name: "x",
      root: ROOT,
      sources: [{
        name: "a",
        paths: ["nope.json", "huatuo-llama-med-chinese/data/infer.json"],
        optional: true,
      }],
    }, { ...quiet, out });
    assert.equal(res.manifest.counts["missing-path"], 1);
    assert.equal(res.manifest.sources.a.read, 5);
    const cfgPath = `${out}/cfg.json`;
    await Deno.writeTextFile(cfgPath, '{"name": "x", "sources": [{"name": "a", "paths": 3}]}');
    await assert.rejects(() => loadConfig(cfgPath), /cfg\.json\.sources\[0\]\.paths/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("config: the shipped configs are valid", async () => {
  for await (const e of Deno.readDir(new URL("../data/configs", import.meta.url))) {
    if (!e.name.endsWith(".json")) continue;
    const { resolved } = await loadConfig(
      new URL(`../data/configs/${e.name}`, import.meta.url).pathname,
    );
    assert.ok(resolved.sources.length > 0, e.name);
  }
});

Deno.test("demo samples: the base's 224 short Q&A pairs build cleanly", async () => {
  const path = new URL("../data/configs/demo-base.json", import.meta.url).pathname;
  const { config, resolved } = await loadConfig(path);
  const out = await tempDir();
  try {
    const res = await buildDataset(
      { ...config, tokens: { ...config.tokens!, tokenizer: TOK_DIR } },
      { ...quiet, baseDir: resolved.baseDir, out },
    );
    const m = res.manifest;
    assert.ok(m.counts.read >= 200, `${m.counts.read} records`);
    assert.equal(m.split.train + m.split.valid, m.counts.read, "no record dropped or duplicated");
    assert.equal(m.warnings.length, 0, JSON.stringify(m.warnings.slice(0, 3)));
    assert.ok((m.languages.zh ?? 0) === m.counts.read, "all Chinese");
    const samples = JSON.parse(
      await Deno.readTextFile(new URL("../data/samples/medical_qa.json", import.meta.url)),
    );
    for (const r of samples) {
      assert.deepEqual(Object.keys(r), ["instruction", "input", "output"]);
      assert.ok([...r.output].length <= 80, r.output);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

async function captureStdout(fn: () => Promise<number>): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const log = console.log, err = console.error;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return { code: await fn(), text: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = err;
  }
}

Deno.test("cli: --help, a build, --stats, bad flags", async () => {
  const dir = await tempDir();
  try {
    const help = await captureStdout(() => cli(["--help"]));
    assert.equal(help.code, 0);
    assert.match(help.text, /--stats DIR/);
    assert.match(help.text, /--download/);
    const bad = await captureStdout(() => cli(["--bogus"]));
    assert.equal(bad.code, 2);
    assert.match(bad.text, /bogus/);
    await Deno.writeTextFile(
      `${dir}/c.json`,
      JSON.stringify({
        name: "cli",
        root: ROOT,
        sources: [{ name: "m", paths: ["med-chatglm/data/*.txt"] }],
      }),
    );
    const build = await captureStdout(() => cli(["-c", `${dir}/c.json`, "-o", `${dir}/out`, "-q"]));
    assert.equal(build.code, 0, build.text);
    assert.match(build.text, /source\s+files\s+skipped\s+read\s+usable\s+kept/);
    assert.match(build.text, /records\/s/);
    const loud = await captureStdout(() =>
      cli(["-c", `${dir}/c.json`, "-o", `${dir}/out`, "--no-progress", "--warnings", "1"])
    );
    assert.equal(loud.code, 0);
    assert.match(
      loud.text,
      /warning: med-chatglm\/data\/train_with_bad_lines\.txt:3: invalid JSON/,
    );
    assert.match(loud.text, /and 1 more \[bad-line\]/);
    const stats = await captureStdout(() => cli(["--stats", `${dir}/out`]));
    assert.equal(stats.code, 0);
    assert.match(stats.text, /^dataset cli/);
    assert.match(stats.text, /bad-line\s+2/);
    const missing = await captureStdout(() => cli(["--stats", `${dir}/nothing`]));
    assert.equal(missing.code, 1);
    assert.match(missing.text, /nothing\/manifest\.json/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("download: fetch, skip when present, resume, checksum, then build", async () => {
  const body = new TextEncoder().encode(
    [1, 2, 3].map((i) => JSON.stringify({ instruction: `问题${i}`, input: "", output: `回答${i}` }))
      .join("\n") + "\n",
  );
  const sum = createHash("sha256").update(body).digest("hex");
  let requests = 0;
  const ranges: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    requests++;
    const url = new URL(req.url);
    if (url.pathname !== "/data.jsonl") return new Response("missing", { status: 404 });
    const range = req.headers.get("range");
    if (range) {
      ranges.push(range);
      const from = Number(/bytes=(\d+)-/.exec(range)![1]);
      return new Response(body.slice(from), {
        status: 206,
        headers: { "content-range": `bytes ${from}-${body.length - 1}/${body.length}` },
      });
    }
    return new Response(body);
  });
  const dir = await tempDir();
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const spec = {
      url: `${base}/data.jsonl`,
      path: "raw/data.jsonl",
      sha256: sum,
      size: body.length,
    };
    const first = await downloadSources([spec], dir);
    assert.equal(first[0].status, "downloaded");
    assert.deepEqual(await Deno.readFile(`${dir}/raw/data.jsonl`), body);
    const again = await downloadSources([spec], dir);
    assert.equal(again[0].status, "present");
    assert.equal(requests, 1);
    // an interrupted download resumes from its .part file
    await Deno.remove(`${dir}/raw/data.jsonl`);
    await Deno.writeFile(`${dir}/raw/data.jsonl.part`, body.subarray(0, 10));
    const resumed = await downloadSources([spec], dir);
    assert.equal(resumed[0].status, "resumed");
    assert.deepEqual(ranges, ["bytes=10-"]);
    assert.deepEqual(await Deno.readFile(`${dir}/raw/data.jsonl`), body);
    await assert.rejects(
      () =>
        downloadSources(
          [{ ...spec, path: "raw/x.jsonl", sha256: "0".repeat(64), size: undefined }],
          dir,
        ),
      /sha256 .* does not match/,
    );
    await assert.rejects(
      () => downloadSources([{ url: `${base}/gone`, path: "raw/gone.json" }], dir),
      /HTTP 404/,
    );
    const res = await buildDataset({
      name: "dl",
      root: "src",
      sources: [{
        name: "web",
        paths: ["web.jsonl"],
        download: [{ url: spec.url, path: "web.jsonl" }],
      }],
    }, { ...quiet, baseDir: dir, out: `${dir}/out`, download: true });
    assert.equal(res.manifest.counts.read, 3);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
