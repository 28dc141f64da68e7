// Property tests: seeded random input never throws; text the normalizer keeps round-trips.
import assert from "node:assert/strict";
import { chatglmPre, createTokenizer } from "../data/tokenizer/mod.ts";
import { mixedText } from "../bench/tokenizer.ts";

const FIX = new URL("./fixtures/chatglm-tokenizer/", import.meta.url);
const MODELS = {
  bpe: createTokenizer(Deno.readFileSync(new URL("ice_text.model", FIX)), { source: "bpe" }),
  unigram: createTokenizer(Deno.readFileSync(new URL("variants/unigram/ice_text.model", FIX)), {
    source: "unigram",
  }),
};

function prng(seed: number) {
  let s = seed >>> 0;
  return () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random strings mixing every hard case: lone surrogates, NUL, controls, long space runs, specials. */
function randomText(rnd: () => number): string {
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  const atoms: (() => string)[] = [
    () => String.fromCharCode(0xd800 + Math.floor(rnd() * 0x800)), // lone surrogate
    () => "\u0000",
    () => String.fromCharCode(Math.floor(rnd() * 0x20)),
    () => " ".repeat(1 + Math.floor(rnd() * 1200)),
    () => pick(["\n", "\t", "\r\n", "\u3000", "\u00a0", "\u200b", "\u2028", "\ufeff", "\ufffd"]),
    () =>
      pick([
        "<sop>",
        "<eop>",
        "<unk>",
        "<pad>",
        "[MASK]",
        "[gMASK]",
        "<n>",
        "<|tab|>",
        "<|blank_3|>",
        "<0xE4>",
        "▁",
      ]),
    () => String.fromCodePoint(0x4e00 + Math.floor(rnd() * 0x5200)),
    () => String.fromCodePoint(0x10000 + Math.floor(rnd() * 0xfffff)),
    () => String.fromCharCode(Math.floor(rnd() * 0x10000)),
    () => pick(["你好", "头痛怎么办？", "Hello, world!", "e\u0301", "①℃㎎", "ﬁ½…", "don't"]),
    () => String.fromCharCode(0x20 + Math.floor(rnd() * 0x5f)),
  ];
  let s = "";
  const n = Math.floor(rnd() * 40);
  for (let i = 0; i < n; i++) s += pick(atoms)();
  return s;
}

for (const [name, tok] of Object.entries(MODELS)) {
  Deno.test(`property (${name}): random Unicode never throws; ids are valid`, () => {
    const rnd = prng(name === "bpe" ? 1 : 2);
    for (let k = 0; k < 1500; k++) {
      const text = randomText(rnd);
      const ids = tok.encode(text);
      assert.deepEqual(ids.slice(-2), [tok.gmaskId, tok.sopId]);
      for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < tok.textVocabSize);
      // tokenize() segments whole strings; encode() goes through the BPE word cache: same result
      assert.deepEqual(tok.tokenize(text).map((p) => tok.pieceToId(p)), ids.slice(0, -2));
      assert.equal(typeof tok.decode(ids), "string");
      assert.equal(typeof tok.decodeSp(ids), "string");
      // any id sequence decodes (byte pieces in any order, controls, pads)
      const junk = Array.from({ length: 20 }, () => Math.floor(rnd() * tok.textVocabSize));
      assert.equal(typeof tok.decode(junk), "string");
    }
    // the benchmark's mixed zh/en records, cached and uncached paths again
    for (const r of mixedText(300_000)) {
      assert.deepEqual(
        tok.tokenize(r).map((p) => tok.pieceToId(p)),
        tok.encode(r, { special: false }),
      );
    }
    // 1000-space runs and long inputs
    const spaces = " ".repeat(1000);
    const ids = tok.encode(`a${spaces}b${spaces}`, { special: false });
    // trailing runs of >= 2 spaces are <|blank_N|> symbols, so they survive (as in ChatGLM)
    assert.equal(tok.decode(ids), `a${spaces}b${spaces}`);
    // 1000 = 12·80 + 40: a dummy-prefix ▁, twelve <|blank_80|> and one <|blank_40|>
    assert.deepEqual(tok.tokenize(spaces), [
      "\u2581",
      ...Array(12).fill("<|blank_80|>"),
      "<|blank_40|>",
    ]);
    assert.equal(tok.decode(tok.encode(spaces)), spaces);
    if (name === "bpe") {
      // nmt_nfkc maps these to spaces and remove_extra_whitespaces drops them all
      assert.deepEqual(tok.encode(" \u3000\u00a0 "), [tok.gmaskId, tok.sopId]);
    }
  });

  Deno.test(`property (${name}): decode(encode(x)) === x for text the normalizer keeps`, () => {
    const rnd = prng(name === "bpe" ? 3 : 4);
    // Characters the model's normalizer leaves as they are.
    const candidates: string[] = [];
    for (let cp = 0x21; cp < 0x7f; cp++) candidates.push(String.fromCharCode(cp));
    for (let i = 0; i < 400; i++) {
      candidates.push(String.fromCodePoint(0x4e00 + Math.floor(rnd() * 0x5200)));
    }
    candidates.push("😀", "👋", "α", "é", "。", "、", "《", "》");
    // Exclude what decode's clean-up or the marker post-processing rewrites (" .", "<n>", …).
    const keep = candidates.filter((c) =>
      !/[.?!,'<>|]/.test(c) && tok.sp.normalize(c) === "\u2581" + c
    );
    assert.ok(keep.length > 300, `only ${keep.length} characters survive normalization`);
    const seps = [" ", "  ", "\n", "\t", "     ", " ".repeat(85), "\n\n"];
    let checked = 0;
    for (let k = 0; k < 800; k++) {
      let s = "";
      const words = 1 + Math.floor(rnd() * 12);
      for (let w = 0; w < words; w++) {
        if (w > 0) s += seps[Math.floor(rnd() * seps.length)];
        const len = 1 + Math.floor(rnd() * 8);
        for (let i = 0; i < len; i++) s += keep[Math.floor(rnd() * keep.length)];
      }
      // "keeps": the whole preprocessed string normalizes to itself with ▁ for spaces
      const pre = chatglmPre(s);
      if (tok.sp.normalize(pre) !== "\u2581" + pre.replaceAll(" ", "\u2581")) continue;
      checked++;
      const ids = tok.encode(s);
      assert.equal(tok.decode(ids), s, `round trip of ${JSON.stringify(s)}`);
      assert.equal(tok.decodeSp(ids), s);
    }
    assert.ok(checked > 600, `only ${checked} generated strings were kept by the normalizer`);
  });
}
