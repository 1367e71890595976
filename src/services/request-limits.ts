/**
 * Bounds on the work one request may ask for, so that no request can hold the event loop (or,
 * with the embedded database, which runs in the server's own thread, the database) for long.
 * Each is documented in spec/limits.md; a request over one gets 413 M_TOO_LARGE naming it, before
 * any work is done. Work under the bounds is done in batches of BATCH_SIZE rows per statement,
 * and CPU-bound checks (signatures) yield to the event loop every YIELD_EVERY items.
 */
export const LIMITS = {
  /** Users named in one POST /keys/query. */
  keysQueryUsers: 1000,
  /** Device IDs named in one POST /keys/query, over all users. */
  keysQueryDevices: 10_000,
  /** Devices named in one POST /keys/claim, over all users. */
  keysClaimDevices: 1000,
  /** One-time keys plus fallback keys in one POST /keys/upload (each carries a signature to check). */
  keysUploadKeys: 100,
  /** Signed objects in one POST /keys/signatures/upload. */
  signatureUploads: 100,
  /** Users named in one PUT /sendToDevice. */
  toDeviceUsers: 1000,
  /** Messages one PUT /sendToDevice stores, once `*` is expanded to every device of a user. */
  toDeviceMessages: 10_000,
  /** Entries in each list of a filter (types, senders, rooms and their not_ forms). */
  filterListEntries: 1000,
  /** Bytes of a filter as JSON, uploaded or inline. */
  filterBytes: 65_536,
  /** Bytes of an event type, state key, room ID or user ID (the spec's size limits). */
  identifierBytes: 255,
} as const;

/**
 * Rows per statement when a request's work is split into batches: about 5-15 ms of embedded
 * database work each on a busy 2-core machine (200 rows took 25-45 ms).
 */
export const BATCH_SIZE = 50;

/** How many signatures are checked before the event loop gets a turn. */
export const YIELD_EVERY = 16;

/** Lets other callbacks (other requests) run before continuing. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Runs `fn` on consecutive batches of `items`, letting other requests run between two batches.
 * The embedded database runs in this thread and its promises settle as microtasks, so awaiting
 * one statement after another would never let the event loop serve anything else.
 */
export async function inBatches<T>(
  items: readonly T[],
  fn: (batch: T[]) => Promise<void>,
  size = BATCH_SIZE,
): Promise<void> {
  for (let i = 0; i < items.length; i += size) {
    if (i > 0) await yieldToEventLoop();
    await fn(items.slice(i, i + size));
  }
}
