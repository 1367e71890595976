import { errors } from '../errors.ts';

/**
 * Request bodies are parsed here rather than by fastify's JSON parser so that every failure is a
 * Matrix error and the bytes the body arrived with stay available (request.rawBody) for anything
 * whose hash or signature depends on them.
 */
export const MAX_JSON_DEPTH = 64;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses a body: empty means undefined; otherwise strict UTF-8 JSON with integers in range. */
export function parseJsonBody(raw: Buffer): unknown {
  if (raw.length === 0) return undefined;
  let text: string;
  try {
    text = utf8.decode(raw);
  } catch {
    throw errors.notJson('Body is not valid UTF-8');
  }
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw errors.notJson('Body is not valid JSON');
  }
  checkJsonLimits(value);
  return value;
}

const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether a string holds U+0000 or a surrogate that is not half of a pair. */
const unstorable = (s: string) => s.includes('\u0000') || UNPAIRED_SURROGATE.test(s);

/**
 * Walks a parsed value without recursion and refuses what Matrix cannot hold faithfully: nesting
 * deeper than MAX_JSON_DEPTH; integers outside ±(2^53-1), whose value JSON.parse has already
 * lost; and strings or keys holding U+0000 or an unpaired surrogate (escaped as \u0000 or
 * \ud800), which are not Unicode text and which PostgreSQL cannot store in text or jsonb.
 * Fractional numbers are left to the schema of each route (some account data carries them).
 */
export function checkJsonLimits(value: unknown): void {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'number') {
      if (!Number.isFinite(v) || (Number.isInteger(v) && !Number.isSafeInteger(v))) {
        throw errors.badJson('Integers must lie within ±(2^53-1)');
      }
    } else if (typeof v === 'string') {
      if (unstorable(v)) throw errors.badJson('Strings may not hold U+0000 or unpaired surrogates');
    } else if (typeof v === 'object' && v !== null) {
      if (depth >= MAX_JSON_DEPTH) throw errors.badJson(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
      if (Array.isArray(v)) {
        for (const child of v) stack.push([child, depth + 1]);
      } else {
        for (const [key, child] of Object.entries(v)) {
          if (unstorable(key)) throw errors.badJson('Keys may not hold U+0000 or unpaired surrogates');
          stack.push([child, depth + 1]);
        }
      }
    }
  }
}
