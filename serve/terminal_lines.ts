/**
 * Lines typed at the terminal chat's prompt, read key by key (the terminal in cbreak mode: no
 * kernel line editing or echo, Ctrl-C still a signal) so that text typed while an answer streams
 * is kept and shown: keys pressed during an answer are collected silently (echoing them would mix
 * them into the answer) and appear after the next prompt, where editing continues; a line ended
 * with Enter during an answer is shown after its prompt and used as the next question.
 *
 * Editing: printable text (typed, pasted or from an input method), Backspace, Ctrl-U (clear the
 * line), Enter; Ctrl-D on an empty line ends the input; escape sequences (arrow keys) are ignored.
 */

export interface TerminalLines {
  /** The lines, one per `next()`; a pending `next()` is what makes keys echo (the prompt is up). */
  lines: AsyncIterator<string>;
  /** Bytes read from the terminal. */
  feed(bytes: Uint8Array): void;
  /** The terminal closed: the last unfinished line is given, then the end. */
  end(): void;
}

/** Columns a code point takes in a terminal (East Asian wide and fullwidth forms take two). */
export function charWidth(cp: number): number {
  if (cp < 0x1100) return 1;
  const wide = (cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf && cp !== 0x303f) ||
    (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1faff) ||
    (cp >= 0x20000 && cp <= 0x3fffd);
  return wide ? 2 : 1;
}

export function createTerminalLines(echo: (text: string) => void): TerminalLines {
  const decoder = new TextDecoder();
  const ready: string[] = []; // lines ended while no prompt was up
  let current: string[] = []; // code points of the line being typed
  let ended = false;
  let waiting: ((r: IteratorResult<string>) => void) | null = null;
  // 0: normal, 1: after ESC, 2: inside a CSI/SS3 sequence (until its final byte)
  let escape = 0;

  const finishLine = () => {
    const line = current.join("");
    current = [];
    if (waiting) {
      const w = waiting;
      waiting = null;
      echo("\n");
      w({ value: line, done: false });
    } else ready.push(line);
  };
  const finishInput = () => {
    ended = true;
    if (waiting) {
      const w = waiting;
      waiting = null;
      w({ value: undefined, done: true });
    }
  };

  const key = (ch: string) => {
    const cp = ch.codePointAt(0)!;
    if (escape === 1) {
      escape = ch === "[" || ch === "O" ? 2 : 0;
      return;
    }
    if (escape === 2) {
      if (cp >= 0x40 && cp <= 0x7e) escape = 0;
      return;
    }
    if (ch === "\x1b") escape = 1;
    else if (ch === "\r" || ch === "\n") finishLine();
    else if (ch === "\x7f" || ch === "\b") {
      const last = current.pop();
      if (last !== undefined && waiting) {
        const w = charWidth(last.codePointAt(0)!);
        echo("\b".repeat(w) + " ".repeat(w) + "\b".repeat(w));
      }
    } else if (ch === "\x15") {
      if (waiting) {
        const w = current.reduce((n, c) => n + charWidth(c.codePointAt(0)!), 0);
        echo("\b".repeat(w) + " ".repeat(w) + "\b".repeat(w));
      }
      current = [];
    } else if (ch === "\x04") {
      if (current.length === 0 && ready.length === 0) finishInput();
    } else if (cp >= 0x20 && cp !== 0x7f && !(cp >= 0x80 && cp < 0xa0)) {
      current.push(ch);
      if (waiting) echo(ch);
    }
  };

  return {
    feed(bytes) {
      if (ended) return;
      for (const ch of decoder.decode(bytes, { stream: true })) {
        key(ch);
        if (ended) return;
      }
    },
    end() {
      if (ended) return;
      if (current.length > 0) finishLine();
      finishInput();
    },
    lines: {
      next(): Promise<IteratorResult<string>> {
        if (ready.length > 0) {
          // Ended during the answer: show it after the prompt, as if typed now.
          const line = ready.shift()!;
          echo(line + "\n");
          return Promise.resolve({ value: line, done: false });
        }
        if (ended) return Promise.resolve({ value: undefined, done: true });
        // What was typed during the answer appears after the prompt; editing goes on from there.
        if (current.length > 0) echo(current.join(""));
        return new Promise((resolve) => waiting = resolve);
      },
    },
  };
}
