/**
 * Ctrl-C during training: the first SIGINT asks the trainer to save a checkpoint at the next
 * step boundary and exit; a second one exits at once (the last complete checkpoint is intact,
 * since saves are atomic).
 */

export interface InterruptWatch {
  /** Set once Ctrl-C was pressed. */
  readonly requested: boolean;
  /** Removes the signal listener. */
  dispose(): void;
}

export function watchInterrupt(
  options: { onFirst?: () => void; onSecond?: () => void } = {},
): InterruptWatch {
  let count = 0;
  const handler = () => {
    count++;
    if (count === 1) {
      (options.onFirst ??
        (() =>
          console.error(
            "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit now)",
          )))();
    } else {
      (options.onSecond ?? (() => Deno.exit(130)))();
    }
  };
  let installed = true;
  try {
    Deno.addSignalListener("SIGINT", handler);
  } catch {
    installed = false; // signals unsupported here (e.g. some Windows set-ups)
  }
  return {
    get requested() {
      return count > 0;
    },
    dispose() {
      if (installed) Deno.removeSignalListener("SIGINT", handler);
      installed = false;
    },
  };
}
