/**
 * Matrix canonical JSON (appendices: Signing JSON > Canonical JSON).
 *
 * Why not the `json-canonicalize` package (RFC 8785, JCS)? Matrix's encoding is a different
 * canonical form, and signatures and event IDs only agree across servers if every byte agrees:
 * - JCS sorts object keys by UTF-16 code units; Matrix sorts them by Unicode code point. The two
 *   orders disagree when one key has a character outside the BMP (a surrogate pair, 0xD800-0xDFFF)
 *   where the other has one in U+E000..U+FFFF.
 * - JCS serialises any finite number (1.5, 1e300, 2**53); Matrix allows only integers in
 *   [-(2**53)+1, 2**53-1] and requires the encoder to refuse anything else.
 * - JCS has no notion of lone surrogates; Matrix output must be valid UTF-8, so they are refused.
 * The test file shows each of these differences on a concrete value.
 */

/** Raised when a value cannot be encoded as Matrix canonical JSON. `path` locates the bad value. */
export class CanonicalJsonError extends Error {
  override readonly name = 'CanonicalJsonError';

  constructor(
    message: string,
    readonly path: string,
  ) {
    super(`${message} at ${path}`);
  }
}

/** In a `u` regex a surrogate class matches only unpaired surrogates, which UTF-8 cannot encode. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

const encoder = new TextEncoder();

/**
 * Encodes `value` as Matrix canonical JSON: keys sorted by code point, no insignificant
 * whitespace, integers only, minimal string escapes.
 * Takes `unknown` so that typed interfaces (such as `Pdu`) can be passed; every value is checked
 * at run time. Throws {@link CanonicalJsonError} for anything outside the Matrix JSON model.
 */
export function canonicalJson(value: unknown): string {
  return encodeValue(value, '$', new Set());
}

/** The UTF-8 bytes of {@link canonicalJson}: what Matrix signs and hashes. */
export function canonicalJsonBytes(value: unknown): Uint8Array {
  return encoder.encode(canonicalJson(value));
}

/**
 * Orders two strings by Unicode code point, the order canonical JSON requires for object keys.
 *
 * JavaScript's `<` compares UTF-16 code units, which agrees with code point order except when the
 * first difference is a surrogate (part of a character >= U+10000) against a unit in
 * U+E000..U+FFFF: the surrogate is numerically smaller but its character is larger. Shifting
 * surrogates above U+FFFF and U+E000..U+FFFF down by 0x800 restores code point order.
 */
export function compareCodePoints(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function codePointRank(unit: number): number {
  if (unit >= 0xe000) return unit - 0x800;
  if (unit >= 0xd800) return unit + 0x2000;
  return unit;
}

function encodeValue(value: unknown, path: string, ancestors: Set<object>): string {
  switch (typeof value) {
    case 'string':
      return encodeString(value, path);
    case 'number':
      return encodeNumber(value, path);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      if (value === null) return 'null';
      return encodeContainer(value, path, ancestors);
    default:
      throw new CanonicalJsonError(`${typeof value} is not a JSON value`, path);
  }
}

/**
 * Numbers must be integers within ±(2**53 - 1), written without exponent or fraction.
 * `-0` is accepted and written as `0`: the appendix's own example turns `-0` into `0`, and
 * `String(-0)` is `"0"`, so no `-0` can appear in the output.
 */
function encodeNumber(value: number, path: string): string {
  if (!Number.isSafeInteger(value)) {
    throw new CanonicalJsonError(`${value} is not an integer in [-(2**53)+1, 2**53-1]`, path);
  }
  return String(value);
}

/**
 * Strings: the appendix grammar escapes exactly `"`, `\`, and the C0 controls (U+0000..U+001F),
 * using \b \t \n \f \r where they exist and lowercase `\u00XX` otherwise; everything else,
 * U+007F and non-ASCII included, is written as itself. That is precisely what JSON.stringify does
 * for well-formed strings; the only case it handles differently is a lone surrogate (it emits
 * `\udXXX`), which has no UTF-8 encoding and so is refused here.
 */
function encodeString(value: string, path: string): string {
  if (LONE_SURROGATE.test(value)) {
    throw new CanonicalJsonError('string contains an unpaired surrogate', path);
  }
  return JSON.stringify(value);
}

function encodeContainer(value: object, path: string, ancestors: Set<object>): string {
  if (ancestors.has(value)) throw new CanonicalJsonError('circular reference', path);
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return encodeArray(value, path, ancestors);
    if (!isPlainObject(value)) {
      throw new CanonicalJsonError(`${value.constructor?.name ?? 'object'} is not a plain object`, path);
    }
    return encodeObject(value as Record<string, unknown>, path, ancestors);
  } finally {
    ancestors.delete(value);
  }
}

function encodeArray(value: readonly unknown[], path: string, ancestors: Set<object>): string {
  const parts: string[] = [];
  // An index loop (not map) so that holes in sparse arrays are seen, as undefined, and refused.
  for (let i = 0; i < value.length; i++) {
    parts.push(encodeValue(value[i], `${path}[${i}]`, ancestors));
  }
  return `[${parts.join(',')}]`;
}

function encodeObject(value: Record<string, unknown>, path: string, ancestors: Set<object>): string {
  const keys = Object.keys(value).sort(compareCodePoints);
  const parts: string[] = [];
  for (const key of keys) {
    const childPath = `${path}.${key}`;
    parts.push(`${encodeString(key, childPath)}:${encodeValue(value[key], childPath, ancestors)}`);
  }
  return `{${parts.join(',')}}`;
}

/** Only objects made by `{}`, JSON.parse or Object.create(null): a Date or a Map is not JSON. */
function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
