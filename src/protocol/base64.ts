/**
 * Matrix's base64 flavours (appendices: Unpadded Base64, URL-safe unpadded Base64).
 *
 * Matrix writes RFC 4648 base64 without `=` padding: the standard alphabet for keys, signatures
 * and hashes, and the URL-safe alphabet (`-` and `_` for 62 and 63) for event IDs from room
 * version 4 on. Decoders should accept input with or without padding, so ours do, but they are
 * otherwise strict: a character outside the alphabet, misplaced or excess padding, or an
 * impossible length (4n + 1 characters) is an error rather than being skipped as Node's own
 * decoder would.
 */

/** Raised when a string is not valid base64 of the expected alphabet. */
export class Base64Error extends Error {
  override readonly name = 'Base64Error';
}

const STANDARD = /^[A-Za-z0-9+/]*={0,2}$/;
const URL_SAFE = /^[A-Za-z0-9_-]*={0,2}$/;

/** Standard alphabet, no padding: keys, signatures, content hashes. */
export function encodeBase64(bytes: Uint8Array): string {
  return toBuffer(bytes).toString('base64').replace(/=+$/, '');
}

/** URL-safe alphabet, no padding: event IDs (v4+) and room IDs (v12). */
export function encodeBase64Url(bytes: Uint8Array): string {
  return toBuffer(bytes).toString('base64url');
}

/** Decodes standard base64, padded or not. Throws {@link Base64Error} on malformed input. */
export function decodeBase64(text: string): Uint8Array {
  return decode(text, STANDARD, 'base64');
}

/** Decodes URL-safe base64, padded or not. Throws {@link Base64Error} on malformed input. */
export function decodeBase64Url(text: string): Uint8Array {
  return decode(text, URL_SAFE, 'base64url');
}

function decode(text: string, alphabet: RegExp, encoding: 'base64' | 'base64url'): Uint8Array {
  if (!alphabet.test(text)) throw new Base64Error('invalid base64 character or padding');
  const body = text.replace(/=+$/, '');
  const padding = text.length - body.length;
  // 4n+1 characters cannot come from any byte string: one character carries only 6 bits.
  if (body.length % 4 === 1) throw new Base64Error('invalid base64 length');
  // When padding is present it must complete the last group of four, no more and no less.
  if (padding > 0 && (body.length + padding) % 4 !== 0) throw new Base64Error('invalid base64 padding');
  const buffer = Buffer.from(body, encoding);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
