/**
 * `deno task infer`: the terminal chat (what the seed's infer.py was). Interactive by default:
 * multi-turn history in ChatGLM's chat template, streamed answers, /reset, /history, /exit,
 * Ctrl-C stops an answer. With `--prompt "..."` (or a question piped on stdin) it answers once and
 * prints only the answer on stdout; notices go to stderr.
 */

import type { Engine, GenerationRequest } from "./engine/types.ts";
import { EngineLoadError, loadEngine } from "./engine/load.ts";
import { FlagError, INFER_USAGE, type InferFlags, parseInferFlags } from "./infer_flags.ts";
import { runPromptIds } from "./infer_ids.ts";

export const DISCLAIMER =
  "注意：回答由语言模型生成，仅供参考，不能代替医生的诊断和治疗；身体不适请及时就医。" +
  " (Answers come from a language model: for reference only, not medical advice.)";

const DEMO_NOTICE = "Using the built-in demo model (models/demo): a small model for trying the " +
  "program out; its answers are not meaningful. Pass --model DIR for a real checkpoint.";

const HELP_LINE = "Commands: /reset clears the history, /history shows it, /exit quits.";

type Turn = [string, string];

export interface InferIo {
  /** Lines typed (interactive) — ends at end of input. */
  lines: AsyncIterator<string>;
  out(text: string): void;
  err(text: string): void;
  /** Whether stdin is a terminal. */
  interactive: boolean;
  /** Reads all of stdin (one-shot with a pipe). */
  readAll(): Promise<string>;
}

/** The request for `query` after `history`, dropping the oldest turns that do not fit. */
export function chatRequest(
  engine: Engine,
  flags: InferFlags,
  query: string,
  history: Turn[],
  signal?: AbortSignal,
): { request: GenerationRequest; dropped: number } {
  let turns = flags.historyTurns > 0 ? history.slice(-flags.historyTurns) : history.slice();
  let dropped = history.length - turns.length;
  const messages = (t: Turn[]) => [
    ...t.flatMap(([q, a]) => [
      { role: "user" as const, content: q },
      { role: "assistant" as const, content: a },
    ]),
    { role: "user" as const, content: query },
  ];
  // Leave room for an answer: the newest turns matter most, older ones go first.
  const maxNew = flags.maxNewTokens ?? engine.info.defaults?.maxNewTokens ??
    engine.info.maxContext;
  const room = Math.min(maxNew, Math.floor(engine.info.maxContext / 4));
  while (
    turns.length > 0 && engine.countPromptTokens(messages(turns)) > engine.info.maxContext - room
  ) {
    turns = turns.slice(1);
    dropped++;
  }
  return {
    request: {
      messages: messages(turns),
      maxNewTokens: flags.maxNewTokens,
      temperature: flags.temperature,
      topP: flags.topP,
      topK: flags.topK,
      repetitionPenalty: flags.repetitionPenalty,
      seed: flags.seed,
      signal,
    },
    dropped,
  };
}

/** Streams one answer through `write`; returns the answer and how it ended. */
async function answer(
  engine: Engine,
  request: GenerationRequest,
  write: (text: string) => void,
): Promise<{ text: string; finishReason?: string }> {
  let text = "";
  let finishReason: string | undefined;
  for await (const d of engine.generate(request)) {
    if (d.text) {
      text += d.text;
      write(d.text);
    }
    if (d.finishReason) finishReason = d.finishReason;
  }
  return { text, finishReason };
}

function describeError(err: unknown): string {
  if (err instanceof Error) {
    return err.name === "PromptTooLongError"
      ? `${err.message}: ask a shorter question (or /reset the history)`
      : err.message;
  }
  return String(err);
}

/** One-shot: the answer alone on stdout. Returns the exit code. */
export async function runOneShot(
  engine: Engine,
  flags: InferFlags,
  question: string,
  io: InferIo,
  signal?: AbortSignal,
): Promise<number> {
  if (question.trim() === "") {
    io.err("error: the question is empty (give --prompt TEXT or pipe text on stdin)\n");
    return 2;
  }
  try {
    const { request } = chatRequest(engine, flags, question, [], signal);
    await answer(engine, request, io.out);
    io.out("\n");
    return signal?.aborted ? 130 : 0;
  } catch (err) {
    io.err(`error: ${describeError(err)}\n`);
    return 1;
  }
}

/** The interactive chat loop. `interrupts` fires on Ctrl-C; returns the exit code. */
export async function runChat(
  engine: Engine,
  flags: InferFlags,
  io: InferIo,
  /** `handler` returns true when Ctrl-C stopped an answer, false when the chat should quit. */
  interrupts: { onInterrupt(handler: () => boolean): void },
): Promise<number> {
  const history: Turn[] = [];
  let current: AbortController | null = null;
  let quit = false;
  interrupts.onInterrupt(() => {
    if (current) {
      current.abort();
      return true;
    }
    quit = true;
    return false;
  });
  io.out(`${HELP_LINE}\n`);
  while (!quit) {
    io.out("\n用户：");
    const next = await io.lines.next();
    if (next.done || quit) {
      io.out("\n");
      break;
    }
    const line = next.value.trim();
    if (line === "") continue;
    if (line === "/exit" || line === "/quit") break;
    if (line === "/reset") {
      history.length = 0;
      io.out("(history cleared)\n");
      continue;
    }
    if (line === "/history") {
      if (history.length === 0) io.out("(no history yet)\n");
      history.forEach(([q, a], i) => io.out(`[${i + 1}] 用户：${q}\n    ChatGLM：${a}\n`));
      continue;
    }
    if (line === "/help") {
      io.out(`${HELP_LINE}\n`);
      continue;
    }
    if (line.startsWith("/")) {
      io.out(`unknown command ${line.split(/\s/)[0]}. ${HELP_LINE}\n`);
      continue;
    }
    current = new AbortController();
    try {
      const { request, dropped } = chatRequest(engine, flags, line, history, current.signal);
      if (dropped > 0) {
        io.err(`(the ${dropped} oldest turn(s) no longer fit the context and were left out)\n`);
      }
      io.out("\nChatGLM：");
      const r = await answer(engine, request, io.out);
      io.out("\n");
      if (r.finishReason === "abort") io.out("(stopped)\n");
      else if (r.finishReason === "length") io.out("(answer cut at --max-new-tokens)\n");
      history.push([line, r.text]);
    } catch (err) {
      io.out("\n");
      io.err(`error: ${describeError(err)}\n`);
    } finally {
      current = null;
    }
  }
  return 0;
}

async function* stdinLines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  const reader = Deno.stdin.readable.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        yield buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
      }
    }
    buf += decoder.decode();
    if (buf !== "") yield buf;
  } finally {
    reader.releaseLock();
  }
}

function denoIo(): InferIo {
  const enc = new TextEncoder();
  const write = (f: typeof Deno.stdout) => (text: string) => {
    const bytes = enc.encode(text);
    let off = 0;
    while (off < bytes.length) off += f.writeSync(bytes.subarray(off));
  };
  return {
    lines: stdinLines(),
    out: write(Deno.stdout),
    err: write(Deno.stderr),
    interactive: Deno.stdin.isTerminal(),
    readAll: async () => await new Response(Deno.stdin.readable).text(),
  };
}

export async function main(args: string[]): Promise<number> {
  const io = denoIo();
  let flags: InferFlags;
  try {
    flags = parseInferFlags(args);
  } catch (err) {
    if (err instanceof FlagError) {
      io.err(`error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (flags.help) {
    io.out(INFER_USAGE);
    return 0;
  }
  if (flags.promptIds) return await runPromptIds(flags, flags.promptIds, io);
  const oneShot = flags.prompt !== undefined || !io.interactive;
  // In one-shot mode stdout carries only the answer.
  const notice = oneShot ? io.err : io.out;
  notice(`${DISCLAIMER}\n`);
  let engine: Engine;
  try {
    engine = await loadEngine({
      model: flags.model,
      adapter: flags.adapter,
      merged: flags.merged,
      backend: flags.backend,
      dtype: flags.dtype,
      promptTemplate: flags.promptTemplate,
      maxBatch: 1,
      log: (line) => io.err(`${line}\n`),
    });
  } catch (err) {
    io.err(`error: ${err instanceof EngineLoadError ? err.message : describeError(err)}\n`);
    return 1;
  }
  if (engine.info.demo) notice(`${DEMO_NOTICE}\n`);
  if (engine.info.backendReason) {
    io.err(`backend: ${engine.info.backend} (${engine.info.backendReason})\n`);
  }

  const handlers: (() => void)[] = [];
  const onSigint = () => handlers.forEach((h) => h());
  Deno.addSignalListener("SIGINT", onSigint);
  try {
    if (oneShot) {
      // A piped question usually ends with a newline that is not part of it.
      const question = flags.prompt ?? (await io.readAll()).replace(/\s+$/, "");
      const ac = new AbortController();
      handlers.push(() => ac.abort());
      return await runOneShot(engine, flags, question, io, ac.signal);
    }
    // Ctrl-C at the prompt: the pending stdin read cannot be cancelled, so quit from here.
    const code = await runChat(engine, flags, io, {
      onInterrupt(handler) {
        handlers.push(() => {
          if (handler()) return;
          io.out("\n");
          engine.close().finally(() => Deno.exit(0));
        });
      },
    });
    return code;
  } finally {
    Deno.removeSignalListener("SIGINT", onSigint);
    await engine.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
