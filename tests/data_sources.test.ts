// Source readers against every dataset fixture and the counts in expected.json.
import assert from "node:assert/strict";
import {
  decodeSource,
  expandSourcePath,
  parseDelimited,
  readSourceBytes,
  readSourceFile,
  unpackDialogue,
  utf8ErrorOffset,
} from "../data/sources/mod.ts";
import { arrayItemStarts, findJsonError, repairTrailingComma } from "../data/sources/json_text.ts";
import type { FileReadResult } from "../data/sources/types.ts";

const ROOT = new URL("./fixtures/datasets/", import.meta.url).pathname.replace(/\/$/, "");

interface ExpectedFile {
  path: string;
  expect: string;
  encoding: string;
  utf8_error_at_byte?: number;
  usable_records?: number;
  unique_usable?: number;
  lenient_records?: number;
  jsonl_bad_lines?: number;
}
interface Policy {
  files_globbed: number;
  files_contributing: number;
  files_contributing_nothing_must_warn: string[];
  usable_records: number;
}
const expected = JSON.parse(await Deno.readTextFile(`${ROOT}/expected.json`)) as {
  files: ExpectedFile[];
  original_target_dirs_summary: {
    dirs: string[];
    strict: Policy;
    lenient_trailing_comma: Policy;
  };
};

function uniqueCount(res: FileReadResult): number {
  return new Set(
    res.records.map((r) =>
      JSON.stringify([r.instruction.trim(), r.input.trim(), r.output.trim(), r.history ?? null])
    ),
  ).size;
}

function read(path: string, trailingComma: "strict" | "lenient" = "lenient") {
  return readSourceFile(`${ROOT}/${path}`, path, { source: "fx", trailingComma });
}

for (const f of expected.files) {
  Deno.test(`reader: ${f.path} (${f.expect})`, async () => {
    const e = f.expect;
    if (e.startsWith("ignored")) {
      const dir = f.path.slice(0, f.path.lastIndexOf("/"));
      const matched = await expandSourcePath(ROOT, `${dir}/*.json`);
      assert.ok(matched.length > 0);
      assert.ok(!matched.some((m) => m.rel === f.path), "a *.json glob must not match it");
      return;
    }
    const res = await read(f.path);
    const fileWarnings = res.warnings.filter((w) => w.file === f.path);
    assert.equal(fileWarnings.length, res.warnings.length, "every warning names the file");
    if (e.startsWith("read") || e.startsWith("strict-fail")) {
      assert.equal(res.kind, "records", JSON.stringify(res.warnings));
      const usable = f.lenient_records ?? f.usable_records;
      if (usable !== undefined) assert.equal(res.records.length, usable);
      if (f.unique_usable !== undefined) assert.equal(uniqueCount(res), f.unique_usable);
      for (const r of res.records) {
        assert.ok(r.instruction.trim() !== "" && r.output.trim() !== "");
        assert.match(r.origin, new RegExp(`^${escape(f.path)}:\\d+(#\\d+)?$`));
        assert.equal(r.source, "fx");
      }
      const dropped = (res.counts["dropped-empty"] ?? 0) + (res.counts["dropped-type"] ?? 0);
      const items = res.items;
      if (f.jsonl_bad_lines === undefined) {
        assert.equal(res.records.length + dropped, items, "each dropped item is counted");
      }
      const recordWarnings = res.warnings.filter((w) => w.action.startsWith("dropped"));
      assert.equal(recordWarnings.length, dropped, "one warning per dropped item");
      for (const w of recordWarnings) assert.ok(w.line! >= 1, "record warnings carry a line");
      if (res.records.length === 0) {
        assert.ok(res.warnings.some((w) => w.action === "skipped-file"), "file-level warning");
      }
      if (e.includes("GB18030")) assert.equal(res.encoding, "gb18030");
      if (e.includes("BOM")) assert.equal(res.encoding, "utf-8-bom");
    } else if (e.startsWith("skip file (warn)")) {
      assert.equal(res.kind, "unreadable");
      assert.equal(res.records.length, 0);
      const w = res.warnings.find((x) => x.action === "skipped-file");
      assert.ok(w, "a skipped-file warning");
      if (f.utf8_error_at_byte !== undefined && f.encoding !== "utf-8") {
        assert.match(w!.reason, new RegExp(`invalid UTF-8 at byte ${f.utf8_error_at_byte}\\b`));
      }
    } else if (e.startsWith("skip file (not records)")) {
      assert.equal(res.kind, "not-records");
      assert.equal(res.records.length, 0);
      assert.equal(res.warnings.length, 1);
    } else if (e.startsWith("eval only")) {
      assert.equal(res.kind, "eval");
      assert.equal(res.records.length, 0);
      assert.match(res.warnings[0].reason, /eval only/);
    } else if (e.startsWith("not a training source")) {
      assert.equal(res.kind, "not-training");
      assert.equal(res.records.length, 0);
      assert.match(res.warnings[0].reason, /not a training source/);
    } else {
      throw new Error(`unhandled expectation ${e}`);
    }
  });
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

for (const policy of ["strict", "lenient"] as const) {
  Deno.test(`reader: original target folders, ${policy} trailing-comma policy`, async () => {
    const sum = expected.original_target_dirs_summary;
    const want = policy === "strict" ? sum.strict : sum.lenient_trailing_comma;
    const base = "alpaca_chinese_dataset";
    let globbed = 0, contributing = 0, usable = 0;
    const silent: string[] = [];
    for (const dir of sum.dirs) {
      for (const m of await expandSourcePath(ROOT, `${base}/${dir}/*.json`)) {
        globbed++;
        const res = await read(m.rel, policy);
        usable += res.records.length;
        if (res.records.length > 0) contributing++;
        else {
          assert.ok(res.warnings.some((w) => w.action.startsWith("skipped")), m.rel);
          silent.push(m.rel.slice(base.length + 1));
        }
      }
    }
    assert.equal(globbed, want.files_globbed);
    assert.equal(contributing, want.files_contributing);
    assert.equal(usable, want.usable_records);
    assert.deepEqual(silent.sort(), [...want.files_contributing_nothing_must_warn].sort());
  });
}

Deno.test("reader: trailing comma is named with line and column in strict mode", async () => {
  const f = "alpaca_chinese_dataset/翻译后的中文数据/alpaca_data-80-120-中文-未完成.json";
  const strict = await read(f, "strict");
  assert.equal(strict.records.length, 0);
  assert.match(strict.warnings[0].reason, /line \d+ col \d+: trailing comma/);
  const lenient = await read(f, "lenient");
  assert.equal(lenient.counts["repaired-trailing-comma"], 1);
  assert.ok(lenient.warnings.some((w) => w.action === "repaired-trailing-comma" && w.line));
});

Deno.test("reader: JSON Lines with bad lines warns with their line numbers", async () => {
  const res = await read("med-chatglm/data/train_with_bad_lines.txt");
  assert.equal(res.records.length, 6);
  assert.deepEqual(
    res.warnings.filter((w) => w.action === "bad-line").map((w) => w.line),
    [3, 7],
  );
  assert.deepEqual(res.records.map((r) => Number(r.origin.split(":").pop())), [1, 2, 4, 6, 8, 9]);
});

Deno.test("reader: context/target framing is stripped", async () => {
  const res = await read("med-chatglm/data/train.txt");
  for (const r of res.records) {
    assert.ok(!r.instruction.startsWith("问题"), r.instruction);
    assert.ok(!/回答[:：]\s*$/.test(r.instruction), r.instruction);
    assert.equal(r.input, "");
  }
  assert.equal(res.records[0].origin, "med-chatglm/data/train.txt:1");
});

Deno.test("reader: single-line arrays give line#index origins; packed dialogues unpack", async () => {
  const res = await read("huatuo-llama-med-chinese/data-literature/liver_cancer.json");
  res.records.forEach((r, i) => assert.equal(r.origin, `${res.file}:1#${i}`));
  const multi = res.records.filter((r) => r.history);
  assert.ok(multi.length > 0, "some dialogues have earlier turns");
  for (const r of res.records) {
    assert.ok(!r.instruction.includes("<user>") && !r.instruction.includes("<bot>"));
    for (const [q, a] of r.history ?? []) {
      assert.ok(q && a && !q.includes("<bot>") && !a.includes("<user>"));
    }
  }
  const multiLine = await read("alpaca_chinese_dataset/其他中文问题补充/饮食问题.json");
  assert.ok(multiLine.records.every((r) => /:\d+$/.test(r.origin)));
  const lines = multiLine.records.map((r) => Number(r.origin.split(":")[1]));
  assert.deepEqual(lines, [...lines].sort((a, b) => a - b));
  assert.equal(lines[0], 2);
});

Deno.test("reader: GB18030 dialogue CSV with quoted commas", async () => {
  const res = await read("chinese-medical-dialogue-data/样例_内科.csv");
  assert.equal(res.records.length, 20);
  for (const r of res.records) {
    assert.match(r.instruction, /^现在你是一个.+医生，请根据患者的问题给出建议：$/);
    assert.ok(r.input.length > 0 && r.output.length > 0);
  }
  assert.ok(res.records.some((r) => r.input.includes(",") || r.output.includes(",")));
});

Deno.test("reader: a GBK .json file reads when its source says encoding gb18030", async () => {
  const f = "alpaca_chinese_dataset/其他中文问题补充/GBK编码问题.json";
  const res = await readSourceFile(`${ROOT}/${f}`, f, { source: "fx", encoding: "gb18030" });
  assert.equal(res.kind, "records");
  assert.equal(res.encoding, "gb18030");
  assert.ok(res.records.length > 0);
  assert.ok(res.records.every((r) => /[\u4e00-\u9fff]/.test(r.instruction + r.output)));
});

Deno.test("reader: COIG history pairs are kept, string history ignored", async () => {
  const coig = await read("alpaca_chinese_dataset/data/COIG-CQIA-sample.json");
  assert.equal(coig.records[0].history, undefined);
  assert.equal(coig.records[1].history?.length, 1);
  const code = await read("alpaca_chinese_dataset/其他中文问题补充/代码问题.json");
  assert.ok(code.records.every((r) => r.history === undefined));
});

Deno.test("decode: UTF-8 error offsets, BOM, GB18030 fallback", () => {
  const enc = new TextEncoder();
  assert.equal(utf8ErrorOffset(enc.encode("héllo 你好")), -1);
  const bad = new Uint8Array([0x61, 0x62, 0xe4, 0xbd]); // truncated 3-byte sequence
  assert.equal(utf8ErrorOffset(bad), 2);
  assert.equal(utf8ErrorOffset(new Uint8Array([0x41, 0xc0, 0x80])), 1, "overlong");
  assert.equal(utf8ErrorOffset(new Uint8Array([0xed, 0xa0, 0x80])), 0, "surrogate");
  const gbk = new Uint8Array([0x5b, 0x22, 0xc4, 0xe3, 0xba, 0xc3, 0x22, 0x5d]); // ["你好"]
  const strict = decodeSource(gbk, "auto", false);
  assert.equal(strict.ok, false);
  const loose = decodeSource(gbk, "auto", true);
  assert.ok(loose.ok && loose.text === '["你好"]' && loose.encoding === "gb18030");
  const bom = decodeSource(new Uint8Array([0xef, 0xbb, 0xbf, 0x5b, 0x5d]), "auto", false);
  assert.ok(bom.ok && bom.text === "[]" && bom.encoding === "utf-8-bom");
});

Deno.test("json helpers: item starts, error positions, trailing comma repair", () => {
  const text = '[\n {"a": "x,]"},\n {"b": [1, 2]}, "s\\"", 3\n]';
  const starts = arrayItemStarts(text);
  assert.deepEqual(starts.map((s) => text[s]), ["{", "{", '"', "3"]);
  assert.equal(findJsonError(text), null);
  const e = findJsonError("[1, 2,\n NaN]");
  assert.equal(e!.offset, 8);
  assert.match(findJsonError("[1, 2, ]")!.reason, /trailing comma/);
  assert.equal(findJsonError("")!.reason, "empty document");
  const fixed = repairTrailingComma('[{"a": "1,]"},\n]  ');
  assert.ok(fixed);
  assert.deepEqual(JSON.parse(fixed!.text), [{ a: "1,]" }]);
  assert.equal(repairTrailingComma('[{"a": 1,}]'), null, "only before the final ]");
  assert.equal(repairTrailingComma("[1,],[2,]"), null);
});

Deno.test("csv: quotes, doubled quotes, newlines in cells, CRLF, TSV", () => {
  const rows = parseDelimited('a,b,c\r\n1,"x, y","he said ""hi""\nthen left"\n\n2,,\n', ",");
  assert.deepEqual(rows.map((r) => r.fields), [
    ["a", "b", "c"],
    ["1", "x, y", 'he said "hi"\nthen left'],
    ["2", "", ""],
  ]);
  assert.deepEqual(rows.map((r) => r.line), [1, 2, 5]);
  assert.deepEqual(parseDelimited("q\ta\tr\n", "\t")[0].fields, ["q", "a", "r"]);
});

Deno.test("reader: headerless TSV maps through configured columns; CSV with instruction header", () => {
  const tsv = new TextEncoder().encode("问1\t答1\n问2\t答2\n");
  const res = readSourceBytes(tsv, "x.tsv", { source: "t", columns: ["instruction", "output"] });
  assert.equal(res.records.length, 2);
  assert.equal(res.records[1].origin, "x.tsv:2");
  const none = readSourceBytes(tsv, "x.tsv", { source: "t" });
  assert.equal(none.kind, "not-training");
  const csv = new TextEncoder().encode('instruction,input,output\n"问,1",,"答"\n,,空\n');
  const r2 = readSourceBytes(csv, "y.csv", { source: "t" });
  assert.equal(r2.records.length, 1);
  assert.equal(r2.records[0].instruction, "问,1");
  assert.equal(r2.warnings[0].line, 3);
});

Deno.test("unpackDialogue: alternating turns only", () => {
  assert.deepEqual(unpackDialogue(" <user>: 问一 <bot>: 答一 <user>: 问二"), {
    instruction: "问二",
    history: [["问一", "答一"]],
  });
  assert.deepEqual(unpackDialogue("<user>: 只有一问"), { instruction: "只有一问", history: [] });
  assert.equal(unpackDialogue("<user>: a <user>: b"), null);
  assert.equal(unpackDialogue("前言 <user>: a"), null);
});

Deno.test("glob: **, braces, folders, missing paths", async () => {
  const all = await expandSourcePath(ROOT, "huatuo-llama-med-chinese/**/*.{json,txt}");
  assert.deepEqual(all.map((m) => m.rel), [
    "huatuo-llama-med-chinese/benchmark/question.json",
    "huatuo-llama-med-chinese/data-literature/liver_cancer.json",
    "huatuo-llama-med-chinese/data/infer.json",
    "huatuo-llama-med-chinese/data/knowledge_tuning_data_sample.txt",
    "huatuo-llama-med-chinese/data/llama_data.json",
    "huatuo-llama-med-chinese/templates/med_template.json",
  ]);
  const folder = await expandSourcePath(ROOT, "alpaca_chinese_dataset/其他中文问题补充");
  assert.ok(!folder.some((m) => m.rel.endsWith("建议类问题")), "folders pick data extensions only");
  assert.equal(folder.length, 9);
  await assert.rejects(() => expandSourcePath(ROOT, "no/such/dir"), /source path not found/);
  assert.deepEqual(await expandSourcePath(ROOT, "no/such/*.json"), []);
});
