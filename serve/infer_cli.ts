/**
 * `deno task infer`: the terminal chat (what the seed's infer.py was). Interactive by default:
 * multi-turn history in ChatGLM's chat template, streamed answers, /reset, /history, /exit,
 * Ctrl-C stops an answer (the stopped answer stays in the history), and what is typed during an
 * answer is shown at the next prompt. With `--prompt "..."` (or a question piped on stdin) it answers once and
 * prints only the answer on stdout; notices go to stderr.
 */

import type { Engine, GenerationRequest } from "./engine/types.ts";
import { EngineLoadError, loadEngine } from "./engine/load.ts";
import { FlagError, INFER_USAGE, type InferFlags, parseInferFlags } from "./infer_flags.ts";
import { printDryRun } from "./dry_run.ts";
import { runPromptIds } from "./infer_ids.ts";
import { createTerminalLines } from "./terminal_lines.ts";

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

/**
 * SIGINTs this close after one that stopped an answer are the same key press: `deno task` passes
 * the terminal's SIGINT on to its child, which got it from the terminal already, so one Ctrl-C
 * arrives twice (well under a millisecond apart); the second must not quit the chat.
 */
export const SAME_CTRL_C_MS = 400;

/**
 * Model text as the terminal should show it: control characters other than newline and tab are
 * left out (a "\r" from the model would overwrite the line, an ESC start a terminal command).
 */
export function terminalText(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\r\n/g, "\n").replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, "");
}

/** The interactive chat loop. `interrupts` fires on Ctrl-C; returns the exit code. */
export async function runChat(
  engine: Engine,
  flags: InferFlags,
  io: InferIo,
  /**
   * `handler` returns true when Ctrl-C stopped an answer (or was the same press again), false
   * when the chat should quit. `now` is the clock in ms (default performance.now).
   */
  interrupts: { onInterrupt(handler: () => boolean): void; now?: () => number },
): Promise<number> {
  const history: Turn[] = [];
  // Who answers: ChatGLM for ChatGLM-6B (and engines that do not say), the assistant otherwise.
  const arch = engine.info.architecture;
  const speaker = arch === undefined || arch === "chatglm" ? "ChatGLM" : "助手";
  // Which turns were stopped by Ctrl-C (shown so in /history).
  const stoppedTurns: boolean[] = [];
  let current: AbortController | null = null;
  let quit = false;
  const now = interrupts.now ?? (() => performance.now());
  let lastStop = -Infinity;
  interrupts.onInterrupt(() => {
    const t = now();
    if (current) {
      current.abort();
      lastStop = t;
      return true;
    }
    if (t - lastStop < SAME_CTRL_C_MS) return true;
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
      stoppedTurns.length = 0;
      io.out("(history cleared)\n");
      continue;
    }
    if (line === "/history") {
      if (history.length === 0) io.out("(no history yet)\n");
      history.forEach(([q, a], i) =>
        io.out(
          `[${i + 1}] 用户：${terminalText(q)}\n    ${speaker}：${terminalText(a)}${
            stoppedTurns[i] ? " (stopped)" : ""
          }\n`,
        )
      );
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
    const ac = current = new AbortController();
    // What was shown of the answer, kept even when it is stopped before its first token.
    let shown = "";
    try {
      const { request, dropped } = chatRequest(engine, flags, line, history, ac.signal);
      if (dropped > 0) {
        io.err(`(the ${dropped} oldest turn(s) no longer fit the context and were left out)\n`);
      }
      io.out(`\n${speaker}：`);
      const r = await answer(engine, request, (text) => {
        shown += text;
        io.out(terminalText(text));
      });
      io.out("\n");
      const stopped = r.finishReason === "abort" || ac.signal.aborted;
      if (stopped) io.out("(stopped)\n");
      else if (r.finishReason === "length") io.out("(answer cut at --max-new-tokens)\n");
      history.push([line, r.text]);
      stoppedTurns.push(stopped);
    } catch (err) {
      io.out("\n");
      if (ac.signal.aborted) {
        // Stopped while the answer was being set up: the question stays in the chat.
        io.out("(stopped)\n");
        history.push([line, shown]);
        stoppedTurns.push(true);
      } else io.err(`error: ${describeError(err)}\n`);
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

/** Whether the terminal is in cbreak mode (output then needs "\r\n" for a new line). */
let cbreak = false;

/** Back to the terminal's normal line mode (before any exit). */
function restoreTerminal(): void {
  if (!cbreak) return;
  cbreak = false;
  try {
    Deno.stdin.setRaw(false);
  } catch { /* the terminal is gone */ }
}

/**
 * Lines from the terminal, key by key (terminal_lines.ts), so that text typed during an answer
 * is kept and shown after the next prompt. Cbreak mode keeps Ctrl-C a signal.
 */
function terminalLines(echo: (text: string) => void): AsyncIterator<string> {
  const t = createTerminalLines(echo);
  Deno.stdin.setRaw(true, { cbreak: true });
  cbreak = true;
  // Ctrl-C makes the terminal discard input not yet read unless NOFLSH is set: a question typed
  // just before stopping an answer would be lost. Deno has no termios call; stty sets it on the
  // terminal it is given as stdin (best effort; setRaw(false) restores the saved settings).
  try {
    new Deno.Command("stty", { args: ["noflsh"], stdin: "inherit", stdout: "null", stderr: "null" })
      .outputSync();
  } catch { /* no stty: typed-ahead text may be lost on Ctrl-C */ }
  (async () => {
    const reader = Deno.stdin.readable.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        t.feed(value);
      }
    } catch { /* stdin closed */ }
    t.end();
  })();
  return t.lines;
}

function denoIo(): InferIo {
  const enc = new TextEncoder();
  const write = (f: typeof Deno.stdout) => (text: string) => {
    // Cbreak mode turns off the terminal's output processing: a new line needs its "\r".
    const bytes = enc.encode(cbreak ? text.replace(/\r?\n/g, "\r\n") : text);
    let off = 0;
    while (off < bytes.length) off += f.writeSync(bytes.subarray(off));
  };
  const out = write(Deno.stdout);
  const interactive = Deno.stdin.isTerminal();
  let lines: AsyncIterator<string> | null = null;
  return {
    // Created on first use: one-shot runs never change the terminal's mode.
    lines: {
      next: () => {
        lines ??= interactive && Deno.stdout.isTerminal() ? terminalLines(out) : stdinLines();
        return lines.next();
      },
    },
    out,
    err: write(Deno.stderr),
    interactive,
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
  if (flags.dryRun) {
    return await printDryRun(flags.model, { dtype: flags.dtype, quantize: flags.quantize }, io);
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
      quantize: flags.quantize,
      promptTemplate: flags.promptTemplate,
      enableThinking: flags.enableThinking,
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
          restoreTerminal();
          engine.close().finally(() => Deno.exit(0));
        });
      },
    });
    return code;
  } finally {
    restoreTerminal();
    Deno.removeSignalListener("SIGINT", onSigint);
    await engine.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
