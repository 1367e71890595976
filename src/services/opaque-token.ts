import { errors } from '../errors.ts';

/**
 * Pagination tokens that only this server reads: a JSON object in base64url. Decoding gives
 * the object's fields to check, or 400 M_INVALID_PARAM (with `message`) for anything else.
 */
export function encodeOpaqueToken(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

export function decodeOpaqueToken(raw: string, message: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw errors.invalidParam(message);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw errors.invalidParam(message);
  return value as Record<string, unknown>;
}
