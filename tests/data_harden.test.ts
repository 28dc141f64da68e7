// The data builder's hardening (issue 19): literal \n repair next to real newlines, per-source
// languages, what the summary columns count, -q, streamed reading of large JSON files, and the
// trainer's message for prompts at the length limit. Inputs are built here, small.
import assert from "node:assert/strict";
import { repairText } from "../data/clean/text.ts";
import { buildDataset, type DatasetConfig } from "../data/build/mod.ts";
import { readSourceFile, type RecordSink } from "../data/sources/read_file.ts";
import type { BuildWarning, SourceRecord } from "../data/sources/types.ts";
import { main as cli } from "../data/cli.ts";
import { droppedMessage, loadExamples } from "../train/loop/examples.ts";

const TOK_DIR = new URL("./fixtures/chatglm-tokenizer", import.meta.url).pathname;
const quiet = { progress: false } as const;

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "medglm-data-harden-" });
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(value, null, 2));
}

const zh = (i: number) => ({
  instruction: `第${i}个问题：头痛怎么办？`,
  input: "",
  output: `注意休息（${i}）。`,
});
const en = (i: number) => ({
  instruction: `Question ${i}: how to sleep well?`,
  input: "",
  output: `Keep a routine (${i}).`,
});

Deno.test("literal \\n: repaired also in fields with real newlines; code, quotes and paths kept", () => {
  // Alpaca-CoT: a field with a real newline and literal ones (was left alone before)
  assert.equal(
    repairText("Step 1\nStep 2\\nStep 3\\nDone", true).text,
    "Step 1\nStep 2\nStep 3\nDone",
  );
  assert.equal(repairText("a\\nb\nc", true).literalNewlines, true);
  // meant backslashes stay
  assert.equal(
    repairText('Use:\n```c\nprintf("hi\\n");\n```\nthen\\nrun', true).text,
    'Use:\n```c\nprintf("hi\\n");\n```\nthen\nrun',
    "fenced code kept, prose repaired",
  );
  assert.equal(
    repairText("call `split('\\n')`\nnext\\nline", true).text,
    "call `split('\\n')`\nnext\nline",
  );
  assert.equal(
    repairText('x = "a\\nb"\nok\\nyes', true).text,
    'x = "a\\nb"\nok\nyes',
    "string literal",
  );
  assert.equal(
    repairText("open C:\\new\\notes.txt\nthen\\nclose", true).text,
    "open C:\\new\\notes.txt\nthen\nclose",
    "Windows path kept",
  );
  assert.equal(
    repairText("\\newline\\noindent text", true).text,
    "\\newline\\noindent text",
    "TeX",
  );
  assert.equal(repairText("a \\\\n b", true).text, "a \\\\n b", "escaped backslash");
  assert.equal(repairText("a\\nb\nc", false).text, "a\\nb\nc", "off when disabled");
});

Deno.test("build: read counts dropped empty items, files leave out skipped ones, languages add up", async () => {
  const dir = await tempDir();
  try {
    // 4 items: one with an empty output (dropped on reading), one duplicate of another
    await writeJson(`${dir}/a.json`, [zh(1), { ...zh(2), output: "" }, zh(3), zh(1)]);
    // a trailing comma: repaired by default, skipped under strict
    await Deno.writeTextFile(`${dir}/b.json`, JSON.stringify([zh(4), en(5)]).replace(/]$/, ",]"));
    await Deno.writeTextFile(`${dir}/empty.json`, "");
    const config = (strict: boolean): DatasetConfig => ({
      name: "cols",
      sources: [{ name: "s", paths: ["*.json"] }],
      trailingComma: strict ? "strict" : "lenient",
      split: { validRatio: 0 },
    });
    // a scratch file left by a killed build is removed; the build leaves none of its own
    await Deno.mkdir(`${dir}/o1`);
    await Deno.writeTextFile(`${dir}/o1/.records-abc123.tmp`, "stale");
    const lenient =
      (await buildDataset(config(false), { ...quiet, baseDir: dir, out: `${dir}/o1` }))
        .manifest;
    const left = [];
    for await (const e of Deno.readDir(`${dir}/o1`)) left.push(e.name);
    assert.deepEqual(left.sort(), ["manifest.json", "train-00000.jsonl"]);
    const s = lenient.sources.s;
    assert.equal(s.read, 6, "4 + 2 items, the empty one included");
    assert.equal(s.usable, 5);
    assert.equal(s.files, 2);
    assert.equal(s.skipped, 1, "the empty file");
    assert.equal(s.kept, 4);
    const strict = (await buildDataset(config(true), { ...quiet, baseDir: dir, out: `${dir}/o2` }))
      .manifest;
    assert.equal(strict.sources.s.files, 1, "the file skipped by strict JSON is not counted");
    assert.equal(strict.sources.s.skipped, 2);
    assert.equal(strict.sources.s.read, 4);
    // language counts before and after de-duplication agree
    for (const m of [lenient, strict]) {
      assert.ok(!Object.keys(m.counts).some((k) => k.startsWith("lang-")));
      let kept = 0;
      for (const [lang, f] of Object.entries(m.languageFlow)) {
        assert.equal(f.cleaned - f.filtered - f.duplicate - f.capped - f.tooLong, f.kept, lang);
        assert.equal(f.kept, m.languages[lang] ?? 0, lang);
        kept += f.kept;
      }
      assert.equal(kept, m.split.train + m.split.valid);
    }
    assert.equal(lenient.languageFlow.zh.duplicate, 1);
    assert.deepEqual(lenient.sources.s.languages, { en: 1, zh: 3 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("build: languages per source; the global filter keeps an English source the user listed", async () => {
  const dir = await tempDir();
  try {
    // a "Chinese" source with 2 untranslated English records, and an English source
    await writeJson(`${dir}/zh.json`, [zh(1), zh(2), zh(3), zh(4), en(5), en(6)]);
    await writeJson(`${dir}/en.json`, [en(7), en(8), en(9)]);
    const base = {
      name: "langs",
      sources: [{ name: "translated", paths: ["zh.json"] }, {
        name: "english",
        paths: ["en.json"],
      }],
      split: { validRatio: 0 },
    };
    // no filter: the mix is reported, nothing dropped
    const plain = (await buildDataset(base, { ...quiet, baseDir: dir, out: `${dir}/o1` })).manifest;
    const mix = plain.warnings.filter((w) => w.action === "language-mix");
    assert.equal(mix.length, 1);
    assert.match(mix[0].reason, /source "translated": 2 of 6 records \(33\.3%\) are en, not zh/);
    assert.equal(plain.counts["language-mix"], 2);
    assert.deepEqual(plain.sources.translated.languages, { en: 2, zh: 4 });
    assert.deepEqual(plain.sources.english.languages, { en: 3 });
    // global filter zh: the English records inside the Chinese source go, the English source stays
    const global = (await buildDataset({ ...base, clean: { languages: ["zh"] } }, {
      ...quiet,
      baseDir: dir,
      out: `${dir}/o2`,
    })).manifest;
    assert.equal(global.sources.translated.kept, 4);
    assert.equal(global.sources.english.kept, 3, "a whole English source is not removed");
    assert.ok(
      global.warnings.some((w) =>
        w.action === "language-filter-not-applied" && /source "english" is mostly en/.test(w.reason)
      ),
    );
    assert.equal(global.counts["dropped-language"], 2);
    // a source's own filter
    const own = (await buildDataset({
      ...base,
      sources: [
        { name: "translated", paths: ["zh.json"], languages: ["zh"] },
        { name: "english", paths: ["en.json"], languages: ["zh"] },
      ],
    }, { ...quiet, baseDir: dir, out: `${dir}/o3` })).manifest;
    assert.equal(own.sources.translated.kept, 4);
    assert.equal(own.sources.english.kept, 0, "asked for explicitly");
    assert.equal(own.languageFlow.en.filtered, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function capture(fn: () => Promise<number>): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return { code: await fn(), text: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("cli -q: no records does not point at hidden warnings", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/bad.json`, "[{");
    await writeJson(`${dir}/c.json`, {
      name: "none",
      sources: [{ name: "s", paths: ["bad.json"] }],
    });
    const q = await capture(() => cli(["-c", `${dir}/c.json`, "-o", `${dir}/out`, "-q"]));
    assert.equal(q.code, 1);
    assert.ok(!q.text.includes("see the warnings above"), q.text);
    assert.match(q.text, /warning\(s\) hidden by --quiet are listed in .*manifest\.json/);
    assert.match(q.text, /bad\.json: invalid JSON/);
    const loud = await capture(() =>
      cli(["-c", `${dir}/c.json`, "-o", `${dir}/out`, "--no-progress"])
    );
    assert.equal(loud.code, 1);
    assert.match(loud.text, /warning: bad\.json/);
    assert.match(loud.text, /see the warnings above/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function collect(
  path: string,
  file: string,
  stream: { streamAbove?: number; wholeFileMax?: number; onBytes?: (n: number) => void },
  options: { trailingComma?: "strict" | "lenient" } = {},
) {
  const records: SourceRecord[] = [];
  const warnings: BuildWarning[] = [];
  const sink: RecordSink = { record: (r) => records.push(r), warning: (w) => warnings.push(w) };
  const res = await readSourceFile(path, file, { source: "s", ...options }, sink, stream);
  return { res, records, warnings: [...warnings, ...res.warnings] };
}

Deno.test("streamed reading: items across chunk boundaries, origins and drops equal the whole-file read", async () => {
  const dir = await tempDir();
  try {
    // ~9 MB: items cross the reader's 4 MiB chunks; a shared line, an empty output, a BOM
    const items: unknown[] = [];
    for (let i = 0; i < 30000; i++) {
      items.push({
        instruction: `问题${i} ${"长".repeat(i % 97)}`,
        input: "",
        output: i === 77 ? " " : `答${i}\\n好`,
      });
    }
    const text = "\ufeff[\n" +
      items.map((
        x,
        i,
      ) => (i % 1000 === 5 ? JSON.stringify(x) + ", " : JSON.stringify(x, null, 1) + ",\n")).join(
        "",
      ) + "]\n";
    await Deno.writeTextFile(`${dir}/big.json`, text.replace(/,\s*]\n$/, ",\n]\n"));
    const whole = await collect(`${dir}/big.json`, "big.json", { streamAbove: Infinity });
    // wholeFileMax 0: no fallback to the whole-file read, whatever happens
    let progress = 0;
    const streamed = await collect(`${dir}/big.json`, "big.json", {
      streamAbove: 0,
      wholeFileMax: 0,
      onBytes: (n) => (progress += n),
    });
    assert.equal(progress, (await Deno.stat(`${dir}/big.json`)).size, "progress while streaming");
    assert.equal(streamed.records.length, 29999);
    assert.deepEqual(streamed.records, whole.records);
    assert.deepEqual(
      streamed.warnings.map((w) => [w.action, w.line, w.reason]).sort(),
      whole.warnings.map((w) => [w.action, w.line, w.reason]).sort(),
      "same drops and the same trailing-comma repair, same lines and columns",
    );
    assert.equal(streamed.res.encoding, "utf-8-bom");
    assert.ok(streamed.records.some((r) => r.origin.includes("#")), "shared lines get #INDEX");

    // JSON Lines with a broken line
    const lines = items.slice(0, 2000).map((x) => JSON.stringify(x));
    lines[10] = '{"instruction": "broken';
    await Deno.writeTextFile(`${dir}/l.jsonl`, lines.join("\n") + "\n");
    const wl = await collect(`${dir}/l.jsonl`, "l.jsonl", { streamAbove: Infinity });
    const sl = await collect(`${dir}/l.jsonl`, "l.jsonl", { streamAbove: 0, wholeFileMax: 0 });
    assert.deepEqual(sl.records, wl.records);
    assert.deepEqual(sl.res.counts, wl.res.counts);
    assert.deepEqual(sl.warnings, wl.warnings, "the same bad-line reason");

    // a broken large file: nothing is emitted, the error names line and byte
    await Deno.writeTextFile(`${dir}/broken.json`, text.slice(0, 5_000_000) + "}}]");
    const broken = await collect(`${dir}/broken.json`, "broken.json", {
      streamAbove: 0,
      wholeFileMax: 0,
    });
    assert.equal(broken.records.length, 0);
    assert.equal(broken.res.kind, "unreadable");
    assert.match(broken.warnings[0].reason, /invalid json at line \d+ .*\(byte \d+\)/);
    // strict JSON skips a streamed file with a trailing comma
    const strict = await collect(
      `${dir}/big.json`,
      "big.json",
      { streamAbove: 0, wholeFileMax: 0 },
      {
        trailingComma: "strict",
      },
    );
    assert.equal(strict.records.length, 0);
    assert.match(strict.warnings[0].reason, /trailing comma/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainer: a prompt exactly at maxLength is dropped and the message does not say 'exceeds'", async () => {
  const dir = await tempDir();
  try {
    await writeJson(`${dir}/a.json`, [zh(1), zh(2), zh(3)]);
    const res = await buildDataset({
      name: "len",
      sources: [{ name: "s", paths: ["a.json"] }],
      split: { validRatio: 0 },
      tokens: { tokenizer: TOK_DIR },
    }, { ...quiet, baseDir: dir, out: `${dir}/out` });
    const { readTokenShard } = await import("../data/build/token_shard.ts");
    const shard = await readTokenShard(`${dir}/out/train-00000.bin`);
    const seqLen = Math.min(...[...shard].map((e) => e.seqLen));
    const loaded = await loadExamples(res.outDir, "train", seqLen);
    assert.ok(loaded.dropped >= 1, "a prompt of exactly maxLength leaves no answer token");
    const msg = droppedMessage(loaded.dropped, seqLen);
    assert.ok(!msg.includes("exceeds"), msg);
    assert.match(msg, new RegExp(`takes ${seqLen} tokens or more`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dedup hash table: 64-bit keys, growth, the zero key", async () => {
  const { HashTable64 } = await import("../data/clean/hash_table.ts");
  const t = new HashTable64();
  for (let i = 0; i < 50_000; i++) t.set(i * 2654435761, i ^ 0x5bd1e995, i);
  assert.equal(t.size, 50_000);
  for (let i = 0; i < 50_000; i += 997) assert.equal(t.get(i * 2654435761, i ^ 0x5bd1e995), i);
  assert.equal(t.get(12345, 67890), -1);
  t.set(0, 0, 7);
  assert.equal(t.get(0, 0), 7);
  t.set(0, 0, 8);
  assert.equal(t.get(0, 0), 8, "replaced, not added");
  assert.equal(t.size, 50_001);
});
