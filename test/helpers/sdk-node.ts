/**
 * What unmodified matrix-js-sdk needs to run in Node 20, as a side-effect import: test files that
 * drive the SDK import this module before using it. It also holds the logger those tests give
 * the SDK.
 */

import type { Logger } from 'matrix-js-sdk/lib/logger.js';

// matrix-js-sdk declares Node >= 22 and calls Promise.withResolvers (ES2024, in Node 22, not in
// Node 20). Supplying that standard method is all it needs to run here; the SDK itself is as
// published.
if (!('withResolvers' in Promise)) {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value<T>() {
      let resolve!: (value: T | PromiseLike<T>) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

// The SDK arms long timers that nothing clears when their purpose is served: every request with a
// local timeout (each /sync: the poll timeout + 80 s; each request of the Rust crypto layer: 60 s;
// timeoutSignal in src/http-api/utils.ts), and a 5-minute one for each encrypted event from sync
// (RustCrypto.onLiveEventFromSync). In a browser that is harmless; in Node those timers would keep
// the process alive for minutes after the clients stopped. Unref the SDK's timers of a minute or
// more: they still fire while the process lives, but do not hold it.
const marker = Symbol.for('conclave.test.sdkTimersUnref');
const global = globalThis as typeof globalThis & { [marker]?: true };
if (!global[marker]) {
  global[marker] = true;
  const setTimeoutAsIs = globalThis.setTimeout;
  globalThis.setTimeout = Object.assign((...args: Parameters<typeof setTimeout>) => {
    const timer = setTimeoutAsIs(...args);
    if ((args[1] ?? 0) >= 60_000 && /[\\/]matrix-js-sdk[\\/]/.test(new Error().stack ?? '')) timer.unref();
    return timer;
  }, setTimeoutAsIs) as typeof setTimeout;
}

/**
 * A matrix-js-sdk logger that keeps the SDK's warnings and errors in `sink` (for a test's report)
 * instead of printing them; with `verbose`, it prints every level too.
 */
export function recordingLogger(
  who: string,
  sink: { level: string; line: string }[],
  verbose: boolean,
  prefix = '',
): Logger {
  const name = prefix ? `${who} [${prefix}]` : who;
  const text = (m: unknown) =>
    m instanceof Error ? m.message : typeof m === 'string' ? m : JSON.stringify(m);
  const keep =
    (level: string) =>
    (...msg: unknown[]) => {
      const line = `${name} ${level}: ${msg.map(text).join(' ')}`;
      sink.push({ level, line });
      if (verbose) console.error(line);
    };
  const quiet = (...msg: unknown[]) => {
    if (verbose) console.error(`${name}:`, ...msg);
  };
  return {
    trace: quiet,
    debug: quiet,
    info: quiet,
    warn: keep('warn'),
    error: keep('error'),
    getChild: (ns: string) => recordingLogger(who, sink, verbose, prefix ? `${prefix}:${ns}` : ns),
  };
}
