/**
 * Turns a growing list of token ids into append-only text deltas: the one streaming decoder every
 * front end (HTTP, page, terminal, bot) gets its text from. Decoding is done on the whole list
 * each time (byte pieces, `▁` handling and clean-up depend on neighbours), then the answer
 * post-processing runs on it; a delta is emitted only for text that later tokens cannot change:
 * the byte tokens of a character still being spelled (never shown as U+FFFD; dropped if the
 * answer ends before the character does), the last few characters (the clean-up and the
 * punctuation rules look one to four characters ahead) and a possible start of a stop string are
 * held back until they settle or the answer ends.
 */

import { pendingBytes, pendingChar, type TokenByteTable } from "./utf8_tokens.ts";

export interface TextStreamOptions {
  /** Ids → text (the tokenizer's decode). */
  decode(ids: number[]): string;
  /** Whole-answer post-processing (ChatGLM's process_response). */
  postProcess(text: string): string;
  /** Stop strings: the answer ends before the first one that appears. */
  stop?: string[];
  /**
   * Byte value of each byte-fallback token id (-1 for other ids). Without it, a trailing U+FFFD
   * in the decoded text is taken for an unfinished character.
   */
  byteOf?: Int16Array;
  /**
   * Byte-level vocabularies (tokens are byte strings, a character may span several of them and a
   * token may end inside one): the table of every id's bytes. Takes precedence over `byteOf`.
   */
  seqs?: TokenByteTable;
}

export interface TextStream {
  /** Adds one generated id; returns the new settled text and whether a stop string was hit. */
  push(id: number): { delta: string; stopped: boolean };
  /** Ends the answer; returns the text still held back. */
  finish(): string;
  /** Everything emitted so far. */
  readonly text: string;
  readonly ids: readonly number[];
}

const LOOKAHEAD = 4;

export function createTextStream(opts: TextStreamOptions): TextStream {
  const ids: number[] = [];
  const stops = (opts.stop ?? []).filter((s) => s.length > 0);
  let emitted = "";
  let done = false;

  function current(): { text: string; stopAt: number } {
    let raw: string;
    if (opts.seqs) {
      // The unfinished character's bytes decode (with replacement, at the end of the input) to
      // exactly one U+FFFD: that one is held while the answer goes on and dropped at its end.
      raw = opts.decode(ids);
      if (pendingBytes(ids, opts.seqs) && raw.endsWith("\uFFFD")) raw = raw.slice(0, -1);
    } else if (opts.byteOf) {
      // Bytes that may still become a character are left out: held while the answer goes on,
      // dropped when it ends (a cut at max_tokens never shows a broken character).
      const held = pendingChar(ids, opts.byteOf)?.count ?? 0;
      raw = opts.decode(held ? ids.slice(0, ids.length - held) : ids);
    } else {
      // Without the byte table, a trailing U+FFFD is taken for a character whose bytes have not
      // all arrived yet; at the end it is dropped likewise.
      raw = opts.decode(ids).replace(/\uFFFD+$/, "");
    }
    const text = opts.postProcess(raw);
    let stopAt = -1;
    for (const s of stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (stopAt < 0 || at < stopAt)) stopAt = at;
    }
    return { text, stopAt };
  }

  function settledLength(text: string): number {
    let end = text.length;
    // Keep the last few code points back.
    for (let k = 0; k < LOOKAHEAD && end > 0; k++) {
      end -= isLowSurrogate(text.charCodeAt(end - 1)) && end >= 2 ? 2 : 1;
    }
    // A possible beginning of a stop string stays back until it is decided.
    for (const s of stops) {
      for (let n = Math.min(s.length - 1, text.length); n > 0; n--) {
        if (text.endsWith(s.slice(0, n))) {
          end = Math.min(end, text.length - n);
          break;
        }
      }
    }
    // `[[训练时间]]` is replaced only once complete.
    const open = text.lastIndexOf("[[");
    if (open >= 0 && text.indexOf("]]", open) < 0) end = Math.min(end, open);
    return Math.max(end, 0);
  }

  function emitUpTo(text: string): string {
    if (!text.startsWith(emitted)) {
      // Cannot happen with the hold-back above; never re-emit or drop text silently.
      throw new Error(
        `text stream invariant broken: emitted ${JSON.stringify(emitted)} is not a prefix of ${
          JSON.stringify(text)
        }`,
      );
    }
    const delta = text.slice(emitted.length);
    emitted = text;
    return delta;
  }

  return {
    get text() {
      return emitted;
    },
    ids,
    push(id) {
      if (done) throw new Error("text stream already finished");
      ids.push(id);
      const { text, stopAt } = current();
      if (stopAt >= 0) {
        done = true;
        return { delta: emitUpTo(text.slice(0, stopAt)), stopped: true };
      }
      const end = settledLength(text);
      if (end <= emitted.length) return { delta: "", stopped: false };
      return { delta: emitUpTo(text.slice(0, end)), stopped: false };
    },
    finish() {
      if (done) return "";
      done = true;
      return emitUpTo(current().text);
    },
  };
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}
